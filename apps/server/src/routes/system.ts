/** Unauthenticated operational endpoints: /healthz, /metrics, /docs. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Database } from '../db/database';
import { statement } from '../db/statements';
import type { GaugeFamily, Metrics } from '../services/metrics';

export interface SystemRoutesOptions {
  db: Database;
  metrics: Metrics;
  gauges: () => GaugeFamily[];
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
    statement(opts.db, 'SELECT 1').get();
    return { status: 'ok' as const, version: opts.version };
  });

  app.get('/metrics', {
    schema: { summary: 'Prometheus metrics (text format)', tags: ['system'] },
  }, async (_request, reply) =>
    reply.type('text/plain; version=0.0.4; charset=utf-8').send(opts.metrics.render(opts.gauges())),
  );

  app.get('/docs', {
    schema: { summary: 'This OpenAPI document', tags: ['system'] },
  }, async () => app.swagger());
};
