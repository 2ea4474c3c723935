/**
 * What the end of a snapshot's operations sets off (issue 12), in the transaction that records
 * it: forks waiting for the snapshot (POST /sandboxes/{id}/fork) get their create_sandbox
 * operations, or end with the reason it failed; and retention: once a snapshot made with
 * `keep_last: N` is active, the older active snapshots of its sandbox beyond the newest N are
 * deleted as a DELETE would (registry and executors), with deleted_reason "retention". A
 * snapshot a lazily restored sandbox still reads (or a pending restore or rollback) is kept: it is
 * pruned by a later snapshot's retention once nothing reads it, since nothing a user can still
 * restore is deleted early.
 */
import type { Logger } from 'pino';
import { isLocalSnapshotRef, type RestoreMode } from '@cryo/snapshot';
import type { Clock } from '../clock';
import type { SnapshotRow } from '../store/snapshots';
import type { Stores } from '../store/stores';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';

export interface SnapshotFollowUpsDeps {
  queue: OperationQueue;
  metrics: Metrics;
  clock: Clock;
  logger: Logger;
  /** Wakes the reaper (on the replica that runs it) once the transaction commits. */
  onDeletionReady: (tx: Stores) => Promise<void>;
}

export class SnapshotFollowUps {
  constructor(private readonly deps: SnapshotFollowUpsDeps) {}

  /** The snapshot's push was recorded (it is active, unless it was deleted meanwhile). */
  async pushed(tx: Stores, snapshotId: string): Promise<void> {
    const snapshot = await tx.snapshots.get(snapshotId);
    if (snapshot === undefined) return;
    if (snapshot.status !== 'active') {
      await this.deleted(tx, snapshotId);
      return;
    }
    await this.release(tx, snapshot, 'eager');
    // A pre-copy snapshot is indexed in the same pass as its push: lazy forks start now too.
    if (snapshot.clip_index_ref !== null) await this.release(tx, snapshot, 'lazy');
    // A lazy fork reads through the clip index, which only a pushed registry image gets.
    if (snapshot.image_ref === null || isLocalSnapshotRef(snapshot.image_ref) || snapshot.digest === null) {
      await this.endWaiting(tx, snapshotId, 'lazy', `snapshot ${snapshotId} has no digest to build a clip index from; fork it with mode "eager"`);
    }
    if (snapshot.keep_last !== null) await this.retain(tx, snapshot, snapshot.keep_last);
  }

  /** The snapshot was deleted before it was ready: its waiting forks end. */
  async deleted(tx: Stores, snapshotId: string): Promise<void> {
    await this.endWaiting(tx, snapshotId, undefined, `snapshot ${snapshotId} was deleted before it was ready`);
  }

  /** The snapshot failed: its waiting forks end with its error. */
  async failed(tx: Stores, snapshotId: string, error: string): Promise<void> {
    await this.endWaiting(tx, snapshotId, undefined, `snapshot ${snapshotId} failed: ${error}`);
  }

  /** The clip index is there: lazy forks start. */
  async indexed(tx: Stores, snapshotId: string): Promise<void> {
    const snapshot = await tx.snapshots.get(snapshotId);
    if (snapshot?.status === 'active') await this.release(tx, snapshot, 'lazy');
    else await this.deleted(tx, snapshotId);
  }

  /** Indexing failed: lazy forks cannot start. */
  async indexFailed(tx: Stores, snapshotId: string, error: string): Promise<void> {
    await this.endWaiting(tx, snapshotId, 'lazy', `snapshot ${snapshotId} could not be indexed for a lazy restore: ${error}`);
  }

  /** Queues the create_sandbox of each fork of `mode` still pending, on the executor it was placed on. */
  private async release(tx: Stores, snapshot: SnapshotRow, mode: RestoreMode): Promise<void> {
    const { queue, clock } = this.deps;
    const imageRef = snapshot.image_ref;
    if (imageRef === null) return;
    for (const launch of await tx.launches.take(snapshot.id, mode)) {
      const sandbox = await tx.sandboxes.get(launch.sandboxId);
      if (sandbox?.status !== 'pending' || sandbox.executor_id === null) continue; // ended meanwhile
      await queue.enqueue(tx, 'create_sandbox', sandbox.executor_id, {
        ...launch.payload,
        image: imageRef,
        restore: { snapshot_id: snapshot.id, image_ref: imageRef, digest: snapshot.digest, clip_index_ref: snapshot.clip_index_ref, mode },
      }, { sandboxId: sandbox.id, snapshotId: snapshot.id });
      await tx.sandboxes.setPendingReason(sandbox.id, `waiting for executor ${sandbox.executor_id} to start the container`, clock.now());
    }
  }

  private async endWaiting(tx: Stores, snapshotId: string, mode: RestoreMode | undefined, reason: string): Promise<void> {
    const now = this.deps.clock.now();
    for (const launch of await tx.launches.take(snapshotId, mode)) {
      if (await tx.sandboxes.terminate(launch.sandboxId, { kind: 'failed', reason }, now)) {
        this.deps.logger.warn({ sandbox_id: launch.sandboxId, snapshot_id: snapshotId, reason }, 'fork ended before it started');
      }
    }
  }

  private async retain(tx: Stores, snapshot: SnapshotRow, keep: number): Promise<void> {
    const { clock, metrics, logger } = this.deps;
    const now = clock.now();
    const deleted: string[] = [];
    const kept: string[] = [];
    for (const old of await tx.snapshots.activeBeyondNewest(snapshot.sandbox_id, keep)) {
      if (old.created_at > snapshot.created_at) continue; // newer than the one that asked: not its to prune
      if (await tx.sandboxes.hasRestoresInUse(old.id)) {
        kept.push(old.id);
        continue;
      }
      if (await tx.snapshots.requestDelete(old.id, 'retention', now, ['active'])) deleted.push(old.id);
    }
    if (deleted.length > 0) {
      await this.deps.onDeletionReady(tx);
      tx.afterCommit(() => metrics.inc('cryo_snapshots_retained_out_total', deleted.length));
    }
    if (deleted.length > 0 || kept.length > 0) {
      tx.afterCommit(() => logger.info(
        { snapshot_id: snapshot.id, sandbox_id: snapshot.sandbox_id, keep_last: keep, deleted, kept_in_use: kept },
        'retention: older snapshots of the sandbox deleted',
      ));
    }
  }
}
