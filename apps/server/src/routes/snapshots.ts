/** /v1/namespaces/{ns}/snapshots and /v1/namespaces/{ns}/sandboxes/{id}/snapshots */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  CreateSandboxResponseSchema,
  CreateSnapshotBodySchema,
  CreateSnapshotResponseSchema,
  IdParamsSchema,
  NsParamsSchema,
  pageOf,
  PatchSnapshotBodySchema,
  RestoreBodySchema,
  SnapshotListQuerySchema,
  SnapshotSchema,
} from '@cryo/snapshot';
import type { SnapshotService } from '../services/snapshot-service';
import { errorReplies, optionalBody } from './schemas';

export interface SnapshotRoutesOptions {
  snapshots: SnapshotService;
}

export const snapshotRoutes: FastifyPluginAsyncZod<SnapshotRoutesOptions> = async (app, { snapshots }) => {
  app.post('/sandboxes/:id/snapshots', {
    schema: {
      summary: 'Snapshot a running sandbox; it keeps running',
      tags: ['snapshots'],
      params: IdParamsSchema,
      body: optionalBody(CreateSnapshotBodySchema),
      response: { 202: CreateSnapshotResponseSchema, ...errorReplies(400, 401, 404, 409, 422, 429) },
    },
  }, async (request, reply) => {
    const row = await snapshots.create(request.params.ns, request.params.id, request.body);
    return reply.code(202).send({ snapshot_id: row.id, status: row.status });
  });

  app.get('/sandboxes/:id/snapshots', {
    schema: {
      summary: "List a sandbox's snapshots, newest first",
      tags: ['snapshots'],
      params: IdParamsSchema,
      querystring: SnapshotListQuerySchema,
      response: { 200: pageOf(SnapshotSchema), ...errorReplies(400, 401, 404) },
    },
  }, async (request) => snapshots.list(request.params.ns, request.query, request.params.id));

  app.get('/snapshots', {
    schema: {
      summary: 'List snapshots, newest first (filter with status=expired, label=k=v, tag=NAME)',
      tags: ['snapshots'],
      params: NsParamsSchema,
      querystring: SnapshotListQuerySchema,
      response: { 200: pageOf(SnapshotSchema), ...errorReplies(400, 401) },
    },
  }, async (request) => snapshots.list(request.params.ns, request.query));

  app.get('/snapshots/:id', {
    schema: {
      summary: 'Get a snapshot',
      tags: ['snapshots'],
      params: IdParamsSchema,
      response: { 200: SnapshotSchema, ...errorReplies(400, 401, 404) },
    },
  }, async (request) => snapshots.get(request.params.ns, request.params.id));

  app.patch('/snapshots/:id', {
    schema: {
      summary: 'Change the TTL; expires_at is recomputed from created_at (ttl_from last_use: from last_used_at)',
      tags: ['snapshots'],
      params: IdParamsSchema,
      body: PatchSnapshotBodySchema,
      response: { 200: SnapshotSchema, ...errorReplies(400, 401, 404, 409, 410, 422) },
    },
  }, async (request) => snapshots.setTtl(request.params.ns, request.params.id, request.body.ttl_secs));

  app.delete('/snapshots/:id', {
    schema: {
      summary: 'Delete a snapshot from the registry and every executor (202; becomes deleted)',
      tags: ['snapshots'],
      params: IdParamsSchema,
      response: { 202: SnapshotSchema, ...errorReplies(400, 401, 404) },
    },
  }, async (request, reply) => reply.code(202).send(await snapshots.delete(request.params.ns, request.params.id)));

  app.post('/snapshots/:id/restore', {
    schema: {
      summary: 'Start a new sandbox from an active snapshot (on_expired: base_image falls back to its base image)',
      tags: ['snapshots'],
      params: IdParamsSchema,
      body: optionalBody(RestoreBodySchema),
      response: { 202: CreateSandboxResponseSchema, ...errorReplies(400, 401, 404, 409, 410, 422, 503) },
    },
  }, async (request, reply) => {
    const { sandbox, fallback } = await snapshots.restore(request.params.ns, request.params.id, request.body);
    return reply.code(202).send({
      sandbox_id: sandbox.id,
      status: sandbox.status,
      restored_from_snapshot: fallback === null ? request.params.id : null,
      ...(fallback === null ? {} : { fallback }),
    });
  });
};
