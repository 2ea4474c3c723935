/** Unauthenticated operational endpoints: /healthz and /metrics (the API reference at /docs: api-reference/openapi.ts). */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Database } from '../db/database';
import type { GaugeSamples, Metrics } from '../services/metrics';

export interface SystemRoutesOptions {
  db: Database;
  metrics: Metrics;
  gauges: () => GaugeSamples | Promise<GaugeSamples>;
  version: string;
}

export const systemRoutes: FastifyPluginAsyncZod<SystemRoutesOptions> = async (app, opts) => {
  app.get('/healthz', {
    schema: {
      summary: 'Liveness and database reachability',
      tags: ['system'],
      response: { 200: z.object({ status: z.literal('ok'), version: z.string() }) },
    },
  }, async () => {
    await opts.db.ping();
    return { status: 'ok' as const, version: opts.version };
  });

  app.get('/metrics', {
    schema: { summary: 'Prometheus metrics (text format 0.0.4): process, HTTP, operations, snapshots, executors', tags: ['system'] },
  }, async (_request, reply) => {
    const text = await opts.metrics.render(opts.gauges());
    return reply.type(opts.metrics.contentType).send(text);
  });
};
