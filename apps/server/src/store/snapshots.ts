import { z } from 'zod';
import {
  ExcludedMountSchema,
  ProgressSchema,
  SnapshotCaptureSchema,
  SnapshotStatusSchema,
  TimingsSchema,
  type Progress,
  type Snapshot,
  type SnapshotListQuery,
  type SnapshotResult,
  type SandboxStatus,
  type SnapshotStatus,
  type TtlFrom,
} from '@cryo/snapshot';
import { toIso, toIsoOrNull } from '../clock';
import { sql } from 'kysely';
import { decodeJson, decodeJsonOrNull, StringMapSchema } from './columns';
import { listFilters, toPage, type Page } from './pagination';
import { jsonSetKey, lit, lits } from './sql-dialect';
import { changedRows, type SqlContext } from './sql';
import type { DeleteReason, DeletedReason, OperationState, SnapshotRow } from '../db/schema';

export type { DeleteReason, DeletedReason, SnapshotRow } from '../db/schema';

export interface NewSnapshot {
  id: string;
  namespace: string;
  sandboxId: string;
  executorId: string;
  tag: string;
  userTag: boolean;
  labels: Record<string, string>;
  plannedRef: string;
  baseImage: string;
  ttlSecs: number;
  now: number;
  /** Default `created`. */
  ttlFrom?: TtlFrom;
  /** Retention (keep_last); default none. */
  keepLast?: number | null;
}

/** Snapshots that count against `max_per_namespace`: they hold, or will hold, storage. */
export const LIVE_SNAPSHOT_STATUSES: readonly SnapshotStatus[] = ['creating', 'active', 'deleting'];

const NO_TIMINGS = { pause_ms: null, commit_ms: null, push_ms: null, index_ms: null, precopy_ms: null, flatten_ms: null };
const ExcludedMountsSchema = z.array(ExcludedMountSchema);

export function expiresAtFor(createdAt: number, ttlSecs: number): number | null {
  return ttlSecs === 0 ? null : createdAt + ttlSecs * 1000;
}

/** When the TTL counts from: creation, or with ttl_from last_use the last use (creation until the first). */
export function ttlBase(row: Pick<SnapshotRow, 'ttl_from' | 'created_at' | 'last_used_at'>): number {
  return row.ttl_from === 'last_use' ? row.last_used_at ?? row.created_at : row.created_at;
}

/** The name a snapshot was given (`tag`), or null when it has only its generated image tag. */
export function userTag(row: Pick<SnapshotRow, 'tag' | 'user_tag'>): string | null {
  return row.user_tag === 1 ? row.tag : null;
}

export function toSnapshotView(row: SnapshotRow): Snapshot {
  return {
    snapshot_id: row.id,
    namespace: row.namespace,
    sandbox_id: row.sandbox_id,
    status: row.status,
    // While a deletion retries, the reason it has not finished is the error a user needs.
    error: row.error ?? (row.status === 'deleting' ? row.last_delete_error : null),
    tag: row.tag,
    labels: decodeJson(StringMapSchema, row.labels, 'snapshots.labels'),
    image_ref: row.image_ref,
    digest: row.digest,
    size_bytes: row.size_bytes,
    base_image: row.base_image,
    created_at: toIso(row.created_at),
    ttl_secs: row.ttl_secs,
    expires_at: toIsoOrNull(row.expires_at),
    expired_at: toIsoOrNull(row.expired_at),
    deleted_at: toIsoOrNull(row.deleted_at),
    executor_id: row.executor_id,
    timings: decodeJsonOrNull(TimingsSchema, row.timings, 'snapshots.timings') ?? NO_TIMINGS,
    layers: row.layers,
    flattened: row.flattened === 1,
    progress: decodeJsonOrNull(ProgressSchema, row.progress, 'snapshots.progress'),
    clip_index_ref: row.clip_index_ref,
    clip_error: row.clip_error,
    ttl_from: row.ttl_from,
    last_used_at: toIsoOrNull(row.last_used_at),
    keep_last: row.keep_last,
    deleted_reason: row.deleted_reason,
    capture: decodeJsonOrNull(SnapshotCaptureSchema, row.capture, 'snapshots.capture'),
    excluded_mounts: decodeJsonOrNull(ExcludedMountsSchema, row.excluded_mounts, 'snapshots.excluded_mounts') ?? [],
  };
}

const LIVE = [...LIVE_SNAPSHOT_STATUSES];
const ENDED: SnapshotStatus[] = ['failed', 'deleted', 'expired'];

export class SnapshotStore {
  constructor(private readonly ctx: SqlContext) {}

  /** Inserts a `creating` snapshot and returns its row. */
  insert(s: NewSnapshot): Promise<SnapshotRow> {
    return this.ctx.db.insertInto('snapshots').values({
      id: s.id, namespace: s.namespace, sandbox_id: s.sandboxId, executor_id: s.executorId, status: 'creating',
      tag: s.tag, user_tag: s.userTag ? 1 : 0, labels: JSON.stringify(s.labels), planned_ref: s.plannedRef,
      base_image: s.baseImage, ttl_secs: s.ttlSecs, created_at: s.now, expires_at: expiresAtFor(s.now, s.ttlSecs),
      delete_attempts: 0, flattened: 0, updated_at: s.now,
      ttl_from: s.ttlFrom ?? 'created', keep_last: s.keepLast ?? null,
    }).returningAll().executeTakeFirstOrThrow();
  }

  get(id: string): Promise<SnapshotRow | undefined> {
    return this.ctx.db.selectFrom('snapshots').selectAll().where('id', '=', id).executeTakeFirst();
  }

  getInNamespace(namespace: string, id: string): Promise<SnapshotRow | undefined> {
    return this.ctx.db.selectFrom('snapshots').selectAll().where('id', '=', id).where('namespace', '=', namespace).executeTakeFirst();
  }

  async list(namespace: string, query: SnapshotListQuery, sandboxId?: string): Promise<Page<Snapshot>> {
    let select = this.ctx.db.selectFrom('snapshots').selectAll().where('namespace', '=', namespace);
    if (sandboxId !== undefined) select = select.where('sandbox_id', '=', sandboxId);
    if (query.tag !== undefined) select = select.where('tag', '=', query.tag).where('user_tag', '=', 1);
    for (const condition of listFilters(this.ctx.dialect, query, SnapshotStatusSchema.options)) select = select.where(condition);
    const rows = await select.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(query.limit + 1).execute();
    return toPage(rows, query.limit, toSnapshotView);
  }

  async countLive(namespace: string): Promise<number> {
    const row = await this.ctx.db.selectFrom('snapshots').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('namespace', '=', namespace).where('status', 'in', lits(LIVE)).executeTakeFirst();
    return row?.n ?? 0;
  }

  /**
   * The creating or active snapshot of the namespace named `tag`, if any: a name is unique among
   * those (the unique index snapshots_live_tag holds it; this finds the holder for the message).
   * Image tags in the registry are generated from ids, so names never clash there.
   */
  tagHolder(namespace: string, tag: string): Promise<SnapshotRow | undefined> {
    return this.ctx.db.selectFrom('snapshots').selectAll()
      .where('namespace', '=', namespace).where('tag', '=', tag).where('user_tag', '=', 1)
      .where('status', 'in', lits<SnapshotStatus>(['creating', 'active']))
      .limit(1).executeTakeFirst();
  }

  /**
   * A restore, fork or rollback uses the snapshot now: `last_used_at` moves to `now` and, with
   * ttl_from last_use, `expires_at` to now + ttl. A compare-and-set on an active snapshot not past
   * its expiry: false when it expired (or went) meanwhile.
   */
  async touch(id: string, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('snapshots')
      .set((eb) => ({
        last_used_at: now,
        expires_at: eb.case()
          .when(eb.and([eb('ttl_from', '=', lit('last_use')), eb('ttl_secs', '>', 0)]))
          .then(sql<number>`${now} + ttl_secs * 1000`)
          .else(eb.ref('expires_at')).end(),
        updated_at: now,
      }))
      .where('id', '=', id).where('status', '=', lit('active'))
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  /** The active snapshots of a sandbox older than its newest `keep`, oldest last (retention, keep_last). */
  activeBeyondNewest(sandboxId: string, keep: number): Promise<SnapshotRow[]> {
    return this.ctx.db.selectFrom('snapshots').selectAll()
      .where('sandbox_id', '=', sandboxId).where('status', '=', lit('active'))
      .orderBy('created_at', 'desc').orderBy('id', 'desc')
      .limit(1_000_000).offset(keep)
      .execute();
  }

  /**
   * Records a pushed image (and its clip index, when the executor built it in the same pass). A
   * snapshot deleted meanwhile stays `deleting`, now with a digest (and index) to delete.
   */
  async recordPushed(id: string, result: SnapshotResult, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots')
      .set((eb) => ({
        status: eb.case().when('status', '=', 'creating').then(eb.val<SnapshotStatus>('active')).else(eb.ref('status')).end(),
        image_ref: result.image_ref, digest: result.digest, size_bytes: result.size_bytes, timings: JSON.stringify(result.timings),
        clip_index_ref: result.clip_index_ref === null ? eb.ref('clip_index_ref') : eb.val<string | null>(result.clip_index_ref),
        capture: result.capture === null ? null : JSON.stringify(result.capture),
        excluded_mounts: JSON.stringify(result.excluded_mounts),
        layers: result.layers, flattened: result.flattened ? 1 : 0,
        progress: null, error: null,
        next_attempt_at: eb.case().when('status', '=', 'deleting').then(eb.val<number | null>(now)).else(eb.ref('next_attempt_at')).end(),
        updated_at: now,
      }))
      .where('id', '=', id).where('status', 'in', lits<SnapshotStatus>(['creating', 'deleting']))
      .execute();
  }

  /** The clip index of an active snapshot was pushed: lazy restore becomes possible. */
  async recordClipIndex(id: string, clipIndexRef: string, indexMs: number, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots')
      .set({
        clip_index_ref: clipIndexRef, clip_error: null,
        timings: jsonSetKey(this.ctx.dialect, 'timings', 'index_ms', indexMs), updated_at: now,
      })
      .where('id', '=', id).where('status', '=', lit('active'))
      .execute();
  }

  /** Indexing failed: the snapshot stays restorable eagerly and says why lazy is unavailable. */
  async recordClipError(id: string, error: string, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots').set({ clip_error: error, updated_at: now }).where('id', '=', id).execute();
  }

  /**
   * A snapshot whose creation failed. `registryCleanup` schedules a check for a manifest that a
   * push of unknown outcome may have left behind (the executor vanished mid-push).
   */
  async markFailed(id: string, error: string, registryCleanup: boolean, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots')
      .set((eb) => ({
        status: eb.case().when('status', '=', 'creating').then(eb.val<SnapshotStatus>('failed')).else(eb.ref('status')).end(),
        error: eb.case().when('status', '=', 'creating').then(eb.val<string | null>(error)).else(eb.ref('error')).end(),
        failed_at: now,
        progress: null,
        ...(registryCleanup ? { next_attempt_at: now } : {}),
        updated_at: now,
      }))
      .where('id', '=', id).where('status', 'in', lits<SnapshotStatus>(['creating', 'deleting']))
      .execute();
  }

  /** A snapshot deleted while creating whose push is known not to have happened. */
  async wakeDeletion(id: string, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots').set({ next_attempt_at: now, progress: null, updated_at: now })
      .where('id', '=', id).where('status', '=', lit('deleting')).execute();
  }

  async updateProgress(id: string, progress: Progress, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('snapshots').set({ progress: JSON.stringify(progress), updated_at: now })
      .where('id', '=', id).where('status', 'in', lits<SnapshotStatus>(['creating', 'deleting'])).executeTakeFirst();
    return changedRows(result) === 1;
  }

  async setTtl(id: string, ttlSecs: number, expiresAt: number | null, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots').set({ ttl_secs: ttlSecs, expires_at: expiresAt, updated_at: now })
      .where('id', '=', id).execute();
  }

  /**
   * Starts deleting a snapshot (`deletedReason`: who asked, shown as deleted_reason); returns
   * false when it is already on its way out.
   */
  async requestDelete(id: string, deletedReason: DeletedReason, now: number, from: readonly SnapshotStatus[] = ['creating', 'active', 'failed']): Promise<boolean> {
    const result = await this.ctx.db.updateTable('snapshots')
      .set((eb) => ({
        status: 'deleting', delete_reason: 'deleted', deleted_reason: deletedReason, delete_requested_at: now, next_attempt_at: now,
        progress: eb.case().when('status', '=', 'creating').then(eb.ref('progress')).else(null).end(),
        updated_at: now,
      }))
      .where('id', '=', id).where('status', 'in', lits(from))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  /**
   * Moves up to `limit` active snapshots past their expiry to `deleting`, oldest deadline first,
   * and returns those this call moved (each move is a compare-and-set). Snapshots a pending or
   * lazy restore still reads are left for a later pass.
   */
  async expireDue(now: number, limit: number): Promise<string[]> {
    const { db } = this.ctx;
    const rows = await db.selectFrom('snapshots as s').select('s.id')
      .where('s.status', '=', lit('active')).where('s.expires_at', 'is not', null).where('s.expires_at', '<=', now)
      .where(({ not, exists, selectFrom }) => not(exists(
        selectFrom('sandboxes as b').select('b.id')
          .whereRef('b.restored_from_snapshot', '=', 's.id')
          .where((eb) => eb.or([
            eb('b.status', 'in', lits<SandboxStatus>(['pending', 'restoring'])),
            eb.and([eb('b.restore_mode', '=', lit('lazy')), eb('b.status', '!=', lit('terminated'))]),
          ])),
      )))
      .orderBy('s.expires_at').limit(limit).execute();
    if (rows.length === 0) return [];
    const moved = await db.updateTable('snapshots')
      .set({ status: 'deleting', delete_reason: 'expired', delete_requested_at: now, next_attempt_at: now, updated_at: now })
      .where('id', 'in', rows.map((r) => r.id)).where('status', '=', lit('active'))
      .returning('id')
      .execute();
    return moved.map((r) => r.id);
  }

  /** Deleting snapshots due for another attempt, skipping those whose push is still in flight. */
  dueForDeletion(now: number, limit: number): Promise<SnapshotRow[]> {
    return this.ctx.db.selectFrom('snapshots as s').selectAll('s')
      .where('s.status', '=', lit('deleting')).where('s.next_attempt_at', 'is not', null).where('s.next_attempt_at', '<=', now)
      .where(({ not, exists, selectFrom }) => not(exists(
        selectFrom('operations as o').select('o.id')
          .whereRef('o.snapshot_id', '=', 's.id').where('o.kind', '=', 'snapshot').where('o.state', 'in', lits<OperationState>(['queued', 'leased'])),
      )))
      .orderBy('s.next_attempt_at').limit(limit).execute();
  }

  /**
   * Ended snapshots whose push may still have reached the registry: the executor vanished
   * mid-push, or reported a push after the snapshot had already ended.
   */
  dueForOrphanCheck(now: number, limit: number): Promise<SnapshotRow[]> {
    return this.ctx.db.selectFrom('snapshots').selectAll()
      .where('status', 'in', lits(ENDED)).where('next_attempt_at', 'is not', null).where('next_attempt_at', '<=', now)
      .orderBy('next_attempt_at').limit(limit).execute();
  }

  /**
   * Claims a snapshot found due (its `next_attempt_at` unchanged since it was read) for
   * `untilMs`: the one replica whose claim succeeds talks to the registry, so no manifest is
   * deleted twice. A claimant that dies leaves the snapshot due again when the claim runs out.
   */
  async claim(row: Pick<SnapshotRow, 'id' | 'next_attempt_at'>, until: number): Promise<boolean> {
    if (row.next_attempt_at === null) return false;
    const result = await this.ctx.db.updateTable('snapshots').set({ next_attempt_at: until })
      .where('id', '=', row.id).where('next_attempt_at', '=', row.next_attempt_at).executeTakeFirst();
    return changedRows(result) === 1;
  }

  /** A push reported for a snapshot that has already ended: its manifest has to go too. */
  async scheduleLateCleanup(id: string, digest: string | null, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('snapshots')
      .set((eb) => ({
        digest: eb.fn.coalesce(eb.val(digest), eb.ref('digest')), registry_cleared_at: null, next_attempt_at: now, updated_at: now,
      }))
      .where('id', '=', id).where('status', 'in', lits(ENDED))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  async recordDeleteError(id: string, error: string, nextAttemptAt: number, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots')
      .set({ delete_attempts: sql`delete_attempts + 1`, last_delete_error: error, next_attempt_at: nextAttemptAt, updated_at: now })
      .where('id', '=', id).execute();
  }

  async markRegistryCleared(id: string, digest: string | null, now: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots')
      .set((eb) => ({
        registry_cleared_at: now,
        digest: eb.fn.coalesce(eb.ref('digest'), eb.val(digest)),
        last_delete_error: null,
        next_attempt_at: eb.case().when('status', 'in', ENDED).then(eb.val<number | null>(null)).else(eb.ref('next_attempt_at')).end(),
        updated_at: now,
      }))
      .where('id', '=', id).execute();
  }

  /** Compare-and-set: true only for the one call that asked executors to remove local copies. */
  async markLocalCleanupRequested(id: string, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('snapshots').set({ local_cleanup_at: now, updated_at: now })
      .where('id', '=', id).where('local_cleanup_at', 'is', null).executeTakeFirst();
    return changedRows(result) === 1;
  }

  /** Postpones the next look at a deleting snapshot (waiting for executors to remove copies). */
  async postpone(id: string, nextAttemptAt: number): Promise<void> {
    await this.ctx.db.updateTable('snapshots').set({ next_attempt_at: nextAttemptAt }).where('id', '=', id).execute();
  }

  async finish(id: string, reason: DeleteReason, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('snapshots')
      .set({
        status: reason, ...(reason === 'expired' ? { expired_at: now } : { deleted_at: now }),
        next_attempt_at: null, last_delete_error: null, progress: null, updated_at: now,
      })
      .where('id', '=', id).where('status', '=', lit('deleting'))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  /** Snapshots whose image is gone (or never existed) and that ended before `before`. */
  async pruneEnded(before: number, limit: number): Promise<number> {
    const { db } = this.ctx;
    const result = await db.deleteFrom('snapshots')
      .where('id', 'in', db.selectFrom('snapshots').select('id')
        .where('status', 'in', lits(ENDED)).where('next_attempt_at', 'is', null).where('updated_at', '<', before).limit(limit))
      .executeTakeFirst();
    return changedRows(result);
  }

  countByStatus(): Promise<Array<{ status: string; count: number }>> {
    return this.ctx.db.selectFrom('snapshots')
      .select((eb) => ['status', eb.fn.countAll<number>().as('count')])
      .groupBy('status').execute();
  }
}
