/** /v1/namespaces/{ns}/sandboxes */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  CreateSandboxBodySchema,
  CreateSandboxResponseSchema,
  ExecBodySchema,
  ExecResultSchema,
  IdParamsSchema,
  NsParamsSchema,
  pageOf,
  SandboxListItemSchema,
  SandboxListQuerySchema,
  SandboxSchema,
} from '@cryo/snapshot';
import type { SandboxService } from '../services/sandbox-service';
import type { SnapshotService } from '../services/snapshot-service';
import { toSandboxView } from '../store/sandboxes';
import { errorReplies } from './schemas';

export interface SandboxRoutesOptions {
  sandboxes: SandboxService;
  snapshots: SnapshotService;
}

export const sandboxRoutes: FastifyPluginAsyncZod<SandboxRoutesOptions> = async (app, { sandboxes, snapshots }) => {
  app.post('/sandboxes', {
    schema: {
      summary: 'Create a sandbox from an image, or restore a snapshot (snapshot_id; then image is not used)',
      tags: ['sandboxes'],
      params: NsParamsSchema,
      body: CreateSandboxBodySchema,
      response: { 202: CreateSandboxResponseSchema, ...errorReplies(400, 401, 404, 409, 410, 422, 503) },
    },
  }, async (request, reply) => {
    const { ns } = request.params;
    const body = request.body;
    const row = body.snapshot_id === undefined
      ? await sandboxes.create(ns, body)
      : (await snapshots.restore(ns, body.snapshot_id, {
          executor_id: body.executor_id,
          command: body.command,
          env: body.env,
          labels: body.labels,
          timeout_secs: body.timeout_secs,
        }, body.resources)).sandbox;
    const view = toSandboxView(row);
    return reply.code(202).send({
      sandbox_id: view.sandbox_id,
      status: view.status,
      ...(view.restored_from_snapshot === null ? {} : { restored_from_snapshot: view.restored_from_snapshot }),
    });
  });

  app.get('/sandboxes', {
    schema: {
      summary: 'List sandboxes, newest first (filter with status=running, label=k=v); items leave out command',
      tags: ['sandboxes'],
      params: NsParamsSchema,
      querystring: SandboxListQuerySchema,
      response: { 200: pageOf(SandboxListItemSchema), ...errorReplies(400, 401) },
    },
  }, async (request) => sandboxes.list(request.params.ns, request.query));

  app.get('/sandboxes/:id', {
    schema: {
      summary: 'Get a sandbox',
      tags: ['sandboxes'],
      params: IdParamsSchema,
      response: { 200: SandboxSchema, ...errorReplies(400, 401, 404) },
    },
  }, async (request) => sandboxes.get(request.params.ns, request.params.id));

  app.delete('/sandboxes/:id', {
    schema: {
      summary: 'End a sandbox (idempotent)',
      tags: ['sandboxes'],
      params: IdParamsSchema,
      response: { 200: SandboxSchema, ...errorReplies(400, 401, 404) },
    },
  }, async (request) => sandboxes.delete(request.params.ns, request.params.id));

  app.post('/sandboxes/:id/exec', {
    schema: {
      summary: 'Run a command in a running sandbox and wait for it',
      tags: ['sandboxes'],
      params: IdParamsSchema,
      body: ExecBodySchema,
      response: { 200: ExecResultSchema, ...errorReplies(400, 401, 404, 409, 503, 504) },
    },
  }, async (request) => sandboxes.exec(request.params.ns, request.params.id, request.body));
};
