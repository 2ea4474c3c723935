/**
 * The fastify instance: zod validation and serialization, OpenAPI from the same schemas (Swagger
 * UI at /docs), JSON errors, bearer auth per prefix, request metrics, the route plugins and the
 * dashboard at /ui.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type RawServerDefault } from 'fastify';
import {
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { CryoError, newRequestId } from '@cryo/snapshot';
import { registerApiReference } from './api-reference/openapi';
import type { ServerConfig } from './config';
import type { Database } from './db/database';
import { BearerKeys, requireBearer } from './http/auth';
import { registerErrorHandlers } from './http/errors';
import { executorRoutes } from './routes/executors';
import { internalRoutes } from './routes/internal';
import { sandboxRoutes } from './routes/sandboxes';
import { snapshotRoutes } from './routes/snapshots';
import { systemRoutes } from './routes/system';
import { DEFAULT_UI_DIR, uiRoutes } from './routes/ui';
import type { ExecutorService } from './services/executor-service';
import type { GaugeSamples, Metrics } from './services/metrics';
import type { OperationOutcomes } from './services/operation-outcomes';
import type { OperationQueue } from './services/operation-queue';
import type { SandboxService } from './services/sandbox-service';
import type { SnapshotService } from './services/snapshot-service';
import type { ExecutorStore } from './store/executors';

export const SERVER_VERSION = '0.1.0';
const BODY_LIMIT = 8 * 1024 * 1024;

export interface AppDeps {
  config: ServerConfig;
  logger: Logger;
  db: Database;
  sandboxService: SandboxService;
  snapshotService: SnapshotService;
  executorService: ExecutorService;
  executors: ExecutorStore;
  queue: OperationQueue;
  outcomes: OperationOutcomes;
  metrics: Metrics;
  gauges: () => GaugeSamples | Promise<GaugeSamples>;
  /** The built dashboard served at /ui (default: apps/ui/dist). */
  uiDir?: string;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const base = Fastify<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger>({
    loggerInstance: deps.logger,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => newRequestId(),
    requestIdHeader: false,
    bodyLimit: BODY_LIMIT,
  });
  registerErrorHandlers(base);
  acceptEmptyJsonBodies(base);
  const app = base.withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    deps.metrics.observeRequest(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
    const internal = route.startsWith('/internal/');
    const entry = { method: request.method, route, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (internal) request.log.debug(entry, 'request');
    else request.log.info(entry, 'request');
  });

  await registerApiReference(app, SERVER_VERSION);
  await app.register(uiRoutes, { dir: deps.uiDir ?? DEFAULT_UI_DIR });

  const apiKeys = new BearerKeys(deps.config.auth.api_keys);
  const executorToken = new BearerKeys([deps.config.auth.executor_token]);

  await app.register(systemRoutes, { db: deps.db, metrics: deps.metrics, gauges: deps.gauges, version: SERVER_VERSION });
  await app.register(async (v1) => {
    v1.addHook('onRequest', requireBearer(apiKeys, 'API key'));
    await v1.register(executorRoutes, { executors: deps.executorService });
    await v1.register(
      async (ns) => {
        await ns.register(sandboxRoutes, { sandboxes: deps.sandboxService, snapshots: deps.snapshotService });
        await ns.register(snapshotRoutes, { snapshots: deps.snapshotService });
      },
      { prefix: '/namespaces/:ns' },
    );
  }, { prefix: '/v1' });
  await app.register(async (internal) => {
    internal.addHook('onRequest', requireBearer(executorToken, 'executor token'));
    await internal.register(internalRoutes, {
      executorService: deps.executorService,
      executors: deps.executors,
      queue: deps.queue,
      outcomes: deps.outcomes,
    });
  }, { prefix: '/internal/v1' });

  await app.ready();
  return base;
}

/** `{}` and an empty body mean the same to a route whose fields are all optional. */
function acceptEmptyJsonBodies(app: FastifyInstance): void {
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(new CryoError('INVALID_REQUEST', `body: not valid JSON (${err instanceof Error ? err.message : String(err)})`), undefined);
    }
  });
}
