/**
 * Declares executors lost when their heartbeats stop, and takes back leases that ran out. Nothing
 * is left hanging: a lost executor's sandboxes end as `executor_lost`, its operations fail (a
 * queued create is placed elsewhere when it may be), and an operation whose lease keeps expiring
 * on a live executor is offered again a few times and then failed with a message that says so.
 */
import type { Logger } from 'pino';
import { CryoError, OPERATIONS, isLocalSnapshotRef } from '@cryo/snapshot';
import { toIso, type Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import type { Executor } from '../store/executors';
import type { OperationRow } from '../store/operations';
import type { Stores } from '../store/stores';
import type { Metrics } from './metrics';
import type { OperationOutcomes } from './operation-outcomes';
import type { OperationQueue } from './operation-queue';
import type { Placement } from './placement';

const LEASE_SWEEP_BATCH = 200;

export interface ExecutorMonitorDeps {
  db: Database;
  queue: OperationQueue;
  outcomes: OperationOutcomes;
  placement: Placement;
  metrics: Metrics;
  clock: Clock;
  config: ServerConfig;
  logger: Logger;
}

export interface MonitorPass {
  lost: string[];
  requeued: number;
  failed: number;
}

export class ExecutorMonitor {
  private readonly startedAt: number;

  constructor(private readonly deps: ExecutorMonitorDeps) {
    this.startedAt = deps.clock.now();
  }

  async runOnce(): Promise<MonitorPass> {
    const { db, clock, config } = this.deps;
    const timeoutMs = config.executors.heartbeat_timeout_secs * 1000;
    // Heartbeats (and results) could not arrive while the server was down: after a restart every
    // executor gets a full timeout to check in before it, or its leases, are given up on.
    if (clock.now() - this.startedAt < timeoutMs) return { lost: [], requeued: 0, failed: 0 };
    const silentBefore = clock.now() - timeoutMs;
    const lost: string[] = [];
    for (const executor of await db.stores.executors.silentSince(silentBefore)) {
      if (await this.declareLost(executor)) lost.push(executor.id);
    }
    return { lost, ...(await this.sweepLeases()) };
  }

  /** Compare-and-set on the executor's state: however many replicas try, one declares it lost. */
  private async declareLost(executor: Executor): Promise<boolean> {
    const { db, outcomes, metrics, clock } = this.deps;
    const since = toIso(executor.lastHeartbeatAt);
    const reason = `executor ${executor.id} stopped sending heartbeats (last at ${since})`;
    return db.transaction(async (tx) => {
      const now = clock.now();
      if (!(await tx.executors.markLost(executor.id, now))) return false;
      metrics.inc('cryo_executors_lost_total');
      this.deps.logger.warn({ executor_id: executor.id, last_heartbeat_at: since }, 'executor lost');
      for (const op of await tx.operations.openOnExecutor(executor.id)) {
        if (op.kind === 'create_sandbox' && op.state === 'queued' && (await this.replace(tx, op, executor.id, reason))) continue;
        const message = op.kind === 'snapshot' ? `executor ${executor.id} lost during snapshot (last heartbeat at ${since})` : reason;
        await outcomes.giveUp(tx, op, 'executor_lost', message);
      }
      for (const sandbox of await tx.sandboxes.liveOnExecutor(executor.id)) {
        await tx.sandboxes.terminate(sandbox.id, { kind: 'executor_lost', reason }, now);
      }
      return true;
    });
  }

  /** Moves a create the lost executor never picked up to another executor, if it may go elsewhere. */
  private async replace(tx: Stores, op: OperationRow, lostId: string, reason: string): Promise<boolean> {
    const { placement, queue, clock } = this.deps;
    const sandbox = op.sandbox_id === null ? undefined : await tx.sandboxes.get(op.sandbox_id);
    if (sandbox === undefined || sandbox.pinned === 1) return false;
    const payload = OPERATIONS.create_sandbox.payload.parse(JSON.parse(op.payload));
    try {
      const target = await placement.choose(tx, {
        resources: payload.resources,
        exclude: [lostId],
        ...(payload.restore === null
          ? {}
          : {
              restore: {
                snapshotId: payload.restore.snapshot_id,
                imageRef: payload.restore.image_ref,
                mode: payload.restore.mode,
                onlyOn: isLocalSnapshotRef(payload.restore.image_ref) ? lostId : null,
              },
            }),
      });
      const now = clock.now();
      await tx.operations.reassign(op.id, target.id, now);
      await tx.sandboxes.reassign(sandbox.id, target.id, `${reason}; moved to executor ${target.id}`, now);
      await queue.wake(tx, target.id);
      this.deps.logger.info({ sandbox_id: sandbox.id, op_id: op.id, executor_id: target.id }, 'sandbox re-placed');
      return true;
    } catch (err) {
      if (!(err instanceof CryoError)) throw err;
      return false;
    }
  }

  private async sweepLeases(): Promise<{ requeued: number; failed: number }> {
    const { db, outcomes, queue, metrics, clock, config } = this.deps;
    let requeued = 0;
    let failed = 0;
    await db.transaction(async (tx) => {
      requeued = 0;
      failed = 0;
      const now = clock.now();
      for (const op of await tx.operations.expiredLeases(now, LEASE_SWEEP_BATCH)) {
        const executor = await tx.executors.get(op.executor_id);
        if (executor?.state === 'ready' && op.attempt < config.operations.max_attempts) {
          if (await tx.operations.requeue(op.id, now)) {
            requeued += 1;
            metrics.inc('cryo_operations_requeued_total');
            await queue.wake(tx, op.executor_id);
            this.deps.logger.warn({ op_id: op.id, kind: op.kind, attempt: op.attempt }, 'lease expired; offering the operation again');
          }
          continue;
        }
        const message = executor?.state === 'ready'
          ? `${op.kind} operation ${op.id} was not completed by executor ${op.executor_id} after ${op.attempt} attempts ` +
            '(its lease expired each time)'
          : `executor ${op.executor_id} is gone; ${op.kind} operation ${op.id} was not completed`;
        if (await outcomes.giveUp(tx, op, executor?.state === 'ready' ? 'lease_expired' : 'executor_lost', message)) failed += 1;
      }
    });
    return { requeued, failed };
  }
}
