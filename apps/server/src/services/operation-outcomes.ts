/**
 * What happens when an operation ends: an executor reports a result, or the server gives up on
 * it (executor lost, lease expired too often). Either way the sandbox or snapshot it was for
 * reaches a clear state. A report for an operation that has already ended is ignored.
 */
import type { Logger } from 'pino';
import {
  CryoError,
  isLocalSnapshotRef,
  parseOperationResult,
  type OpResultBody,
  type Outcome,
  type Progress,
} from '@cryo/snapshot';
import type { Clock } from '../clock';
import type { Database } from '../db/database';
import type { DoneEnd, OperationEnd, OperationRow } from '../store/operations';
import type { Stores } from '../store/stores';
import type { Metrics, OperationOutcome } from './metrics';
import type { OperationQueue } from './operation-queue';
import type { SnapshotFollowUps } from './snapshot-follow-ups';

export interface Ack {
  ignored: boolean;
  reason: string | null;
}

/** Why the server ends an operation itself. */
export type GiveUpCause = 'executor_lost' | 'lease_expired';

export interface OperationOutcomesDeps {
  db: Database;
  queue: OperationQueue;
  metrics: Metrics;
  clock: Clock;
  logger: Logger;
  /**
   * Called in the transaction when a snapshot being deleted can make progress (its push or a
   * local removal ended): wakes the reaper on the replica that runs it.
   */
  onDeletionReady: (tx: Stores) => Promise<void>;
  /** Forks waiting for a snapshot, and retention (issue 12). */
  followUps: SnapshotFollowUps;
}

const ACCEPTED: Ack = { ignored: false, reason: null };

export class OperationOutcomes {
  constructor(private readonly deps: OperationOutcomesDeps) {}

  async progress(opId: string, progress: Progress): Promise<Ack> {
    const { db, clock } = this.deps;
    const { operations, snapshots, sandboxes } = db.stores;
    const op = await operations.get(opId);
    const stale = staleReason(opId, op);
    if (stale !== null || op === undefined) return { ignored: true, reason: stale };
    const now = clock.now();
    if (op.kind === 'snapshot' && op.snapshot_id !== null) {
      await snapshots.updateProgress(op.snapshot_id, progress, now);
    } else if ((op.kind === 'create_sandbox' || op.kind === 'rollback_sandbox') && op.sandbox_id !== null) {
      // A restore's pull or mount: shown on the sandbox while it is pending (or restoring).
      await sandboxes.updateProgress(op.sandbox_id, progress, now);
    } else {
      return { ignored: true, reason: `operation ${opId} is a ${op.kind}; only snapshots, creates and rollbacks report progress` };
    }
    // Progress proves the executor is still on it: keep the lease from running out mid-push.
    await operations.extendLease(op.id, now + this.deps.queue.leaseMs(op), now);
    return ACCEPTED;
  }

  async result(opId: string, body: OpResultBody): Promise<Ack> {
    const { db } = this.deps;
    const op = await db.stores.operations.get(opId);
    const stale = staleReason(opId, op);
    if (stale !== null || op === undefined) {
      this.deps.logger.info({ op_id: opId }, `ignoring result: ${stale ?? 'unknown operation'}`);
      if (op !== undefined && body.ok) await this.cleanUpLatePush(op, body.result);
      return { ignored: true, reason: stale };
    }
    const end: OperationEnd = body.ok
      ? checkResult(op, body.result)
      : { state: 'failed', code: body.error.code, message: body.error.message };
    const applied = await db.transaction(async (tx) => {
      if (!(await tx.operations.finish(op.id, end, this.deps.clock.now()))) return false;
      await this.apply(tx, op, end, null);
      await tx.publish('op_end', op.id);
      return true;
    });
    if (!applied) return { ignored: true, reason: `operation ${opId} ended concurrently` };
    this.countEnd(op, end.state);
    return ACCEPTED;
  }

  /**
   * A push that finished after the server gave up on it (or after its snapshot ended) left a
   * manifest nobody will restore: the reaper deletes it.
   */
  private async cleanUpLatePush(op: OperationRow, result: unknown): Promise<void> {
    if (op.kind !== 'snapshot' || op.snapshot_id === null) return;
    const parsed = parseOperationResult('snapshot', result);
    if (!parsed.ok || isLocalSnapshotRef(parsed.result.image_ref)) return;
    const snapshotId = op.snapshot_id;
    const digest = parsed.result.digest;
    await this.deps.db.transaction(async (tx) => {
      if (!(await tx.snapshots.scheduleLateCleanup(snapshotId, digest, this.deps.clock.now()))) return;
      this.deps.logger.warn(
        { op_id: op.id, snapshot_id: snapshotId, digest },
        'a push finished after its snapshot ended; deleting the manifest it left',
      );
      await this.deps.onDeletionReady(tx);
    });
  }

  /** The server ends an operation itself, in `tx`. Returns false if it had ended. */
  async giveUp(tx: Stores, op: OperationRow, cause: GiveUpCause, message: string): Promise<boolean> {
    const end: OperationEnd = { state: 'failed', code: cause === 'executor_lost' ? 'EXECUTOR_LOST' : 'LEASE_EXPIRED', message };
    if (!(await tx.operations.finish(op.id, end, this.deps.clock.now()))) return false;
    await this.apply(tx, op, end, cause);
    await tx.publish('op_end', op.id);
    tx.afterCommit(() => this.countEnd(op, cause));
    return true;
  }

  private countEnd(op: OperationRow, outcome: OperationOutcome): void {
    this.deps.metrics.operationEnded(op.kind, outcome, (this.deps.clock.now() - op.created_at) / 1000);
  }

  private async apply(tx: Stores, op: OperationRow, end: OperationEnd, cause: GiveUpCause | null): Promise<void> {
    const { sandboxes, snapshots } = tx;
    const { metrics, clock } = this.deps;
    const now = clock.now();
    const log = this.deps.logger.child({ op_id: op.id, sandbox_id: op.sandbox_id, snapshot_id: op.snapshot_id });
    switch (op.kind) {
      case 'create_sandbox': {
        if (op.sandbox_id === null) return;
        const sandbox = await sandboxes.get(op.sandbox_id);
        if (sandbox === undefined) return;
        if (end.state === 'done' && end.kind === 'create_sandbox') {
          const { container_id } = end.result;
          const expiresAt = sandbox.timeout_secs > 0 ? now + sandbox.timeout_secs * 1000 : null;
          if (await sandboxes.markRunning(sandbox.id, container_id, now, expiresAt)) {
            log.info({ executor_id: op.executor_id }, 'sandbox running');
            if (sandbox.restored_from_snapshot !== null) {
              metrics.restoreRunning(sandbox.restore_mode ?? 'eager', (now - sandbox.created_at) / 1000);
            }
          } else if (sandbox.status === 'terminated') {
            // Ended (deleted, timed out) while it was being created: remove what was just made.
            await this.deps.queue.enqueue(tx, 'delete_sandbox', op.executor_id, { sandbox_id: sandbox.id }, { sandboxId: sandbox.id });
          }
        } else if (end.state === 'failed') {
          const outcome: Outcome = cause === 'executor_lost'
            ? { kind: 'executor_lost', reason: end.message }
            : { kind: 'failed', reason: end.message };
          if (await sandboxes.terminate(sandbox.id, outcome, now)) log.warn({ reason: end.message }, 'sandbox failed to start');
        }
        return;
      }
      case 'snapshot': {
        if (op.snapshot_id === null) return;
        const snapshot = await snapshots.get(op.snapshot_id);
        if (snapshot === undefined) return;
        if (end.state === 'done' && end.kind === 'snapshot') {
          const result = end.result;
          await snapshots.recordPushed(snapshot.id, result, now);
          metrics.inc('cryo_snapshots_created_total');
          metrics.snapshotTimings(result.timings);
          log.info({ image_ref: result.image_ref, digest: result.digest, timings: result.timings, clip_index_ref: result.clip_index_ref }, 'snapshot pushed');
          // Lazy restore needs a clip index. A pre-copy snapshot brings it (built in the same pass
          // as the layer); otherwise the executor that pushed builds it next, while the snapshot
          // is already active (restorable eagerly) in the meantime.
          if (result.clip_index_ref === null && result.digest !== null && !isLocalSnapshotRef(result.image_ref) && snapshot.status === 'creating') {
            await this.deps.queue.enqueue(tx, 'build_index', op.executor_id,
              { snapshot_id: snapshot.id, image_ref: result.image_ref, digest: result.digest }, { snapshotId: snapshot.id });
          }
          await this.deps.followUps.pushed(tx, snapshot.id);
        } else if (end.state === 'failed') {
          // A push of unknown outcome (the executor vanished) may have left a manifest behind.
          const unknownOutcome = cause !== null && !isLocalSnapshotRef(snapshot.planned_ref);
          await snapshots.markFailed(snapshot.id, end.message, unknownOutcome, now);
          metrics.inc('cryo_snapshots_failed_total');
          log.warn({ error: end.message }, 'snapshot failed');
          await this.deps.followUps.failed(tx, snapshot.id, end.message);
        }
        if (op.sandbox_id !== null) await sandboxes.setStatus(op.sandbox_id, 'snapshotting', 'running', now);
        if (snapshot.status === 'deleting' || (end.state === 'failed' && cause !== null)) await this.deps.onDeletionReady(tx);
        return;
      }
      case 'delete_image': {
        if (op.snapshot_id !== null && (await snapshots.get(op.snapshot_id))?.status === 'deleting') {
          await snapshots.wakeDeletion(op.snapshot_id, now);
          await this.deps.onDeletionReady(tx);
        }
        return;
      }
      case 'build_index': {
        if (op.snapshot_id === null) return;
        if (end.state === 'done' && end.kind === 'build_index') {
          const result = end.result;
          await snapshots.recordClipIndex(op.snapshot_id, result.clip_index_ref, result.index_ms, now);
          this.deps.metrics.snapshotTimings({ index_ms: result.index_ms });
          log.info({ clip_index_ref: result.clip_index_ref, index_ms: result.index_ms }, 'clip index pushed');
          await this.deps.followUps.indexed(tx, op.snapshot_id);
        } else if (end.state === 'failed') {
          await snapshots.recordClipError(op.snapshot_id, end.message, now);
          log.warn({ error: end.message }, 'clip index failed; the snapshot stays restorable eagerly');
          await this.deps.followUps.indexFailed(tx, op.snapshot_id, end.message);
        }
        return;
      }
      case 'rollback_sandbox': {
        if (op.sandbox_id === null) return;
        const sandbox = await sandboxes.get(op.sandbox_id);
        if (sandbox === undefined) return;
        if (end.state === 'done' && end.kind === 'rollback_sandbox') {
          if (await sandboxes.finishRollback(sandbox.id, end.result.container_id, now)) {
            log.info({ executor_id: op.executor_id, runtime: end.result.runtime }, 'sandbox rolled back');
            tx.afterCommit(() => metrics.inc('cryo_rollbacks_total', 1, { outcome: 'done' }));
          } else if (sandbox.status === 'terminated') {
            // Ended (deleted, executor lost) during the swap: remove what was just made.
            await this.deps.queue.enqueue(tx, 'delete_sandbox', op.executor_id, { sandbox_id: sandbox.id }, { sandboxId: sandbox.id });
          }
        } else if (end.state === 'failed') {
          const reason = `rollback to snapshot ${op.snapshot_id ?? '?'} failed: ${end.message}`;
          const outcome: Outcome = cause === 'executor_lost' ? { kind: 'executor_lost', reason } : { kind: 'failed', reason };
          if (await sandboxes.terminate(sandbox.id, outcome, now)) {
            log.warn({ reason }, 'rollback failed; the sandbox ended');
            tx.afterCommit(() => metrics.inc('cryo_rollbacks_total', 1, { outcome: 'failed' }));
            // The old container, or a half-made new one, may be left: the executor removes it.
            if (cause !== 'executor_lost') {
              await this.deps.queue.enqueue(tx, 'delete_sandbox', op.executor_id, { sandbox_id: sandbox.id }, { sandboxId: sandbox.id });
            }
          }
        }
        return;
      }
      case 'exec':
      case 'delete_sandbox':
        return;
    }
  }
}

function staleReason(opId: string, op: OperationRow | undefined): string | null {
  if (op === undefined) return `operation ${opId} is unknown (it may have been pruned)`;
  if (op.state === 'queued' || op.state === 'leased') return null;
  return `operation ${opId} has already ended (${op.state})`;
}

/**
 * A result must have the shape its kind promises (parsed once, here); the error names the field
 * that does not. Unknown fields are dropped before anything is stored.
 */
function checkResult(op: OperationRow, result: unknown): DoneEnd {
  const parsed = parseOperationResult(op.kind, result);
  if (!parsed.ok) throw new CryoError('INVALID_REQUEST', `${parsed.problem} (for a ${op.kind} operation)`);
  // parseOperationResult checked `result` with the schema of `op.kind`: the pair is consistent.
  return { state: 'done', kind: op.kind, result: parsed.result } as DoneEnd;
}
