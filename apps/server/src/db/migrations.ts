/**
 * The versioned schema, one list for SQLite and PostgreSQL. A migration is never edited once
 * shipped: add a new one with the next version. Migrations run at start, in order, each in the
 * transaction that records it, under a lock (PostgreSQL: an advisory lock; SQLite: an immediate
 * transaction), so replicas starting together apply each one exactly once.
 *
 * Adding one (e.g. a column for the lifecycle work):
 *
 *   {
 *     version: 3,
 *     name: 'snapshots.last_used_at',
 *     up: async (db) => {
 *       await db.schema.alterTable('snapshots').addColumn('last_used_at', 'bigint').execute();
 *     },
 *   },
 *
 * then add the column to the table's row type (store/*.ts, db/schema.ts). Kysely's schema builder
 * writes portable DDL; where the two databases differ, `up` gets the dialect. Portable rules:
 * timestamps are BIGINT milliseconds, JSON is TEXT, booleans are INTEGER 0/1.
 *
 * Timestamps are integer milliseconds since the epoch (UTC) so they compare and index cheaply.
 * Secrets (registry password, API keys, executor token, the database password) have no column.
 */
import { sql, type Kysely } from 'kysely';

export type Dialect = 'sqlite' | 'postgres';

export interface Migration {
  version: number;
  name: string;
  /** `db` is untyped on purpose: a migration sees the schema of its own time, not today's. */
  up(db: Kysely<unknown>, dialect: Dialect): Promise<void>;
}

/** Runs `;`-separated DDL one statement at a time (SQLite prepares one statement per call). */
async function runStatements(db: Kysely<unknown>, ddl: string): Promise<void> {
  for (const statement of ddl.split(/;\s*\n/).map((s) => s.trim()).filter((s) => s.length > 0)) {
    await sql.raw(statement).execute(db);
  }
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    up: (db, dialect) => runStatements(db, `
      CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL
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
        registered_at BIGINT NOT NULL,
        last_heartbeat_at BIGINT NOT NULL,
        lost_at BIGINT
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
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        terminated_at BIGINT,
        expires_at BIGINT,
        updated_at BIGINT NOT NULL
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
        size_bytes BIGINT,
        base_image TEXT NOT NULL,
        ttl_secs BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        expired_at BIGINT,
        deleted_at BIGINT,
        failed_at BIGINT,
        timings TEXT,
        progress TEXT,
        clip_index_ref TEXT,
        clip_error TEXT,
        delete_reason TEXT CHECK (delete_reason IN ('expired', 'deleted')),
        delete_requested_at BIGINT,
        delete_attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        last_delete_error TEXT,
        registry_cleared_at BIGINT,
        local_cleanup_at BIGINT,
        updated_at BIGINT NOT NULL
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
        lease_expires_at BIGINT,
        result TEXT,
        error_code TEXT,
        error_message TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE INDEX operations_open_by_executor ON operations (executor_id, state, created_at)
        WHERE state IN ('queued', 'leased');
      CREATE INDEX operations_by_lease ON operations (lease_expires_at) WHERE state = 'leased';
      CREATE INDEX operations_by_snapshot ON operations (snapshot_id) WHERE snapshot_id IS NOT NULL;
      CREATE INDEX operations_by_sandbox ON operations (sandbox_id) WHERE sandbox_id IS NOT NULL;
      CREATE INDEX operations_by_end ON operations (updated_at) WHERE state IN ('done', 'failed', 'cancelled');

      CREATE TABLE reaper_records (
        seq ${dialect === 'postgres' ? 'BIGSERIAL PRIMARY KEY' : 'INTEGER PRIMARY KEY AUTOINCREMENT'},
        snapshot_id TEXT NOT NULL,
        namespace TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('expired', 'deleted')),
        image_ref TEXT,
        digest TEXT,
        registry_result TEXT NOT NULL,
        local_removed TEXT NOT NULL,
        bytes_reclaimed BIGINT NOT NULL,
        attempts INTEGER NOT NULL,
        at BIGINT NOT NULL
      );
      CREATE INDEX reaper_records_by_time ON reaper_records (at);
    `),
  },
  {
    version: 2,
    name: 'leases for leader election among replicas',
    up: async (db) => {
      await db.schema
        .createTable('leases')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('holder', 'text', (c) => c.notNull())
        .addColumn('acquired_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
  // ---- issue 12: snapshot lifecycle (fork, rollback, retention, sliding TTL, names) ----
  {
    version: 3,
    name: 'sandbox status restoring (rollback in place) and restored_at',
    up: async (db, dialect) => {
      if (dialect === 'postgres') {
        await runStatements(db, `
          ALTER TABLE sandboxes DROP CONSTRAINT sandboxes_status_check;
          ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_status_check
            CHECK (status IN ('pending', 'running', 'snapshotting', 'restoring', 'terminated'));
          ALTER TABLE sandboxes ADD COLUMN restored_at BIGINT
        `);
        return;
      }
      // SQLite cannot change a CHECK constraint: the table is rebuilt (sqlite.org/lang_altertable.html, section 7).
      const columns = 'id, namespace, image, base_image, command, labels, resources, timeout_secs, status, pending_reason, ' +
        'outcome_kind, outcome_reason, executor_id, pinned, container_id, restored_from_snapshot, restore_mode, created_at, ' +
        'started_at, terminated_at, expires_at, updated_at';
      await runStatements(db, `
        CREATE TABLE sandboxes_v3 (
          id TEXT PRIMARY KEY,
          namespace TEXT NOT NULL REFERENCES namespaces(name),
          image TEXT NOT NULL,
          base_image TEXT NOT NULL,
          command TEXT,
          labels TEXT NOT NULL,
          resources TEXT NOT NULL,
          timeout_secs INTEGER NOT NULL,
          status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'snapshotting', 'restoring', 'terminated')),
          pending_reason TEXT,
          outcome_kind TEXT,
          outcome_reason TEXT,
          executor_id TEXT,
          pinned INTEGER NOT NULL DEFAULT 0,
          container_id TEXT,
          restored_from_snapshot TEXT,
          restore_mode TEXT,
          created_at BIGINT NOT NULL,
          started_at BIGINT,
          terminated_at BIGINT,
          expires_at BIGINT,
          updated_at BIGINT NOT NULL,
          restored_at BIGINT
        );
        INSERT INTO sandboxes_v3 (${columns}) SELECT ${columns} FROM sandboxes;
        DROP TABLE sandboxes;
        ALTER TABLE sandboxes_v3 RENAME TO sandboxes;
        CREATE INDEX sandboxes_by_namespace ON sandboxes (namespace, created_at DESC, id DESC);
        CREATE INDEX sandboxes_by_executor ON sandboxes (executor_id, status);
        CREATE INDEX sandboxes_by_expiry ON sandboxes (status, expires_at);
        CREATE INDEX sandboxes_by_termination ON sandboxes (terminated_at) WHERE status = 'terminated';
        CREATE INDEX sandboxes_by_source ON sandboxes (restored_from_snapshot) WHERE restored_from_snapshot IS NOT NULL
      `);
    },
  },
  {
    version: 4,
    name: 'snapshots: ttl_from, last_used_at, keep_last, deleted_reason; tags unique per namespace; pending launches',
    up: (db) => runStatements(db, `
      ALTER TABLE snapshots ADD COLUMN ttl_from TEXT NOT NULL DEFAULT 'created' CHECK (ttl_from IN ('created', 'last_use'));
      ALTER TABLE snapshots ADD COLUMN last_used_at BIGINT;
      ALTER TABLE snapshots ADD COLUMN keep_last INTEGER;
      ALTER TABLE snapshots ADD COLUMN deleted_reason TEXT CHECK (deleted_reason IN ('user', 'retention'));
      CREATE UNIQUE INDEX snapshots_live_tag ON snapshots (namespace, tag)
        WHERE user_tag = 1 AND status IN ('creating', 'active');
      CREATE INDEX snapshots_active_by_sandbox ON snapshots (sandbox_id, created_at DESC) WHERE status = 'active';

      -- Forks of a snapshot still being made (POST /sandboxes/{id}/fork): placed, their
      -- create_sandbox operation queued once the snapshot is active (indexed, for lazy forks).
      CREATE TABLE pending_launches (
        sandbox_id TEXT PRIMARY KEY,
        snapshot_id TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('eager', 'lazy')),
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX pending_launches_by_snapshot ON pending_launches (snapshot_id)
    `),
  },
  {
    version: 5,
    name: 'snapshots: capture (method, copy passes, bytes pushed, volumes) and excluded_mounts',
    up: (db) => runStatements(db, `
      ALTER TABLE snapshots ADD COLUMN capture TEXT;
      ALTER TABLE snapshots ADD COLUMN excluded_mounts TEXT
    `),
  },
  {
    version: 6,
    name: 'snapshots: layers and flattened',
    up: (db) => runStatements(db, `
      ALTER TABLE snapshots ADD COLUMN layers INTEGER;
      ALTER TABLE snapshots ADD COLUMN flattened INTEGER NOT NULL DEFAULT 0 CHECK (flattened IN (0, 1));
    `),
  },
  // ---- issue 14: restore progress ----
  {
    version: 7,
    name: 'sandboxes.progress: how far a pending restore (pull, mount) has come',
    up: (db) => runStatements(db, `
      ALTER TABLE sandboxes ADD COLUMN progress TEXT
    `),
  },
];
