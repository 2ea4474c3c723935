/**
 * Rollback in place (issue 12): a running sandbox keeps its id, labels, command, timeout and
 * deadline; its container is replaced by one restored from an active snapshot of the namespace
 * (running -> restoring -> running, or terminated with the reason). One rollback_sandbox
 * operation on the sandbox's executor does the swap: remove the old container, create the new
 * one with the driver of the mode (so a lazy rollback of an eager sandbox changes drivers), all
 * under the sandbox's busy mark so the executor's reconciler never sees it as unwanted.
 */
import type { Logger } from 'pino';
import { CryoError, notFound, ResourcesSchema, type RestoreMode, type RollbackBody, type RollbackResponse } from '@cryo/snapshot';
import type { Clock } from '../clock';
import type { Database } from '../db/database';
import { decodeJson, decodeJsonOrNull, StringListSchema, StringMapSchema } from '../store/columns';
import type { SandboxRow } from '../store/sandboxes';
import type { Stores } from '../store/stores';
import type { OperationQueue } from './operation-queue';
import { goneError, goneMeanwhile, restoreSource } from './snapshot-source';

export interface RollbackServiceDeps {
  db: Database;
  queue: OperationQueue;
  clock: Clock;
  logger: Logger;
}

export class RollbackService {
  constructor(private readonly deps: RollbackServiceDeps) {}

  /**
   * 202 once the sandbox is `restoring` and the operation queued. 404 for an unknown sandbox or
   * snapshot, 409 when the sandbox is not running (snapshotting, restoring, pending, ended) or the
   * snapshot is not active, 410 when the snapshot expired or was deleted, 422 when the sandbox's
   * executor cannot restore it (lazy without a clip index or without the capability; an image kept
   * on another executor only).
   */
  async rollback(namespace: string, sandboxId: string, body: RollbackBody): Promise<RollbackResponse> {
    const { db, queue, clock } = this.deps;
    const mode = body.mode ?? 'eager';
    return db.transaction(async (tx) => {
      const now = clock.now();
      const current = await tx.sandboxes.getInNamespace(namespace, sandboxId);
      if (current === undefined) throw notFound('sandbox', sandboxId);
      const snapshot = await tx.snapshots.getInNamespace(namespace, body.snapshot_id);
      if (snapshot === undefined) throw notFound('snapshot', body.snapshot_id);
      checkRunning(current);
      const gone = goneError(snapshot, now);
      if (gone !== null) throw gone;
      const source = restoreSource(snapshot, mode);
      const executorId = current.executor_id;
      if (executorId === null) throw new CryoError('CONFLICT', `sandbox ${sandboxId} has no executor`);
      if (source.onlyOn !== null && source.onlyOn !== executorId) {
        throw new CryoError(
          'UNPROCESSABLE',
          `snapshot ${snapshot.id} is stored only on executor ${source.onlyOn} (image ${source.imageRef}; no snapshot_registry ` +
            `was configured when it was taken), and sandbox ${sandboxId} runs on executor ${executorId}`,
        );
      }
      await this.checkExecutor(tx, executorId, mode);
      if (!(await tx.snapshots.touch(snapshot.id, now))) throw goneMeanwhile(snapshot.id);
      const reason = `rolling back to snapshot ${snapshot.id} (${mode}) on executor ${executorId}`;
      const moved = await tx.sandboxes.beginRollback(namespace, sandboxId, {
        id: snapshot.id, imageRef: source.imageRef, baseImage: snapshot.base_image, mode,
      }, reason, now);
      if (moved === undefined) {
        throw new CryoError('CONFLICT', `sandbox ${sandboxId} changed state while the rollback was requested; try again`);
      }
      await queue.enqueue(tx, 'rollback_sandbox', executorId, {
        sandbox_id: sandboxId,
        namespace,
        image: source.imageRef,
        // The sandbox keeps its command; its environment is the snapshot image's (cryo stores no env).
        command: decodeJsonOrNull(StringListSchema, moved.command, 'sandboxes.command'),
        env: {},
        labels: decodeJson(StringMapSchema, moved.labels, 'sandboxes.labels'),
        resources: decodeJson(ResourcesSchema, moved.resources, 'sandboxes.resources'),
        restore: {
          snapshot_id: snapshot.id, image_ref: source.imageRef, digest: source.digest, clip_index_ref: source.clipIndexRef, mode,
        },
      }, { sandboxId, snapshotId: snapshot.id });
      tx.afterCommit(() => this.deps.logger.info({ sandbox_id: sandboxId, snapshot_id: snapshot.id, mode, executor_id: executorId }, 'rollback requested'));
      return { sandbox_id: sandboxId, status: 'restoring' as const, snapshot_id: snapshot.id, restore_mode: mode };
    });
  }

  private async checkExecutor(tx: Stores, executorId: string, mode: RestoreMode): Promise<void> {
    const executor = await tx.executors.get(executorId);
    if (executor === undefined || executor.state !== 'ready') {
      throw new CryoError('UNAVAILABLE', `executor ${executorId} of the sandbox is ${executor?.state ?? 'unknown'}; it cannot roll back now`);
    }
    if (mode === 'lazy' && !executor.capabilities.lazy) {
      throw new CryoError(
        'UNPROCESSABLE',
        `executor ${executorId} cannot restore lazily (${executor.capabilities.lazy_unavailable_reason ?? 'not supported'}); ` +
          'roll back with mode "eager"',
      );
    }
  }
}

/** A rollback needs a running sandbox: not one being snapshotted, rolled back, started, or ended. */
function checkRunning(sandbox: SandboxRow): void {
  if (sandbox.status === 'running') return;
  const wait = sandbox.status === 'snapshotting' ? '; wait for its snapshot to finish'
    : sandbox.status === 'restoring' ? '; wait for the rollback under way'
      : sandbox.status === 'pending' ? '; wait until it runs' : '';
  throw new CryoError('CONFLICT', `sandbox ${sandbox.id} is ${sandbox.status}; only a running sandbox can be rolled back${wait}`, {
    status: sandbox.status,
  });
}
