/**
 * Fork and rollback (issue 12): many sandboxes from one snapshot, and a sandbox's container
 * replaced in place by one restored from a snapshot.
 */
import { z } from 'zod';
import { CommandSchema, EnvSchema, ExecutorIdSchema, LabelsSchema, MAX_TTL_SECS, ResourceIdSchema } from './api-fields';
import { FallbackSchema, OnExpiredSchema, RestoreModeSchema, SandboxStatusSchema } from './api';

/** Sandboxes one fork call starts at most. */
export const MAX_FORK_COUNT = 100;

const ForkCommon = {
  count: z.number().int().min(1).max(MAX_FORK_COUNT),
  mode: RestoreModeSchema.optional(),
  executor_ids: z.array(ExecutorIdSchema).min(1).max(MAX_FORK_COUNT).optional().meta({
    description: 'Spread the forks over these executors only (default: every ready executor, those holding the image first).',
  }),
  command: CommandSchema.optional(),
  env: EnvSchema.optional(),
  labels: LabelsSchema.optional(),
  timeout_secs: z.number().int().min(0).max(MAX_TTL_SECS).optional(),
};

/** POST /snapshots/{id}/fork: `count` sandboxes from one snapshot, spread over executors. */
export const ForkSnapshotBodySchema = z.strictObject({ ...ForkCommon, on_expired: OnExpiredSchema.optional() });
export type ForkSnapshotBody = z.infer<typeof ForkSnapshotBodySchema>;

/** POST /sandboxes/{id}/fork: snapshot a running sandbox and fork it in one call. */
export const ForkSandboxBodySchema = z.strictObject(ForkCommon);
export type ForkSandboxBody = z.infer<typeof ForkSandboxBodySchema>;

export const ForkResponseSchema = z.object({
  /** The snapshot the forks start from: the one forked, or the one POST /sandboxes/{id}/fork took. */
  snapshot_id: z.string(),
  /** Null when `fallback` says the forks start from the base image. */
  restored_from_snapshot: z.string().nullable(),
  fallback: FallbackSchema.optional(),
  /** One per fork; each runs or fails on its own (a fork that could not be placed is terminated with the reason). */
  sandboxes: z.array(z.object({ sandbox_id: z.string(), status: SandboxStatusSchema, executor_id: z.string().nullable() })),
});
export type ForkResponse = z.infer<typeof ForkResponseSchema>;

/** POST /sandboxes/{id}/rollback: replace the sandbox's container by one restored from an active snapshot of the namespace. */
export const RollbackBodySchema = z.strictObject({
  snapshot_id: ResourceIdSchema,
  mode: RestoreModeSchema.optional(),
});
export type RollbackBody = z.infer<typeof RollbackBodySchema>;

export const RollbackResponseSchema = z.object({
  sandbox_id: z.string(),
  status: SandboxStatusSchema,
  snapshot_id: z.string(),
  restore_mode: RestoreModeSchema,
});
export type RollbackResponse = z.infer<typeof RollbackResponseSchema>;
