/**
 * Versioned schema. A migration is never edited once shipped: add a new one instead.
 * Timestamps are integer milliseconds since the epoch (UTC) so they compare and index cheaply.
 * Secrets (registry password, API keys, executor token) have no column anywhere.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
      );

      CREATE TABLE executors (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        version TEXT NOT NULL,
        labels TEXT NOT NULL,
        capacity TEXT NOT NULL,
        capabilities TEXT NOT NULL,
        registry TEXT,
        state TEXT NOT NULL CHECK (state IN ('ready', 'lost', 'draining')),
        observed_sandboxes TEXT NOT NULL,
        images TEXT NOT NULL,
        registered_at INTEGER NOT NULL,
        last_heartbeat_at INTEGER NOT NULL,
        lost_at INTEGER
      );

      CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        image TEXT NOT NULL,
        base_image TEXT NOT NULL,
        command TEXT,
        labels TEXT NOT NULL,
        resources TEXT NOT NULL,
        timeout_secs INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'snapshotting', 'terminated')),
        pending_reason TEXT,
        outcome_kind TEXT,
        outcome_reason TEXT,
        executor_id TEXT,
        pinned INTEGER NOT NULL DEFAULT 0,
        container_id TEXT,
        restored_from_snapshot TEXT,
        restore_mode TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        terminated_at INTEGER,
        expires_at INTEGER,
        updated_at INTEGER NOT NULL
      );
      CREATE INDEX sandboxes_by_namespace ON sandboxes (namespace, created_at DESC, id DESC);
      CREATE INDEX sandboxes_by_executor ON sandboxes (executor_id, status);
      CREATE INDEX sandboxes_by_expiry ON sandboxes (status, expires_at);
      CREATE INDEX sandboxes_by_termination ON sandboxes (terminated_at) WHERE status = 'terminated';
      CREATE INDEX sandboxes_by_source ON sandboxes (restored_from_snapshot) WHERE restored_from_snapshot IS NOT NULL;

      CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        sandbox_id TEXT NOT NULL,
        executor_id TEXT,
        status TEXT NOT NULL CHECK (status IN ('creating', 'active', 'failed', 'deleting', 'deleted', 'expired')),
        error TEXT,
        tag TEXT NOT NULL,
        user_tag INTEGER NOT NULL DEFAULT 0,
        labels TEXT NOT NULL,
        planned_ref TEXT NOT NULL,
        image_ref TEXT,
        digest TEXT,
        size_bytes INTEGER,
        base_image TEXT NOT NULL,
        ttl_secs INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        expired_at INTEGER,
        deleted_at INTEGER,
        failed_at INTEGER,
        timings TEXT,
        progress TEXT,
        clip_index_ref TEXT,
        clip_error TEXT,
        delete_reason TEXT CHECK (delete_reason IN ('expired', 'deleted')),
        delete_requested_at INTEGER,
        delete_attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_delete_error TEXT,
        registry_cleared_at INTEGER,
        local_cleanup_at INTEGER,
        updated_at INTEGER NOT NULL
      );
      CREATE INDEX snapshots_by_namespace ON snapshots (namespace, created_at DESC, id DESC);
      CREATE INDEX snapshots_by_sandbox ON snapshots (sandbox_id, created_at DESC, id DESC);
      CREATE INDEX snapshots_live_by_namespace ON snapshots (namespace, status);
      CREATE INDEX snapshots_by_expiry ON snapshots (expires_at) WHERE status = 'active';
      CREATE INDEX snapshots_due_for_deletion ON snapshots (next_attempt_at) WHERE status = 'deleting';
      CREATE INDEX snapshots_by_tag ON snapshots (tag);
      CREATE INDEX snapshots_by_end ON snapshots (status, updated_at);

      CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        -- kinds are checked against the protocol schema (OperationSchema) when they are sent
        kind TEXT NOT NULL,
        executor_id TEXT NOT NULL,
        sandbox_id TEXT,
        snapshot_id TEXT,
        payload TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed', 'cancelled')),
        attempt INTEGER NOT NULL DEFAULT 0,
        lease_expires_at INTEGER,
        result TEXT,
        error_code TEXT,
        error_message TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      );
      CREATE INDEX operations_open_by_executor ON operations (executor_id, state, created_at)
        WHERE state IN ('queued', 'leased');
      CREATE INDEX operations_by_lease ON operations (lease_expires_at) WHERE state = 'leased';
      CREATE INDEX operations_by_snapshot ON operations (snapshot_id) WHERE snapshot_id IS NOT NULL;
      CREATE INDEX operations_by_sandbox ON operations (sandbox_id) WHERE sandbox_id IS NOT NULL;
      CREATE INDEX operations_by_end ON operations (updated_at) WHERE state IN ('done', 'failed', 'cancelled');

      CREATE TABLE reaper_records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        snapshot_id TEXT NOT NULL,
        namespace TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('expired', 'deleted')),
        image_ref TEXT,
        digest TEXT,
        registry_result TEXT NOT NULL,
        local_removed TEXT NOT NULL,
        bytes_reclaimed INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        at INTEGER NOT NULL
      );
      CREATE INDEX reaper_records_by_time ON reaper_records (at);
    `,
  },
];
