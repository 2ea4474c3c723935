/** /internal/v1: the executor protocol (heartbeat, long-poll for operations, progress, results). */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  ExecutorParamsSchema,
  HeartbeatBodySchema,
  HeartbeatResponseSchema,
  LongPollQuerySchema,
  OperationsResponseSchema,
  OpParamsSchema,
  OpResultBodySchema,
  ProgressBodySchema,
  CryoError,
} from '@cryo/snapshot';
import type { ExecutorStore } from '../store/executors';
import type { ExecutorService } from '../services/executor-service';
import type { OperationOutcomes } from '../services/operation-outcomes';
import type { OperationQueue } from '../services/operation-queue';
import { AckSchema, errorReplies } from './schemas';

export interface InternalRoutesOptions {
  executorService: ExecutorService;
  executors: ExecutorStore;
  queue: OperationQueue;
  outcomes: OperationOutcomes;
}

export const internalRoutes: FastifyPluginAsyncZod<InternalRoutesOptions> = async (app, opts) => {
  const { executorService, executors, queue, outcomes } = opts;

  app.post('/executors/:id/heartbeat', {
    schema: {
      summary: "An executor's full observed state; answers with the sandboxes it should keep",
      tags: ['internal'],
      params: ExecutorParamsSchema,
      body: HeartbeatBodySchema,
      response: { 200: HeartbeatResponseSchema, ...errorReplies(400, 401) },
    },
  }, async (request) => executorService.heartbeat(request.params.id, request.body));

  app.get('/executors/:id/operations', {
    schema: {
      summary: 'Long poll: leases the operations queued for this executor, waiting up to wait_ms for some',
      tags: ['internal'],
      params: ExecutorParamsSchema,
      querystring: LongPollQuerySchema,
      response: { 200: OperationsResponseSchema, ...errorReplies(400, 401, 404, 409) },
    },
  }, async (request, reply) => {
    const { id } = request.params;
    const executor = await executors.get(id);
    if (executor === undefined) {
      throw new CryoError('NOT_FOUND', `executor ${id} is not registered; send a heartbeat first`);
    }
    if (executor.state === 'lost') {
      throw new CryoError('CONFLICT', `executor ${id} was declared lost; send a heartbeat to rejoin`);
    }
    const aborted = new AbortController();
    reply.raw.once('close', () => aborted.abort());
    const operations = await queue.poll(id, request.query.wait_ms, aborted.signal);
    return { operations };
  });

  app.post('/operations/:op/progress', {
    schema: {
      summary: 'Progress of a snapshot (pause, commit, push) or of a restore (pull, fetch-index, mount, start); extends the operation lease',
      tags: ['internal'],
      params: OpParamsSchema,
      body: ProgressBodySchema,
      response: { 200: AckSchema, ...errorReplies(400, 401) },
    },
  }, async (request) => outcomes.progress(request.params.op, request.body));

  app.post('/operations/:op/result', {
    schema: {
      summary: 'The result of an operation; ignored (ignored: true) when the operation is no longer current',
      tags: ['internal'],
      params: OpParamsSchema,
      body: OpResultBodySchema,
      response: { 200: AckSchema, ...errorReplies(400, 401) },
    },
  }, async (request) => outcomes.result(request.params.op, request.body));
};
