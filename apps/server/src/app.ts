/**
 * The fastify instance: zod validation and serialization, OpenAPI from the same schemas (Swagger
 * UI at /docs), JSON errors (cryo's envelope for everything, router and malformed HTTP included),
 * strict JSON and query parsing (http/json-body.ts), body limits, event-loop turns for public
 * requests (http/turns.ts), bearer auth per prefix, request metrics, the route plugins and the
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
import { answerClientError, frameworkError, MAX_PARAM_LENGTH, registerErrorHandlers, sendError } from './http/errors';
import { parseJsonBody, parseQueryString, QUERY_ERROR, type ParsedQuery } from './http/json-body';
import { PublicRequestTurns } from './http/turns';
import { executorRoutes } from './routes/executors';
import { internalRoutes } from './routes/internal';
import { lifecycleRoutes } from './routes/lifecycle';
import { sandboxRoutes } from './routes/sandboxes';
import { snapshotRoutes } from './routes/snapshots';
import { systemRoutes } from './routes/system';
import { DEFAULT_UI_DIR, uiRoutes } from './routes/ui';
import type { ExecutorService } from './services/executor-service';
import type { ForkService } from './services/fork-service';
import type { GaugeSamples, Metrics } from './services/metrics';
import type { OperationOutcomes } from './services/operation-outcomes';
import type { OperationQueue } from './services/operation-queue';
import type { RollbackService } from './services/rollback-service';
import type { SandboxService } from './services/sandbox-service';
import type { SnapshotService } from './services/snapshot-service';
import type { ExecutorStore } from './store/executors';

export const SERVER_VERSION = '0.1.0';
/** Public request bodies: the largest valid one (command and env at 256 KiB each) fits twice. */
export const BODY_LIMIT = 1024 * 1024;
/** Executor protocol bodies: a result carries up to 4 MiB each of exec stdout and stderr. */
export const INTERNAL_BODY_LIMIT = 8 * 1024 * 1024;

export interface AppDeps {
  config: ServerConfig;
  logger: Logger;
  db: Database;
  sandboxService: SandboxService;
  snapshotService: SnapshotService;
  forkService: ForkService;
  rollbackService: RollbackService;
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
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH, querystringParser: parseQueryString },
    frameworkErrors: frameworkError,
    clientErrorHandler: (error, socket) => answerClientError(deps.logger, error, socket),
    // These three are answered below in cryo's envelope instead of by fastify or Node.
    return503OnClosing: false,
    http: { requireHostHeader: false },
  });
  // RFC 9110 lets a server ignore an expectation it does not know; Node would answer 417 itself.
  base.server.on('checkExpectation', (request, response) => base.server.emit('request', request, response));
  registerErrorHandlers(base);
  // JSON only: a text/plain body would reach the schemas as a string and be refused less clearly.
  base.removeContentTypeParser(['application/json', 'text/plain']);
  base.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(typeof body === 'string' ? Buffer.from(body, 'utf8') : body));
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)), undefined);
    }
  });
  base.addHook('onRoute', (route) => {
    if (route.url.startsWith('/internal/')) route.bodyLimit ??= INTERNAL_BODY_LIMIT;
  });
  const app = base.withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (closing) {
      reply.header('connection', 'close');
      return sendError(reply, request, new CryoError('UNAVAILABLE', 'the server is shutting down; retry shortly'));
    }
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      reply.header('connection', 'close');
      return sendError(reply, request, new CryoError('INVALID_REQUEST', 'headers: an HTTP/1.1 request needs a Host header'));
    }
    return undefined;
  });
  app.addHook('preValidation', async (request) => {
    const malformed = (request.query as ParsedQuery | undefined)?.[QUERY_ERROR];
    if (malformed !== undefined) throw malformed;
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
  const turns = new PublicRequestTurns();
  await app.register(async (v1) => {
    v1.addHook('onRequest', requireBearer(apiKeys, 'API key'));
    // One public request's validation and handler per event-loop turn; /internal never waits.
    v1.addHook('preValidation', () => turns.wait());
    await v1.register(executorRoutes, { executors: deps.executorService });
    await v1.register(
      async (ns) => {
        await ns.register(sandboxRoutes, { sandboxes: deps.sandboxService, snapshots: deps.snapshotService });
        await ns.register(snapshotRoutes, { snapshots: deps.snapshotService });
        await ns.register(lifecycleRoutes, { forks: deps.forkService, rollbacks: deps.rollbackService });
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
