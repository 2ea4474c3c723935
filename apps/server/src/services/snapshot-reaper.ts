/**
 * Snapshot expiry and deletion. Every pass works from timestamps in the database (so a restart
 * loses nothing) in bounded batches, each in a short transaction, yielding to the event loop in
 * between so API requests keep flowing while thousands of snapshots expire at once.
 *
 * A snapshot on its way out is `deleting` until three things are true, in this order:
 * 1. its manifest (and clip index) is gone from the registry — deleted by digest, retried with
 *    backoff while the registry is unreachable; the snapshot is never reported gone before that;
 * 2. every executor holding a local copy was asked to remove it, and has answered (or was lost);
 * 3. then it becomes `expired` or `deleted`, with a reaper record of what was removed.
 *
 * It runs on one replica at a time (the elected one), and every step is a compare-and-set in SQL
 * besides: a snapshot is claimed before its manifest is deleted, so even two reapers at once
 * (a leader that lost its lease without noticing) delete each manifest once.
 */
import type { Logger } from 'pino';
import { formatImageReference, parseImageReference } from '@cryo/oci';
import { accessRecordTag, clipIndexTag, isLocalSnapshotRef, parseOperationResult } from '@cryo/snapshot';
import type { Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import { holdsSnapshotImage, type Executor } from '../store/executors';
import type { OperationRow } from '../store/operations';
import type { SnapshotRow } from '../store/snapshots';
import type { Stores } from '../store/stores';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';
import type { SnapshotImageRegistry } from './snapshot-registry';

export interface SnapshotReaperDeps {
  db: Database;
  queue: OperationQueue;
  /** Null when the server has no `snapshot_registry`: registry images then cannot be deleted. */
  registry: SnapshotImageRegistry | null;
  metrics: Metrics;
  clock: Clock;
  config: ServerConfig['snapshots'];
  logger: Logger;
}

export interface ReaperPass {
  markedExpired: number;
  finished: number;
  errors: number;
  waiting: number;
  orphansChecked: number;
}

/** Registry objects a snapshot may have: its image, and its clip index next to it. */
interface RegistryTarget {
  ref: string;
  digest: string | null;
}

/** How long a claimed snapshot stays with the replica deleting it before another may retry. */
const CLAIM_MS = 120_000;

export class SnapshotReaper {
  constructor(private readonly deps: SnapshotReaperDeps) {}

  async runOnce(): Promise<ReaperPass> {
    const pass: ReaperPass = { markedExpired: 0, finished: 0, errors: 0, waiting: 0, orphansChecked: 0 };
    const { db, clock, config } = this.deps;
    const { snapshots } = db.stores;
    const batch = config.reaper_batch_size;

    for (;;) {
      const ids = await db.transaction((tx) => tx.snapshots.expireDue(clock.now(), batch));
      pass.markedExpired += ids.length;
      if (ids.length > 0) this.deps.logger.info({ count: ids.length }, 'snapshots past their TTL; deleting');
      if (ids.length < batch) break;
      await yieldToEventLoop();
    }

    const seen = new Set<string>();
    for (;;) {
      const rows = (await snapshots.dueForDeletion(clock.now(), batch)).filter((r) => !seen.has(r.id));
      if (rows.length === 0) break;
      for (const row of rows) seen.add(row.id);
      const ready = await db.stores.executors.ready(); // once per batch: decoding heartbeats is not free
      await forEachConcurrently(rows, config.reaper_concurrency, async (row) => {
        if (!(await this.claim(row))) return; // another reaper has it
        const step = await this.advance(row, ready);
        if (step === 'finished') pass.finished += 1;
        else if (step === 'error') pass.errors += 1;
        else pass.waiting += 1;
      });
      await yieldToEventLoop();
    }

    const orphans = await snapshots.dueForOrphanCheck(clock.now(), batch);
    await forEachConcurrently(orphans, config.reaper_concurrency, async (row) => {
      if (!(await this.claim(row))) return;
      const cleared = await this.clearRegistry(row);
      if (cleared === null) {
        pass.errors += 1;
        return;
      }
      await this.deps.db.stores.snapshots.markRegistryCleared(row.id, cleared.digest, clock.now());
      pass.orphansChecked += 1;
    });
    return pass;
  }

  /**
   * Claims a due snapshot before its registry objects are deleted. Replicas share PostgreSQL; a
   * SQLite file has one server, whose reaper runs one pass at a time: nothing to claim from.
   */
  private claim(row: SnapshotRow): Promise<boolean> {
    if (this.deps.db.dialect === 'sqlite') return Promise.resolve(true);
    return this.deps.db.stores.snapshots.claim(row, this.deps.clock.now() + CLAIM_MS);
  }

  /** One step forward for a deleting snapshot. */
  private async advance(row: SnapshotRow, ready: Executor[]): Promise<'finished' | 'error' | 'waiting'> {
    const cleared = row.registry_cleared_at === null ? await this.clearRegistry(row) : 'before';
    if (cleared === null) return 'error';
    const { db, clock } = this.deps;
    return db.transaction(async (tx) => {
      const { snapshots, operations } = tx;
      const now = clock.now();
      // Recorded in the same transaction as the next step: one commit per snapshot.
      if (cleared !== 'before') await snapshots.markRegistryCleared(row.id, cleared.digest, now);
      const current = await snapshots.get(row.id);
      if (current === undefined || current.status !== 'deleting') return 'waiting' as const;
      if (current.local_cleanup_at === null && (await snapshots.markLocalCleanupRequested(current.id, now))) {
        await this.requestLocalRemoval(tx, current, ready);
      }
      const removals = await operations.allForSnapshot(current.id, 'delete_image');
      if (removals.some((op) => op.state === 'queued' || op.state === 'leased')) {
        // The delete_image results wake the reaper; the interval is only a fallback.
        await snapshots.postpone(current.id, now + this.deps.config.reaper_interval_secs * 1000);
        return 'waiting' as const;
      }
      const reason = current.delete_reason ?? 'deleted';
      if (!(await snapshots.finish(current.id, reason, now))) return 'waiting' as const;
      await this.record(tx, current, removals, reason, now);
      return 'finished' as const;
    });
  }

  /**
   * Deletes the snapshot's manifests from the registry; answers the image's digest for the caller
   * to record (markRegistryCleared), or null on failure: then the snapshot stays where it is, with
   * the error and a next attempt after exponential backoff.
   */
  private async clearRegistry(row: SnapshotRow): Promise<{ digest: string | null } | null> {
    const { metrics, clock, config } = this.deps;
    const { snapshots } = this.deps.db.stores;
    const log = this.deps.logger.child({ snapshot_id: row.id });
    const targets = registryTargets(row);
    let imageDigest: string | null = row.digest;
    try {
      for (const target of targets) {
        if (this.deps.registry === null) {
          throw new Error(
            `cannot delete ${target.ref}: the server has no snapshot_registry configured ` +
              '(add the same snapshot_registry block the executors use to the server config)',
          );
        }
        const digest = target.digest ?? (await this.deps.registry.resolveDigest(target.ref));
        if (digest === null) continue;
        const outcome = await this.deps.registry.deleteManifest(target.ref, digest);
        if (target.ref === (row.image_ref ?? row.planned_ref)) imageDigest = digest;
        log.info({ ref: target.ref, digest, outcome }, 'registry manifest removed');
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const delayMs = Math.min(
        config.delete_retry_max_secs * 1000,
        config.delete_retry_base_secs * 1000 * 2 ** Math.min(row.delete_attempts, 30),
      );
      await snapshots.recordDeleteError(row.id, message, clock.now() + delayMs, clock.now());
      metrics.inc('cryo_reaper_errors_total');
      log.warn({ error: message, retry_in_ms: delayMs, attempts: row.delete_attempts + 1 }, 'registry delete failed; will retry');
      return null;
    }
    return { digest: imageDigest };
  }

  /** Asks every ready executor that holds a copy (and the one that made it) to remove it. */
  private async requestLocalRemoval(tx: Stores, row: SnapshotRow, ready: Executor[]): Promise<void> {
    const refs = [...new Set([row.image_ref ?? row.planned_ref, row.planned_ref])];
    for (const executor of ready) {
      const holds = holdsSnapshotImage(executor, row.id, row.image_ref) || executor.id === row.executor_id;
      if (!holds) continue;
      const held = executor.images.filter((i) => i.snapshot_id === row.id).map((i) => i.ref);
      await this.deps.queue.enqueue(
        tx,
        'delete_image',
        executor.id,
        { snapshot_id: row.id, image_refs: [...new Set([...refs, ...held])] },
        { snapshotId: row.id },
      );
    }
  }

  private async record(tx: Stores, row: SnapshotRow, removals: OperationRow[], reason: 'expired' | 'deleted', now: number): Promise<void> {
    const { metrics } = this.deps;
    const removed = removals.flatMap((op) => {
      if (op.state !== 'done') return [];
      const parsed = op.result === null ? null : parseOperationResult('delete_image', JSON.parse(op.result));
      return parsed?.ok === true ? parsed.result.removed : [];
    });
    const inRegistry = registryTargets(row).length > 0;
    const bytes = row.size_bytes ?? 0;
    await tx.records.insert({
      snapshotId: row.id,
      namespace: row.namespace,
      action: reason,
      imageRef: row.image_ref,
      digest: row.digest,
      registryResult: inRegistry ? (row.digest === null ? 'not_found' : 'deleted') : 'none',
      localRemoved: removed,
      bytesReclaimed: bytes,
      attempts: row.delete_attempts + 1,
      at: now,
    });
    metrics.inc(reason === 'expired' ? 'cryo_snapshots_expired_total' : 'cryo_snapshots_deleted_total');
    metrics.inc('cryo_snapshot_bytes_reclaimed_total', bytes);
    this.deps.logger.info(
      { snapshot_id: row.id, digest: row.digest, local_removed: removed, bytes_reclaimed: bytes },
      `snapshot ${reason}`,
    );
  }
}

function registryTargets(row: SnapshotRow): RegistryTarget[] {
  const imageRef = row.image_ref ?? row.planned_ref;
  if (isLocalSnapshotRef(imageRef)) return [];
  const targets: RegistryTarget[] = [{ ref: imageRef, digest: row.digest }];
  if (row.clip_index_ref !== null) targets.push({ ref: row.clip_index_ref, digest: null });
  else if (row.image_ref === null) {
    // The image tag is the planned ref's (a user's `tag` is a name only, never an image tag).
    const planned = parseImageReference(row.planned_ref);
    const imageTag = planned.tag ?? row.tag;
    targets.push({ ref: formatImageReference({ host: planned.host, repository: planned.repository, tag: clipIndexTag(imageTag) }), digest: null });
  }
  // The access record a lazy start or a lazy snapshot may have pushed beside the image, named
  // after the image's tag (a user's `tag` is a name only) (none: skipped).
  const image = parseImageReference(imageRef);
  targets.push({ ref: formatImageReference({ host: image.host, repository: image.repository, tag: accessRecordTag(image.tag ?? row.tag) }), digest: null });
  return targets;
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function forEachConcurrently<T>(items: T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      if (item !== undefined) await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
