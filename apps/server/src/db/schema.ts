/**
 * The tables as the query builder sees them: one description for SQLite and PostgreSQL. JSON
 * columns are text holding JSON (decoded and checked in the stores), timestamps are integer
 * milliseconds since the epoch (BIGINT in PostgreSQL, read back as numbers).
 */
import type { Generated } from 'kysely';
import type {
  ExecutorView,
  OperationKind,
  Outcome,
  RestoreMode,
  SandboxStatus,
  SnapshotStatus,
  TtlFrom,
} from '@cryo/snapshot';

export type ExecutorState = ExecutorView['state'];
export type OperationState = 'queued' | 'leased' | 'done' | 'failed' | 'cancelled';
export type DeleteReason = 'expired' | 'deleted';
/** Why a snapshot was deleted (not expired): a user's DELETE, or a newer snapshot's keep_last. */
export type DeletedReason = 'user' | 'retention';

/** A row of `sandboxes` (the stores decode its JSON columns). */
export interface SandboxRow {
  id: string;
  namespace: string;
  image: string;
  base_image: string;
  command: string | null;
  labels: string;
  resources: string;
  timeout_secs: number;
  status: SandboxStatus;
  pending_reason: string | null;
  outcome_kind: Outcome['kind'] | null;
  outcome_reason: string | null;
  executor_id: string | null;
  pinned: number;
  container_id: string | null;
  restored_from_snapshot: string | null;
  restore_mode: RestoreMode | null;
  created_at: number;
  started_at: number | null;
  terminated_at: number | null;
  expires_at: number | null;
  updated_at: number;
  /** When the last rollback's container started (issue 12), else null. */
  restored_at: number | null;
  /** JSON Progress the executor last reported for the restore under way (pending, restoring), else null. */
  progress: string | null;
}

/** A row of `snapshots`. */
export interface SnapshotRow {
  id: string;
  namespace: string;
  sandbox_id: string;
  executor_id: string | null;
  status: SnapshotStatus;
  error: string | null;
  tag: string;
  user_tag: number;
  labels: string;
  planned_ref: string;
  image_ref: string | null;
  digest: string | null;
  size_bytes: number | null;
  layers: number | null;
  flattened: number;
  base_image: string;
  ttl_secs: number;
  created_at: number;
  expires_at: number | null;
  expired_at: number | null;
  deleted_at: number | null;
  failed_at: number | null;
  timings: string | null;
  progress: string | null;
  clip_index_ref: string | null;
  clip_error: string | null;
  /** JSON: SnapshotCapture */
  capture: string | null;
  /** JSON: ExcludedMount[] */
  excluded_mounts: string | null;
  delete_reason: DeleteReason | null;
  delete_requested_at: number | null;
  delete_attempts: number;
  next_attempt_at: number | null;
  last_delete_error: string | null;
  registry_cleared_at: number | null;
  local_cleanup_at: number | null;
  updated_at: number;
  // issue 12
  ttl_from: TtlFrom;
  last_used_at: number | null;
  keep_last: number | null;
  deleted_reason: DeletedReason | null;
}

/** A row of `operations`: one unit of work for one executor, leased while it runs. */
export interface OperationRow {
  id: string;
  kind: OperationKind;
  executor_id: string;
  sandbox_id: string | null;
  snapshot_id: string | null;
  payload: string;
  state: OperationState;
  attempt: number;
  lease_expires_at: number | null;
  result: string | null;
  error_code: string | null;
  error_message: string | null;
  created_at: number;
  updated_at: number;
}

export interface PendingLaunchRow {
  sandbox_id: string;
  snapshot_id: string;
  mode: RestoreMode;
  /** JSON of the create_sandbox payload, without `restore` (filled from the snapshot when it is ready). */
  payload: string;
  created_at: number;
}


export interface NamespaceTable {
  name: string;
  created_at: number;
}

export interface ExecutorTable {
  id: string;
  host: string;
  version: string;
  labels: string;
  capacity: string;
  capabilities: string;
  registry: string | null;
  state: ExecutorState;
  observed_sandboxes: string;
  images: string;
  registered_at: number;
  last_heartbeat_at: number;
  lost_at: number | null;
}

export interface ReaperRecordTable {
  seq: Generated<number>;
  snapshot_id: string;
  namespace: string;
  action: 'expired' | 'deleted';
  image_ref: string | null;
  digest: string | null;
  registry_result: string;
  local_removed: string;
  bytes_reclaimed: number;
  attempts: number;
  at: number;
}

export interface SchemaMigrationTable {
  version: number;
  name: string;
  applied_at: number;
}

/** Leader election among server replicas: one row per duty group, held by one replica at a time. */
export interface LeaseTable {
  name: string;
  holder: string;
  acquired_at: number;
  expires_at: number;
}

export interface Tables {
  namespaces: NamespaceTable;
  executors: ExecutorTable;
  sandboxes: SandboxRow;
  snapshots: SnapshotRow;
  operations: OperationRow;
  reaper_records: ReaperRecordTable;
  schema_migrations: SchemaMigrationTable;
  leases: LeaseTable;
  pending_launches: PendingLaunchRow;
}
