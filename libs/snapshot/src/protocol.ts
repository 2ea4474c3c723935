/**
 * The internal server <-> executor protocol (/internal/v1). The executor dials the server:
 * heartbeats carry its full observed state, operations are leased through a long poll.
 *
 * Everything an executor reports is input like any other: ids, refs and digests have their
 * grammar, counts and sizes are bounded integers, and every operation kind declares its payload
 * and its result side by side (`OPERATIONS`), so a result is parsed once, with its kind's schema.
 */
import { z } from 'zod';
import { DIGEST_PATTERN } from '@cryo/oci/reference';
import {
  CapabilitiesSchema,
  CapacitySchema,
  CommandSchema,
  EnvSchema,
  ExecResultSchema,
  ExecutorIdSchema,
  LabelsSchema,
  ProgressSchema,
  ResourcesSchema,
  RestoreModeSchema,
  SnapshotCaptureSchema,
  ExcludedMountSchema,
  TimingsSchema,
} from './api';

/** The ways an executor runs sandboxes (apps/executor/src/runtime/*). */
export const RuntimeNameSchema = z.enum(['docker', 'runc-lazy']);
export type RuntimeName = z.infer<typeof RuntimeNameSchema>;

/** An OCI content digest (libs/oci's grammar), at most 256 characters. */
export const DigestSchema = z.string().max(256).regex(DIGEST_PATTERN, 'must be a digest such as sha256:<64 hex digits>');

/** An image reference an executor reports (`host/repository:tag`); the grammar is libs/oci's, the bound is ours. */
const ImageRefSchema = z.string().min(1).max(1024);
const ByteCountSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const ContainerStateSchema = z.enum(['created', 'running', 'paused', 'exited', 'missing']);
export type ContainerState = z.infer<typeof ContainerStateSchema>;

export const ObservedSandboxSchema = z.object({
  sandbox_id: z.string().min(1).max(128),
  container_id: z.string().max(256).nullable(),
  state: ContainerStateSchema,
  exit_code: z.number().int().min(-1).max(255).nullable(),
  runtime: RuntimeNameSchema,
});
export type ObservedSandbox = z.infer<typeof ObservedSandboxSchema>;

export const CachedImageSchema = z.object({
  ref: ImageRefSchema,
  snapshot_id: z.string().max(128).nullable(),
  size_bytes: ByteCountSchema.nullable(),
});
export type CachedImage = z.infer<typeof CachedImageSchema>;

/** Where an executor pushes snapshots (`snapshot_registry` of its config, without credentials). */
export const ReportedRegistrySchema = z.object({ url: z.string().min(1).max(256), repository: z.string().min(1).max(256) });
export type ReportedRegistry = z.infer<typeof ReportedRegistrySchema>;

export const HeartbeatBodySchema = z.object({
  host: z.string().min(1).max(256),
  version: z.string().max(64),
  labels: LabelsSchema,
  capacity: CapacitySchema,
  capabilities: CapabilitiesSchema,
  registry: ReportedRegistrySchema.nullable(),
  sandboxes: z.array(ObservedSandboxSchema).max(100_000),
  images: z.array(CachedImageSchema).max(100_000),
});
export type HeartbeatBody = z.infer<typeof HeartbeatBodySchema>;

/** What the server wants to exist on this executor; anything else labelled as cryo's is removed. */
export const HeartbeatResponseSchema = z.object({
  executor_id: z.string(),
  heartbeat_interval_ms: z.number().int(),
  desired_sandboxes: z.array(z.string()),
});
export type HeartbeatResponse = z.infer<typeof HeartbeatResponseSchema>;

// ---- operations: each kind's payload (server -> executor) and result (executor -> server) ----

const CreateSandboxPayloadSchema = z.object({
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
});

export const CreateSandboxResultSchema = z.object({ container_id: z.string().min(1).max(256), runtime: RuntimeNameSchema });

/**
 * A rollback in place (issue 12): the sandbox keeps its id; its container is removed and one
 * restored from the snapshot is created, by the driver of `restore.mode` (which may differ from
 * the driver that ran it). Idempotent by op id, like every operation.
 */
const RollbackSandboxPayloadSchema = CreateSandboxPayloadSchema.extend({
  restore: CreateSandboxPayloadSchema.shape.restore.unwrap(),
});

export const SnapshotResultSchema = z.object({
  image_ref: ImageRefSchema,
  digest: DigestSchema.nullable(),
  size_bytes: ByteCountSchema.nullable(),
  timings: TimingsSchema,
  /** Set when the executor built and pushed the clip index in the same pass: no build_index follows. */
  clip_index_ref: ImageRefSchema.nullable().default(null),
  capture: SnapshotCaptureSchema.nullable().default(null),
  excluded_mounts: z.array(ExcludedMountSchema).max(256).default([]),
  /** Layers of the snapshot image (null from an executor that does not say). */
  layers: z.number().int().min(0).max(1_000_000).nullable().default(null),
  /** The image's layers were squashed into one: the chain had reached the executor's snapshots.max_layers. */
  flattened: z.boolean().default(false),
});
export type SnapshotResult = z.infer<typeof SnapshotResultSchema>;

export const BuildIndexResultSchema = z.object({
  clip_index_ref: ImageRefSchema,
  index_ms: z.number().min(0).max(Number.MAX_SAFE_INTEGER),
  index_size_bytes: ByteCountSchema,
  image_size_bytes: ByteCountSchema,
});
export type BuildIndexResult = z.infer<typeof BuildIndexResultSchema>;

/**
 * Every operation kind: what the executor is asked to do and what it answers when it is done.
 * The server validates a result with its kind's `result` schema before it touches the database.
 */
export const OPERATIONS = {
  create_sandbox: { payload: CreateSandboxPayloadSchema, result: CreateSandboxResultSchema },
  delete_sandbox: { payload: z.object({ sandbox_id: z.string() }), result: z.object({ removed: z.boolean() }) },
  exec: {
    payload: z.object({ sandbox_id: z.string(), command: CommandSchema, timeout_secs: z.number().int().positive() }),
    result: ExecResultSchema,
  },
  snapshot: {
    payload: z.object({ sandbox_id: z.string(), snapshot_id: z.string(), namespace: z.string(), tag: z.string(), base_image: z.string() }),
    result: SnapshotResultSchema,
  },
  delete_image: {
    payload: z.object({ snapshot_id: z.string(), image_refs: z.array(z.string()) }),
    result: z.object({ removed: z.array(ImageRefSchema).max(10_000) }),
  },
  /** Build the clip index of a pushed snapshot image and push it next to the image (lazy restore). */
  build_index: {
    payload: z.object({ snapshot_id: z.string(), image_ref: z.string(), digest: z.string() }),
    result: BuildIndexResultSchema,
  },
  rollback_sandbox: { payload: RollbackSandboxPayloadSchema, result: CreateSandboxResultSchema },
} as const;

export type OperationKind = keyof typeof OPERATIONS;
export const OPERATION_KINDS = Object.keys(OPERATIONS) as OperationKind[];
export type OperationPayloadOf<K extends OperationKind> = z.infer<(typeof OPERATIONS)[K]['payload']>;
export type OperationResultOf<K extends OperationKind> = z.infer<(typeof OPERATIONS)[K]['result']>;

const base = { op_id: z.string(), attempt: z.number().int(), lease_expires_at: z.string() };

function operationSchema<K extends OperationKind>(kind: K) {
  return z.object({ ...base, kind: z.literal(kind), payload: OPERATIONS[kind].payload as (typeof OPERATIONS)[K]['payload'] });
}

export const OperationSchema = z.discriminatedUnion('kind', [
  operationSchema('create_sandbox'),
  operationSchema('delete_sandbox'),
  operationSchema('exec'),
  operationSchema('snapshot'),
  operationSchema('delete_image'),
  operationSchema('build_index'),
  operationSchema('rollback_sandbox'),
]);
export type Operation = z.infer<typeof OperationSchema>;
export type OperationOf<K extends OperationKind> = Extract<Operation, { kind: K }>;

export const OperationsResponseSchema = z.object({ operations: z.array(OperationSchema) });

export const ProgressBodySchema = ProgressSchema;

/** How an executor names a failure: a stable code (libs/snapshot's ErrorCode) and a message a user can act on. */
export const ExecutorErrorSchema = z.object({
  code: z.string().regex(/^[A-Z][A-Z0-9_]{0,63}$/, 'error codes are UPPER_SNAKE_CASE'),
  message: z.string().max(16 * 1024),
});
export type ExecutorError = z.infer<typeof ExecutorErrorSchema>;

/**
 * The body of `POST /operations/:op/result`. `result` is checked against the operation's kind
 * (`parseOperationResult`) once the server knows which operation it answers.
 */
export const OpResultBodySchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), result: z.unknown() }),
  z.object({ ok: z.literal(false), error: ExecutorErrorSchema }),
]);
export type OpResultBody = z.infer<typeof OpResultBodySchema>;

/**
 * A result checked against the schema of its operation's kind: the typed value, or the first
 * problem as `result.<path>: <message>`. Unknown keys are dropped, so nothing unvalidated (say,
 * an object nested thousands of levels deep) gets any further.
 */
export function parseOperationResult<K extends OperationKind>(
  kind: K,
  value: unknown,
): { ok: true; result: OperationResultOf<K> } | { ok: false; problem: string } {
  const parsed = OPERATIONS[kind].result.safeParse(value);
  if (parsed.success) return { ok: true, result: parsed.data as OperationResultOf<K> };
  const issue = parsed.error.issues[0];
  const path = ['result', ...(issue?.path ?? [])].map(String).join('.');
  return { ok: false, problem: `${path}: ${issue?.message ?? 'invalid'}` };
}

export const ExecutorParamsSchema = z.object({ id: ExecutorIdSchema });
export const OpParamsSchema = z.object({ op: z.string().min(1).max(64) });
export const LongPollQuerySchema = z.object({ wait_ms: z.coerce.number().int().min(0).max(60_000).default(20_000) });
