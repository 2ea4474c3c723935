/**
 * The tables as the query builder sees them: one description for SQLite and PostgreSQL. JSON
 * columns are text holding JSON (decoded and checked in the stores), timestamps are integer
 * milliseconds since the epoch (BIGINT in PostgreSQL, read back as numbers).
 */
import type { Generated } from 'kysely';
import type { ExecutorState } from '../store/executors';
import type { OperationRow } from '../store/operations';
import type { PendingLaunchRow } from '../store/pending-launches';
import type { SandboxRow } from '../store/sandboxes';
import type { SnapshotRow } from '../store/snapshots';

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
