/**
 * The internal server <-> executor protocol (/internal/v1). The executor dials the server:
 * heartbeats carry its full observed state, operations are leased through a long poll.
 */
import { z } from 'zod';
import { CommandSchema, EnvSchema, ExecutorIdSchema, ProgressSchema, ResourcesSchema, RestoreModeSchema, TimingsSchema } from './api';

export const ContainerStateSchema = z.enum(['created', 'running', 'paused', 'exited', 'missing']);
export type ContainerState = z.infer<typeof ContainerStateSchema>;

export const ObservedSandboxSchema = z.object({
  sandbox_id: z.string(),
  container_id: z.string().nullable(),
  state: ContainerStateSchema,
  exit_code: z.number().int().nullable(),
  runtime: z.enum(['docker', 'runc-lazy']),
});
export type ObservedSandbox = z.infer<typeof ObservedSandboxSchema>;

export const CachedImageSchema = z.object({
  ref: z.string(),
  snapshot_id: z.string().nullable(),
  size_bytes: z.number().nullable(),
});

export const HeartbeatBodySchema = z.object({
  host: z.string(),
  version: z.string(),
  labels: z.record(z.string(), z.string()),
  capacity: z.object({ cpus: z.number(), memory_mb: z.number(), max_sandboxes: z.number().int() }),
  capabilities: z.object({ lazy: z.boolean(), lazy_unavailable_reason: z.string().nullable() }),
  registry: z.object({ url: z.string(), repository: z.string() }).nullable(),
  sandboxes: z.array(ObservedSandboxSchema),
  images: z.array(CachedImageSchema),
});
export type HeartbeatBody = z.infer<typeof HeartbeatBodySchema>;

/** What the server wants to exist on this executor; anything else labelled as cryo's is removed. */
export const HeartbeatResponseSchema = z.object({
  executor_id: z.string(),
  heartbeat_interval_ms: z.number().int(),
  desired_sandboxes: z.array(z.string()),
});
export type HeartbeatResponse = z.infer<typeof HeartbeatResponseSchema>;

const base = { op_id: z.string(), attempt: z.number().int(), lease_expires_at: z.string() };

export const CreateSandboxOpSchema = z.object({
  ...base,
  kind: z.literal('create_sandbox'),
  payload: z.object({
    sandbox_id: z.string(),
    namespace: z.string(),
    image: z.string(),
    command: CommandSchema.nullable(),
    env: EnvSchema,
    labels: z.record(z.string(), z.string()),
    resources: ResourcesSchema,
    restore: z.object({
      snapshot_id: z.string(),
      image_ref: z.string(),
      digest: z.string().nullable(),
      clip_index_ref: z.string().nullable(),
      mode: RestoreModeSchema,
    }).nullable(),
  }),
});

export const DeleteSandboxOpSchema = z.object({
  ...base,
  kind: z.literal('delete_sandbox'),
  payload: z.object({ sandbox_id: z.string() }),
});

export const ExecOpSchema = z.object({
  ...base,
  kind: z.literal('exec'),
  payload: z.object({ sandbox_id: z.string(), command: CommandSchema, timeout_secs: z.number().int().positive() }),
});

export const SnapshotOpSchema = z.object({
  ...base,
  kind: z.literal('snapshot'),
  payload: z.object({
    sandbox_id: z.string(),
    snapshot_id: z.string(),
    namespace: z.string(),
    tag: z.string(),
    base_image: z.string(),
  }),
});

export const DeleteImageOpSchema = z.object({
  ...base,
  kind: z.literal('delete_image'),
  payload: z.object({ snapshot_id: z.string(), image_refs: z.array(z.string()) }),
});

/** Build the clip index of a pushed snapshot image and push it next to the image (lazy restore). */
export const BuildIndexOpSchema = z.object({
  ...base,
  kind: z.literal('build_index'),
  payload: z.object({ snapshot_id: z.string(), image_ref: z.string(), digest: z.string() }),
});

export const OperationSchema = z.discriminatedUnion('kind', [
  CreateSandboxOpSchema,
  DeleteSandboxOpSchema,
  ExecOpSchema,
  SnapshotOpSchema,
  DeleteImageOpSchema,
  BuildIndexOpSchema,
]);
export type Operation = z.infer<typeof OperationSchema>;
export type OperationKind = Operation['kind'];
export type OperationOf<K extends OperationKind> = Extract<Operation, { kind: K }>;

export const OperationsResponseSchema = z.object({ operations: z.array(OperationSchema) });

export const ProgressBodySchema = ProgressSchema;

export const CreateSandboxResultSchema = z.object({ container_id: z.string(), runtime: z.enum(['docker', 'runc-lazy']) });
export const ExecOpResultSchema = z.object({ exit_code: z.number().int(), stdout: z.string(), stderr: z.string() });
export const SnapshotResultSchema = z.object({
  image_ref: z.string(),
  digest: z.string().nullable(),
  size_bytes: z.number().nullable(),
  timings: TimingsSchema,
  clip_index_ref: z.string().nullable(),
  clip_error: z.string().nullable(),
});
export type SnapshotResult = z.infer<typeof SnapshotResultSchema>;
export const BuildIndexResultSchema = z.object({
  clip_index_ref: z.string(),
  index_ms: z.number(),
  index_size_bytes: z.number().int(),
  image_size_bytes: z.number().int(),
});
export type BuildIndexResult = z.infer<typeof BuildIndexResultSchema>;
export const DeleteImageResultSchema = z.object({ removed: z.array(z.string()) });
export const DeleteSandboxResultSchema = z.object({ removed: z.boolean() });

export const OpResultBodySchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), result: z.unknown() }),
  z.object({ ok: z.literal(false), error: z.object({ code: z.string(), message: z.string() }) }),
]);
export type OpResultBody = z.infer<typeof OpResultBodySchema>;

export const ExecutorParamsSchema = z.object({ id: ExecutorIdSchema });
export const OpParamsSchema = z.object({ op: z.string().min(1).max(64) });
export const LongPollQuerySchema = z.object({ wait_ms: z.coerce.number().int().min(0).max(60_000).default(20_000) });
