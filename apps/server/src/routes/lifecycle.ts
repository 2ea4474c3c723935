/**
 * Issue 12 under /v1/namespaces/{ns}: fork a snapshot into N sandboxes, snapshot-and-fork a
 * running sandbox, and roll a sandbox back in place.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  ForkResponseSchema,
  ForkSandboxBodySchema,
  ForkSnapshotBodySchema,
  IdParamsSchema,
  RollbackBodySchema,
  RollbackResponseSchema,
} from '@cryo/snapshot';
import type { ForkService } from '../services/fork-service';
import type { RollbackService } from '../services/rollback-service';
import { errorReplies } from './schemas';

export interface LifecycleRoutesOptions {
  forks: ForkService;
  rollbacks: RollbackService;
}

export const lifecycleRoutes: FastifyPluginAsyncZod<LifecycleRoutesOptions> = async (app, { forks, rollbacks }) => {
  app.post('/snapshots/:id/fork', {
    schema: {
      summary: 'Start count sandboxes (1-100) from an active snapshot, spread over executors; each runs or fails on its own',
      tags: ['snapshots'],
      params: IdParamsSchema,
      body: ForkSnapshotBodySchema,
      response: { 202: ForkResponseSchema, ...errorReplies(400, 401, 404, 409, 410, 422, 503) },
    },
  }, async (request, reply) => reply.code(202).send(await forks.forkSnapshot(request.params.ns, request.params.id, request.body)));

  app.post('/sandboxes/:id/fork', {
    schema: {
      summary: 'Snapshot a running sandbox and fork it into count sandboxes in one call (they start once the snapshot is active)',
      tags: ['sandboxes'],
      params: IdParamsSchema,
      body: ForkSandboxBodySchema,
      response: { 202: ForkResponseSchema, ...errorReplies(400, 401, 404, 409, 422, 429, 503) },
    },
  }, async (request, reply) => reply.code(202).send(await forks.forkSandbox(request.params.ns, request.params.id, request.body)));

  app.post('/sandboxes/:id/rollback', {
    schema: {
      summary: 'Roll a running sandbox back in place to an active snapshot: same id, labels and timeout; running -> restoring -> running',
      tags: ['sandboxes'],
      params: IdParamsSchema,
      body: RollbackBodySchema,
      response: { 202: RollbackResponseSchema, ...errorReplies(400, 401, 404, 409, 410, 422, 503) },
    },
  }, async (request, reply) => reply.code(202).send(await rollbacks.rollback(request.params.ns, request.params.id, request.body)));
};
