/**
 * The public REST API (/v1), defined once. Server routes validate with these schemas, the
 * OpenAPI document is generated from them, and the CLI parses responses with them.
 */
import { z } from 'zod';
import { TAG_PATTERN } from './naming';

const MAX_TTL_SECS = 10 * 365 * 24 * 3600;

export const EnvSchema = z.record(z.string().regex(/^[^=\0]+$/, 'env names must not contain "=" or NUL'), z.string());
export const LabelsSchema = z.record(
  z.string().min(1).max(63).regex(/^[A-Za-z0-9._/-]+$/, 'label keys use letters, digits, ".", "_", "/", "-"'),
  z.string().max(255),
);
export const CommandSchema = z.array(z.string()).min(1, 'command must have at least one element');

export const ResourcesSchema = z.object({
  cpus: z.number().positive().max(256).optional(),
  memory_mb: z.number().int().positive().max(1024 * 1024).optional(),
});

export const SandboxStatusSchema = z.enum(['pending', 'running', 'snapshotting', 'terminated']);
export type SandboxStatus = z.infer<typeof SandboxStatusSchema>;

export const OutcomeSchema = z.object({
  kind: z.enum(['user', 'timeout', 'executor_lost', 'failed']),
  reason: z.string().optional(),
});
export type Outcome = z.infer<typeof OutcomeSchema>;

export const RestoreModeSchema = z.enum(['eager', 'lazy']);
export type RestoreMode = z.infer<typeof RestoreModeSchema>;

export const CreateSandboxBodySchema = z.object({
  image: z.string().min(1).max(512),
  command: CommandSchema.optional(),
  env: EnvSchema.optional(),
  labels: LabelsSchema.optional(),
  resources: ResourcesSchema.optional(),
  timeout_secs: z.number().int().min(0).max(MAX_TTL_SECS).optional(),
  snapshot_id: z.string().min(1).optional(),
  executor_id: z.string().min(1).optional(),
}).strict();
export type CreateSandboxBody = z.infer<typeof CreateSandboxBodySchema>;

export const SandboxSchema = z.object({
  sandbox_id: z.string(),
  namespace: z.string(),
  image: z.string(),
  command: z.array(z.string()).nullable(),
  labels: z.record(z.string(), z.string()),
  resources: ResourcesSchema,
  timeout_secs: z.number().int(),
  status: SandboxStatusSchema,
  pending_reason: z.string().nullable(),
  outcome: OutcomeSchema.nullable(),
  executor_id: z.string().nullable(),
  restored_from_snapshot: z.string().nullable(),
  restore_mode: RestoreModeSchema.nullable(),
  created_at: z.string(),
  started_at: z.string().nullable(),
  terminated_at: z.string().nullable(),
  expires_at: z.string().nullable(),
});
export type Sandbox = z.infer<typeof SandboxSchema>;

export const CreateSandboxResponseSchema = z.object({
  sandbox_id: z.string(),
  status: SandboxStatusSchema,
  restored_from_snapshot: z.string().optional(),
});

export const ExecBodySchema = z.object({
  command: CommandSchema,
  timeout_secs: z.number().int().positive().max(24 * 3600).optional(),
}).strict();
export type ExecBody = z.infer<typeof ExecBodySchema>;

export const ExecResultSchema = z.object({
  exit_code: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
});
export type ExecResult = z.infer<typeof ExecResultSchema>;

export const SnapshotStatusSchema = z.enum(['creating', 'active', 'failed', 'deleting', 'deleted', 'expired']);
export type SnapshotStatus = z.infer<typeof SnapshotStatusSchema>;

export const CreateSnapshotBodySchema = z.object({
  ttl_secs: z.number().int().min(0).max(MAX_TTL_SECS).optional(),
  tag: z.string().regex(TAG_PATTERN, 'tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}').optional(),
  labels: LabelsSchema.optional(),
}).strict();
export type CreateSnapshotBody = z.infer<typeof CreateSnapshotBodySchema>;

export const TimingsSchema = z.object({
  pause_ms: z.number().nullable(),
  commit_ms: z.number().nullable(),
  push_ms: z.number().nullable(),
  index_ms: z.number().nullable(),
});
export type Timings = z.infer<typeof TimingsSchema>;

export const ProgressSchema = z.object({
  phase: z.string(),
  bytes_done: z.number(),
  bytes_total: z.number().nullable(),
});
export type Progress = z.infer<typeof ProgressSchema>;

export const SnapshotSchema = z.object({
  snapshot_id: z.string(),
  namespace: z.string(),
  sandbox_id: z.string(),
  status: SnapshotStatusSchema,
  error: z.string().nullable(),
  tag: z.string().nullable(),
  labels: z.record(z.string(), z.string()),
  image_ref: z.string().nullable(),
  digest: z.string().nullable(),
  size_bytes: z.number().nullable(),
  base_image: z.string(),
  created_at: z.string(),
  ttl_secs: z.number().int(),
  expires_at: z.string().nullable(),
  expired_at: z.string().nullable(),
  deleted_at: z.string().nullable(),
  executor_id: z.string().nullable(),
  timings: TimingsSchema,
  progress: ProgressSchema.nullable(),
  clip_index_ref: z.string().nullable(),
  /** Why lazy restore is unavailable for this snapshot (indexing failed), else null. */
  clip_error: z.string().nullable(),
});
export type Snapshot = z.infer<typeof SnapshotSchema>;

export const CreateSnapshotResponseSchema = z.object({
  snapshot_id: z.string(),
  status: SnapshotStatusSchema,
});

export const PatchSnapshotBodySchema = z.object({
  ttl_secs: z.number().int().min(0).max(MAX_TTL_SECS),
}).strict();

export const RestoreBodySchema = z.object({
  mode: RestoreModeSchema.optional(),
  executor_id: z.string().min(1).optional(),
  command: CommandSchema.optional(),
  env: EnvSchema.optional(),
  labels: LabelsSchema.optional(),
  timeout_secs: z.number().int().min(0).max(MAX_TTL_SECS).optional(),
}).strict();
export type RestoreBody = z.infer<typeof RestoreBodySchema>;

export const ListQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().optional(),
  status: z.string().optional(),
  label: z.union([z.string(), z.array(z.string())]).optional(),
});
export type ListQuery = z.infer<typeof ListQuerySchema>;

export const pageOf = <T extends z.ZodTypeAny>(item: T) =>
  z.object({ items: z.array(item), next_cursor: z.string().nullable() });

export const ExecutorViewSchema = z.object({
  executor_id: z.string(),
  host: z.string(),
  labels: z.record(z.string(), z.string()),
  state: z.enum(['ready', 'lost', 'draining']),
  last_heartbeat_at: z.string(),
  version: z.string(),
  capacity: z.object({ cpus: z.number(), memory_mb: z.number(), max_sandboxes: z.number() }),
  capabilities: z.object({ lazy: z.boolean(), lazy_unavailable_reason: z.string().nullable() }),
  sandboxes: z.number().int(),
  cached_snapshot_images: z.array(z.string()),
});
export type ExecutorView = z.infer<typeof ExecutorViewSchema>;

export const ErrorBodySchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.unknown().optional(),
    request_id: z.string().optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

export const IdParamsSchema = z.object({
  ns: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'namespace must match [a-z0-9][a-z0-9_-]{0,62}'),
  id: z.string().min(1).max(64),
});
export const NsParamsSchema = IdParamsSchema.pick({ ns: true });

/** Parse `label=k=v` filters into pairs; a filter without "=" is an error naming it. */
export function parseLabelFilters(label: string | string[] | undefined): Array<[string, string]> {
  if (label === undefined) return [];
  const list = Array.isArray(label) ? label : [label];
  return list.map((item) => {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Error(`label filter "${item}" must look like key=value`);
    return [item.slice(0, eq), item.slice(eq + 1)];
  });
}
