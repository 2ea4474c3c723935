/**
 * All stores over one connection context: the database outside any transaction, or one
 * transaction. Work inside a transaction must use the `Stores` it was given (a statement on the
 * outer database would wait for the transaction's own connection on SQLite, and run outside it
 * on PostgreSQL).
 */
import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../db/migrations';
import type { Tables } from '../db/schema';
import type { SqlContext } from './sql';
import { ExecutorStore } from './executors';
import { LeaseStore } from './leases';
import { NamespaceStore } from './namespaces';
import { OperationStore } from './operations';
import { PendingLaunchStore } from './pending-launches';
import { ReaperRecordStore } from './reaper-records';
import { SandboxStore } from './sandboxes';
import { SnapshotStore } from './snapshots';

/**
 * What replicas tell each other (and this replica itself) after a commit: `work` (value: an
 * executor id with newly queued operations), `op_end` (an operation id that ended), `wake` (a
 * duty that can make progress, e.g. `reaper`), and `resync` (local only: notifications may have
 * been missed, look again).
 */
export type DatabaseEvent = 'work' | 'op_end' | 'wake' | 'resync';


export interface TxHooks {
  afterCommit(hook: () => void): void;
  publish(db: Kysely<Tables>, event: DatabaseEvent, value: string): Promise<void>;
}

export type { SqlContext } from './sql';

export class Stores {
  readonly namespaces: NamespaceStore;
  readonly sandboxes: SandboxStore;
  readonly snapshots: SnapshotStore;
  readonly executors: ExecutorStore;
  readonly operations: OperationStore;
  readonly records: ReaperRecordStore;
  readonly leases: LeaseStore;
  readonly launches: PendingLaunchStore;

  constructor(readonly ctx: SqlContext, private readonly hooks: TxHooks) {
    this.namespaces = new NamespaceStore(ctx);
    this.sandboxes = new SandboxStore(ctx);
    this.snapshots = new SnapshotStore(ctx);
    this.executors = new ExecutorStore(ctx);
    this.operations = new OperationStore(ctx);
    this.records = new ReaperRecordStore(ctx);
    this.leases = new LeaseStore(ctx);
    this.launches = new PendingLaunchStore(ctx);
  }

  /** Runs `hook` once the transaction has committed (at once outside a transaction). */
  afterCommit(hook: () => void): void {
    this.hooks.afterCommit(hook);
  }

  /** Tells this replica and every other one about `event` once the transaction has committed. */
  publish(event: Exclude<DatabaseEvent, 'resync'>, value: string): Promise<void> {
    return this.hooks.publish(this.ctx.db, event, value);
  }

  /**
   * Serializes transactions that take the same key until they end (PostgreSQL: a transaction
   * advisory lock). SQLite needs none: its writers are serialized already.
   */
  async lock(key: string): Promise<void> {
    if (this.ctx.dialect === 'postgres') await sql`SELECT pg_advisory_xact_lock(hashtext(${key}))`.execute(this.ctx.db);
  }
}
