/**
 * Operations for executors: rows in the database with a lease. An executor long-polls for its
 * queued operations; each one it takes is leased for a time that fits its kind (a snapshot push
 * may take long, a delete should not). Queueing wakes the executor's poll at once, on whichever
 * replica it waits (the wake is published when the queueing transaction commits).
 */
import { OPERATIONS, newOperationId, type Operation, type OperationKind } from '@cryo/snapshot';
import type { Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import { toWireOperation, type OperationRow, type PayloadOf } from '../store/operations';
import type { Stores } from '../store/stores';
import type { OperationSignals } from './operation-signals';

const LEASE_BATCH = 16;

export class OperationQueue {
  constructor(
    private readonly db: Database,
    private readonly signals: OperationSignals,
    private readonly clock: Clock,
    private readonly config: ServerConfig['operations'],
  ) {}

  /** Queues an operation in `tx` (a transaction, or the database itself); returns its id. */
  async enqueue<K extends OperationKind>(
    tx: Stores,
    kind: K,
    executorId: string,
    payload: PayloadOf<K>,
    refs: { sandboxId?: string | null; snapshotId?: string | null } = {},
  ): Promise<string> {
    const id = newOperationId();
    await tx.operations.insert(id, kind, executorId, payload, refs, this.clock.now());
    await this.wake(tx, executorId);
    return id;
  }

  /** Wakes the executor's long poll, on any replica, once `tx` has committed. */
  wake(tx: Stores, executorId: string): Promise<void> {
    return tx.publish('work', executorId);
  }

  leaseMs(row: OperationRow): number {
    switch (row.kind) {
      case 'snapshot':
      case 'build_index':
        return this.config.snapshot_lease_secs * 1000;
      case 'create_sandbox':
      case 'rollback_sandbox':
        return this.config.create_sandbox_lease_secs * 1000;
      case 'exec': {
        const payload = OPERATIONS.exec.payload.safeParse(JSON.parse(row.payload));
        const timeoutSecs = payload.success ? payload.data.timeout_secs : 0;
        return (timeoutSecs + this.config.exec_lease_grace_secs) * 1000;
      }
      default:
        return this.config.lease_secs * 1000;
    }
  }

  /** Leases what is queued for the executor now, without waiting. */
  async leaseNow(executorId: string): Promise<Operation[]> {
    const rows = await this.db.stores.operations.leaseQueued(executorId, this.clock.now(), (row) => this.leaseMs(row), LEASE_BATCH);
    return rows.map(toWireOperation);
  }

  /**
   * The long poll: answers as soon as operations are available, or with none after `waitMs`
   * (or when the request is aborted or the server shuts down).
   */
  async poll(executorId: string, waitMs: number, signal?: AbortSignal): Promise<Operation[]> {
    const deadline = Date.now() + waitMs;
    // Checked before leasing: operations leased to a poller that has gone would sit out a lease.
    const gone = (): boolean => signal?.aborted === true || this.signals.isClosed;
    for (;;) {
      if (gone()) return [];
      const leased = await this.leaseNow(executorId);
      const remaining = deadline - Date.now();
      if (leased.length > 0 || remaining <= 0) return leased;
      await this.signals.waitForWork(executorId, remaining, signal);
    }
  }
}
