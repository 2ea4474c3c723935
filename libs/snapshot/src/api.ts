/**
 * The public REST API (/v1), defined once. Server routes validate with these schemas, the
 * OpenAPI document is generated from them, and the CLI parses responses with them.
 *
 * Every request field is bounded (API_LIMITS) and every object is strict: what the server
 * accepts is what a sandbox can run, and no field is silently dropped or changed. A rule that
 * JSON Schema cannot state (a UTF-8 byte total, the image reference grammar) is said in the
 * field's description, and the refusal names the field and repeats the rule.
 */
import { z } from 'zod';
import {
  API_LIMITS,
  LABEL_KEY_RULE,
  LABEL_VALUE_RULE,
  MAX_TTL_SECS,
  NO_CONTROL,
  CommandSchema,
  EnvSchema,
  ExecutorIdSchema,
  ImageReferenceSchema,
  LABEL_KEY_PATTERN,
  LabelsSchema,
  ResourceIdSchema,
  ResourcesSchema,
} from './api-fields';
import { NAMESPACE_PATTERN } from './ids';
import { TAG_PATTERN } from './naming';

export {
  API_LIMITS,
  CommandSchema,
  EnvSchema,
  ExecutorIdSchema,
  ImageReferenceSchema,
  LABEL_KEY_PATTERN,
  LabelKeySchema,
  LabelValueSchema,
  LabelsSchema,
  ResourceIdSchema,
  ResourcesSchema,
} from './api-fields';

/**
 * A sandbox's life: pending -> running -> (snapshotting -> running | restoring -> running)* ->
 * terminated; any live status may end in terminated. `restoring` is a rollback in place: the
 * sandbox keeps its id while its container is replaced by one restored from a snapshot. The
 * server makes each move with one compare-and-set UPDATE whose WHERE names the statuses it may
 * come from (apps/server/src/store/sandboxes.ts): that is where the machine is enforced, atomically.
 */
export const SandboxStatusSchema = z.enum(['pending', 'running', 'snapshotting', 'restoring', 'terminated']);
export type SandboxStatus = z.infer<typeof SandboxStatusSchema>;

export const OutcomeSchema = z.object({
  kind: z.enum(['user', 'timeout', 'executor_lost', 'failed']),
  reason: z.string().optional(),
});
export type Outcome = z.infer<typeof OutcomeSchema>;

export const RestoreModeSchema = z.enum(['eager', 'lazy']);
export type RestoreMode = z.infer<typeof RestoreModeSchema>;

export const CreateSandboxBodySchema = z.strictObject({
  image: ImageReferenceSchema,
  command: CommandSchema.optional(),
  env: EnvSchema.optional(),
  labels: LabelsSchema.optional(),
  resources: ResourcesSchema.optional(),
  timeout_secs: z.number().int().min(0).max(MAX_TTL_SECS).optional(),
  snapshot_id: ResourceIdSchema.optional(),
  executor_id: ExecutorIdSchema.optional(),
});
export type CreateSandboxBody = z.infer<typeof CreateSandboxBodySchema>;

const ByteCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/**
 * How far a snapshot's push, or a restore's pull (eager) or mount (lazy), has come: a phase name
 * and bytes (`bytes_total` null while unknown).
 */
export const ProgressSchema = z.object({
  phase: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'phase is a short lowercase word such as "push"'),
  bytes_done: ByteCount,
  bytes_total: ByteCount.nullable(),
});
export type Progress = z.infer<typeof ProgressSchema>;

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
  /**
   * While a restore is pending (or a rollback restoring): how far its executor has come, e.g.
   * `pull` with bytes (eager), `fetch-index`, `mount`, `start` (lazy). Null otherwise.
   */
  progress: ProgressSchema.nullable(),
  created_at: z.string(),
  started_at: z.string().nullable(),
  terminated_at: z.string().nullable(),
  expires_at: z.string().nullable(),
});
export type Sandbox = z.infer<typeof SandboxSchema>;

/**
 * A sandbox as lists show it: everything but `command`, which can be 256 KiB; GET
 * /sandboxes/{id} has it. Keeps a page of 500 items small and cheap to serve.
 */
export const SandboxListItemSchema = SandboxSchema.omit({ command: true });
export type SandboxListItem = z.infer<typeof SandboxListItemSchema>;

/** Why a restore or fork started from the snapshot's base image instead (`on_expired: "base_image"`). */
export const FallbackSchema = z.object({
  reason: z.string(),
});
export type Fallback = z.infer<typeof FallbackSchema>;

export const CreateSandboxResponseSchema = z.object({
  sandbox_id: z.string(),
  status: SandboxStatusSchema,
  /** The snapshot restored; null when `fallback` says it could not be and the base image ran instead. */
  restored_from_snapshot: z.string().nullable().optional(),
  fallback: FallbackSchema.optional(),
});

export const ExecBodySchema = z.strictObject({
  command: CommandSchema,
  timeout_secs: z.number().int().positive().max(24 * 3600).optional(),
});
export type ExecBody = z.infer<typeof ExecBodySchema>;

export const ExecResultSchema = z.object({
  exit_code: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
});
export type ExecResult = z.infer<typeof ExecResultSchema>;

/**
 * A snapshot's life: creating -> active | failed; creating, active or failed -> deleting (a
 * DELETE, or an active one's TTL) -> deleted | expired. Enforced like the sandbox's, by
 * compare-and-set UPDATEs in apps/server/src/store/snapshots.ts.
 */
export const SnapshotStatusSchema = z.enum(['creating', 'active', 'failed', 'deleting', 'deleted', 'expired']);
export type SnapshotStatus = z.infer<typeof SnapshotStatusSchema>;

/** `created`: a snapshot expires ttl_secs after it was created; `last_use`: after its last restore, fork or rollback. */
export const TtlFromSchema = z.enum(['created', 'last_use']);
export type TtlFrom = z.infer<typeof TtlFromSchema>;

/** At most this many snapshots of one sandbox kept by `keep_last`. */
export const MAX_KEEP_LAST = 1000;

const TagSchema = z.string().regex(TAG_PATTERN, 'tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}');

export const CreateSnapshotBodySchema = z.strictObject({
  ttl_secs: z.number().int().min(0).max(MAX_TTL_SECS).optional(),
  tag: TagSchema.optional().meta({
    description: 'A name unique among the namespace\'s creating and active snapshots (409 naming the holder); find it with GET /snapshots?tag=.',
  }),
  labels: LabelsSchema.optional(),
  keep_last: z.number().int().min(1).max(MAX_KEEP_LAST).optional().meta({
    description: 'Retention: once this snapshot is active, the older active snapshots of the same sandbox beyond the newest ' +
      'keep_last (this one counted) are deleted, with deleted_reason "retention". Snapshots a lazily restored sandbox still reads are kept.',
  }),
  ttl_from: TtlFromSchema.optional().meta({
    description: 'What the TTL counts from: "created" (default) or "last_use" (every restore, fork or rollback from the snapshot moves expires_at to now + ttl_secs).',
  }),
});
export type CreateSnapshotBody = z.infer<typeof CreateSnapshotBodySchema>;

/**
 * How long each phase of a snapshot took, in ms (null: the phase did not run). `pause_ms` is the
 * time the sandbox was frozen; `precopy_ms` the copy passes while it kept running (pre-copy
 * method); `commit_ms` the `docker commit` (commit method); `push_ms` building, compressing and
 * uploading the layer and the manifest; `index_ms` the clip index.
 */
export const TimingsSchema = z.object({
  pause_ms: z.number().nullable(),
  commit_ms: z.number().nullable(),
  push_ms: z.number().nullable(),
  index_ms: z.number().nullable(),
  precopy_ms: z.number().nullable().default(null),
  flatten_ms: z.number().nullable().default(null)
    .meta({ description: "Squashing the image's layers into one, after the sandbox was unpaused; null when it was not flattened" }),
});
export type Timings = z.infer<typeof TimingsSchema>;

/**
 * The phases a snapshot's `timings` measured, in seconds: every `<phase>_ms` field that is a
 * finite number >= 0 (null = the phase did not run), e.g. `pause`, `precopy` or `commit`,
 * `flatten`, `push`, `index`. The source of `cryo_snapshot_phase_seconds` on the server and the executor.
 */
export function timingPhases(timings: Partial<Record<keyof Timings, number | null>>): Array<{ phase: string; seconds: number }> {
  const phases: Array<{ phase: string; seconds: number }> = [];
  for (const [field, ms] of Object.entries(timings)) {
    const phase = /^([a-z][a-z_]*)_ms$/.exec(field)?.[1];
    if (phase !== undefined && typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) phases.push({ phase, seconds: ms / 1000 });
  }
  return phases;
}

/** A mount of the sandbox that its snapshot does not hold (cryo did not create it), and why. */
export const ExcludedMountSchema = z.object({
  /** Docker's mount type: bind, volume, tmpfs, ... */
  type: z.string().max(32),
  /** where it is mounted in the sandbox */
  destination: z.string().max(4096),
  /** the host path of a bind mount, else null */
  source: z.string().max(4096).nullable(),
  /** the volume name, else null */
  name: z.string().max(256).nullable(),
  reason: z.string().max(512),
});
export type ExcludedMount = z.infer<typeof ExcludedMountSchema>;

/** One copy pass of a pre-copy snapshot: the sandbox ran during all but the last. */
export const CopyPassSchema = z.object({
  paused: z.boolean(),
  ms: z.number().min(0),
  /** entries in the captured trees after the pass */
  entries: ByteCount,
  /** entries new, changed or gone since the previous pass */
  changed: ByteCount,
  files_copied: ByteCount,
  bytes_copied: ByteCount,
});
export type CopyPass = z.infer<typeof CopyPassSchema>;

/** How a snapshot was taken. */
export const SnapshotCaptureSchema = z.object({
  /** `precopy`: copied while running, paused for the changes only; `commit`: paused for a `docker commit` */
  method: z.enum(['precopy', 'commit']),
  /**
   * Why this method: the executor's `snapshots.method`, and under `auto` what decided it (e.g. an
   * engine whose storage driver is not overlay2 takes `commit`); null from executors that do not say.
   */
  method_reason: z.string().max(1024).nullable().default(null).meta({
    description: "Why this method was used: the executor's snapshots.method, and under `auto` what decided it "
      + '(pre-copy needs the container\'s overlay2 upper dir readable on the executor\'s host; otherwise `commit`). '
      + 'Null from executors that do not say',
  }),
  passes: z.array(CopyPassSchema).max(64),
  /** compressed bytes this snapshot uploaded (layers, config, manifest); null when not known */
  bytes_pushed: ByteCount.nullable(),
  /** the volumes captured into the snapshot, by path in the sandbox */
  volumes: z.array(z.string().max(4096)).max(256),
});
export type SnapshotCapture = z.infer<typeof SnapshotCaptureSchema>;

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
  layers: z.number().int().nullable()
    .meta({ description: 'Layers of the snapshot image; null while it is being made (or from an executor that does not say).' }),
  flattened: z.boolean().meta({
    description: "The image's layers (the restored image's plus this snapshot's) were squashed into one, because the chain of "
      + "snapshots had reached the executor's snapshots.max_layers (Docker stacks at most 125 layers).",
  }),
  progress: ProgressSchema.nullable(),
  clip_index_ref: z.string().nullable(),
  /** Why lazy restore is unavailable for this snapshot (indexing failed), else null. */
  clip_error: z.string().nullable(),
  /** What the TTL counts from (issue 12). */
  ttl_from: TtlFromSchema,
  /** The last restore, fork or rollback from this snapshot; null if never used. */
  last_used_at: z.string().nullable(),
  /** Retention asked at creation (keep_last), else null. */
  keep_last: z.number().int().nullable(),
  /** Why a deleted (or deleting) snapshot went: "user" (DELETE) or "retention" (a newer snapshot's keep_last). */
  deleted_reason: z.enum(['user', 'retention']).nullable(),
  /** How it was taken (method, copy passes, bytes pushed, volumes); null before it is pushed. */
  capture: SnapshotCaptureSchema.nullable(),
  /** Mounts of the sandbox this snapshot does not hold (binds, named volumes, tmpfs), and why. */
  excluded_mounts: z.array(ExcludedMountSchema),
});
export type Snapshot = z.infer<typeof SnapshotSchema>;

export const CreateSnapshotResponseSchema = z.object({
  snapshot_id: z.string(),
  status: SnapshotStatusSchema,
});

export const PatchSnapshotBodySchema = z.strictObject({
  ttl_secs: z.number().int().min(0).max(MAX_TTL_SECS),
});

/** What a restore or fork of an expired or deleted snapshot does: `fail` (410) or start from its base image. */
export const OnExpiredSchema = z.enum(['fail', 'base_image']).meta({
  description: 'For an expired or deleted snapshot: "fail" (default, 410) or "base_image": start from the snapshot\'s base image ' +
    'with the command (the request\'s, else the snapshot\'s sandbox\'s) and the request\'s env; answered with ' +
    'restored_from_snapshot null and fallback {reason}.',
});
export type OnExpired = z.infer<typeof OnExpiredSchema>;

export const RestoreBodySchema = z.strictObject({
  mode: RestoreModeSchema.optional(),
  executor_id: ExecutorIdSchema.optional(),
  command: CommandSchema.optional(),
  env: EnvSchema.optional(),
  labels: LabelsSchema.optional(),
  timeout_secs: z.number().int().min(0).max(MAX_TTL_SECS).optional(),
  on_expired: OnExpiredSchema.optional(),
});
export type RestoreBody = z.infer<typeof RestoreBodySchema>;


const LABEL_FILTER_RULE = `key=value with ${LABEL_KEY_RULE} and ${LABEL_VALUE_RULE}`;
const LabelFilterSchema = z.string().regex(
  new RegExp(`^${LABEL_KEY_PATTERN.source.slice(1, -1)}=${NO_CONTROL.source.slice(1, -2)}{0,${API_LIMITS.labelValueLength}}$`),
  `a label filter is ${LABEL_FILTER_RULE}`,
);
const LABEL_FILTERS_RULE = `at most ${API_LIMITS.labelFilters} label filters (repeat label=key=value; all must match)`;

/**
 * The query of a list: `limit` items (at most API_LIMITS.pageItems) after `cursor`, in one or
 * more of `statuses` (comma-separated), carrying every `label=key=value`. Unknown parameters
 * are refused, not ignored: a misspelt filter must not silently widen the answer.
 */
export function listQueryOf(statuses: readonly string[]) {
  const one = `(?:${statuses.join('|')})`;
  return z.strictObject({
    limit: z.coerce.number().int().min(1).max(API_LIMITS.pageItems).default(50),
    cursor: z.string().max(512).optional(),
    status: z.string()
      .regex(new RegExp(`^ *${one} *(?:, *${one} *)*$`), `status is one or more of ${statuses.join(', ')}, separated by commas`)
      .optional(),
    label: z.union([LabelFilterSchema, z.array(LabelFilterSchema).max(API_LIMITS.labelFilters)], {
      error: (issue) => (Array.isArray(issue.input) && issue.input.length > API_LIMITS.labelFilters
        ? `${LABEL_FILTERS_RULE}; got ${issue.input.length}`
        : undefined),
    }).optional().meta({ description: `Filter by labels: ${LABEL_FILTERS_RULE}; a filter is ${LABEL_FILTER_RULE}.` }),
  });
}
export const SandboxListQuerySchema = listQueryOf(SandboxStatusSchema.options);
export type ListQuery = z.infer<typeof SandboxListQuerySchema>;
/** Snapshot lists also filter by `tag` (a snapshot's name; GET /snapshots?tag=NAME). */
export const SnapshotListQuerySchema = listQueryOf(SnapshotStatusSchema.options).extend({
  tag: TagSchema.optional().meta({ description: 'Only the snapshots named this tag (live or ended), newest first.' }),
});
export type SnapshotListQuery = z.infer<typeof SnapshotListQuerySchema>;

export const pageOf = <T extends z.ZodTypeAny>(item: T) =>
  z.object({ items: z.array(item), next_cursor: z.string().nullable() });

const BytesSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const CountSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** The executor's host span cache for lazy restores: its disk budget, what it holds, what was evicted since the executor started. */
export const ClipCacheStatsSchema = z.object({
  /** the budget (`clip.cache.max_bytes`); null: no limit */
  max_bytes: BytesSchema.nullable(),
  used_bytes: BytesSchema,
  spans: CountSchema,
  evicted_spans: CountSchema,
  evicted_bytes: BytesSchema,
}).strict();
export type ClipCacheStats = z.infer<typeof ClipCacheStatsSchema>;

/** What an executor offers: CPUs, memory in MiB (0: not counted), and how many sandboxes it runs at most; and its lazy-restore span cache. */
export const CapacitySchema = z.object({
  cpus: z.number().min(0).max(65_536),
  memory_mb: z.number().int().min(0).max(1024 ** 3),
  max_sandboxes: z.number().int().min(0).max(100_000),
  /** absent on executors that cannot restore lazily (or older ones) */
  clip_cache: ClipCacheStatsSchema.optional(),
});
export type Capacity = z.infer<typeof CapacitySchema>;

/** Whether an executor can restore lazily, and if not, why. */
export const CapabilitiesSchema = z.object({ lazy: z.boolean(), lazy_unavailable_reason: z.string().max(4096).nullable() });
export type Capabilities = z.infer<typeof CapabilitiesSchema>;

export const ExecutorViewSchema = z.object({
  executor_id: z.string(),
  host: z.string(),
  labels: z.record(z.string(), z.string()),
  state: z.enum(['ready', 'lost', 'draining']),
  last_heartbeat_at: z.string(),
  version: z.string(),
  capacity: CapacitySchema,
  capabilities: CapabilitiesSchema,
  sandboxes: z.number().int(),
  cached_snapshot_images: z.array(z.string()),
  /** Problems with this executor's setup an operator should fix (e.g. it pushes to another registry than the server's). */
  warnings: z.array(z.string()).default([]),
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
  ns: z.string().regex(NAMESPACE_PATTERN, `namespace must match ${NAMESPACE_PATTERN.source.slice(1, -1)}`),
  id: ResourceIdSchema,
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
