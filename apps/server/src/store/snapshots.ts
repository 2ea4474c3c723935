import {
  ProgressSchema,
  SnapshotStatusSchema,
  TimingsSchema,
  type ListQuery,
  type Progress,
  type Snapshot,
  type SnapshotResult,
  type SnapshotStatus,
} from '@cryo/snapshot';
import { toIso, toIsoOrNull } from '../clock';
import type { Database } from '../db/database';
import { sqlStrings, statement } from '../db/statements';
import { decodeJson, decodeJsonOrNull, StringMapSchema } from './columns';
import { addListFilters, toPage, WhereClause, type Page } from './pagination';

export type DeleteReason = 'expired' | 'deleted';

export interface SnapshotRow {
  id: string;
  namespace: string;
  sandbox_id: string;
  executor_id: string | null;
  status: SnapshotStatus;
  error: string | null;
  tag: string;
  user_tag: number;
  labels: string;
  planned_ref: string;
  image_ref: string | null;
  digest: string | null;
  size_bytes: number | null;
  base_image: string;
  ttl_secs: number;
  created_at: number;
  expires_at: number | null;
  expired_at: number | null;
  deleted_at: number | null;
  failed_at: number | null;
  timings: string | null;
  progress: string | null;
  clip_index_ref: string | null;
  clip_error: string | null;
  delete_reason: DeleteReason | null;
  delete_requested_at: number | null;
  delete_attempts: number;
  next_attempt_at: number | null;
  last_delete_error: string | null;
  registry_cleared_at: number | null;
  local_cleanup_at: number | null;
  updated_at: number;
}

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
}

/** Snapshots that count against `max_per_namespace`: they hold, or will hold, storage. */
export const LIVE_SNAPSHOT_STATUSES: readonly SnapshotStatus[] = ['creating', 'active', 'deleting'];
const LIVE = sqlStrings(LIVE_SNAPSHOT_STATUSES);

const NO_TIMINGS = { pause_ms: null, commit_ms: null, push_ms: null, index_ms: null };

export function expiresAtFor(createdAt: number, ttlSecs: number): number | null {
  return ttlSecs === 0 ? null : createdAt + ttlSecs * 1000;
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
    progress: decodeJsonOrNull(ProgressSchema, row.progress, 'snapshots.progress'),
    clip_index_ref: row.clip_index_ref,
    clip_error: row.clip_error,
  };
}

export class SnapshotStore {
  constructor(private readonly db: Database) {}

  insert(s: NewSnapshot): void {
    statement(this.db, 
      `INSERT INTO snapshots (id, namespace, sandbox_id, executor_id, status, tag, user_tag, labels, planned_ref,
         base_image, ttl_secs, created_at, expires_at, updated_at)
       VALUES (?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      s.id, s.namespace, s.sandboxId, s.executorId, s.tag, s.userTag ? 1 : 0, JSON.stringify(s.labels),
      s.plannedRef, s.baseImage, s.ttlSecs, s.now, expiresAtFor(s.now, s.ttlSecs), s.now,
    );
  }

  get(id: string): SnapshotRow | undefined {
    return statement(this.db, 'SELECT * FROM snapshots WHERE id = ?').get(id) as SnapshotRow | undefined;
  }

  getInNamespace(namespace: string, id: string): SnapshotRow | undefined {
    return statement(this.db, 'SELECT * FROM snapshots WHERE id = ? AND namespace = ?').get(id, namespace) as
      | SnapshotRow
      | undefined;
  }

  list(namespace: string, query: ListQuery, sandboxId?: string): Page<Snapshot> {
    const where = new WhereClause().add('namespace = ?', namespace);
    if (sandboxId !== undefined) where.add('sandbox_id = ?', sandboxId);
    addListFilters(where, query, SnapshotStatusSchema.options);
    const rows = this.db
      .prepare(`SELECT * FROM snapshots ${where.toSql()} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .all(...where.params, query.limit + 1) as SnapshotRow[];
    return toPage(rows, query.limit, toSnapshotView);
  }

  countLive(namespace: string): number {
    const row = statement(this.db, 
      `SELECT COUNT(*) AS n FROM snapshots WHERE namespace = ? AND status IN (${LIVE})`,
    ).get(namespace) as { n: number };
    return row.n;
  }

  /** A tag still naming an image somewhere (or that may, until a failed push is cleaned up). */
  tagHolder(tag: string): SnapshotRow | undefined {
    return statement(this.db, 
      `SELECT * FROM snapshots WHERE tag = ?
          AND (status IN (${LIVE}) OR next_attempt_at IS NOT NULL)
        LIMIT 1`,
    ).get(tag) as SnapshotRow | undefined;
  }

  /** Records a pushed image. A snapshot deleted meanwhile stays `deleting`, now with a digest to delete. */
  recordPushed(id: string, result: SnapshotResult, now: number): void {
    statement(this.db, 
      `UPDATE snapshots SET
          status = CASE WHEN status = 'creating' THEN 'active' ELSE status END,
          image_ref = ?, digest = ?, size_bytes = ?, timings = ?,
          progress = NULL, error = NULL,
          next_attempt_at = CASE WHEN status = 'deleting' THEN ? ELSE next_attempt_at END,
          updated_at = ?
        WHERE id = ? AND status IN ('creating', 'deleting')`,
    ).run(
      result.image_ref, result.digest, result.size_bytes, JSON.stringify(result.timings), now, now, id,
    );
  }

  /** The clip index of an active snapshot was pushed: lazy restore becomes possible. */
  recordClipIndex(id: string, clipIndexRef: string, indexMs: number, now: number): void {
    statement(this.db,
      `UPDATE snapshots SET clip_index_ref = ?, clip_error = NULL,
          timings = json_set(COALESCE(timings, '{}'), '$.index_ms', ?), updated_at = ?
        WHERE id = ? AND status = 'active'`,
    ).run(clipIndexRef, indexMs, now, id);
  }

  /** Indexing failed: the snapshot stays restorable eagerly and says why lazy is unavailable. */
  recordClipError(id: string, error: string, now: number): void {
    statement(this.db, `UPDATE snapshots SET clip_error = ?, updated_at = ? WHERE id = ?`).run(error, now, id);
  }

  /**
   * A snapshot whose creation failed. `registryCleanup` schedules a check for a manifest that a
   * push of unknown outcome may have left behind (the executor vanished mid-push).
   */
  markFailed(id: string, error: string, registryCleanup: boolean, now: number): void {
    statement(this.db, 
      `UPDATE snapshots SET
          status = CASE WHEN status = 'creating' THEN 'failed' ELSE status END,
          error = CASE WHEN status = 'creating' THEN ? ELSE error END,
          failed_at = ?, progress = NULL,
          next_attempt_at = CASE WHEN ? THEN ? ELSE next_attempt_at END,
          updated_at = ?
        WHERE id = ? AND status IN ('creating', 'deleting')`,
    ).run(error, now, registryCleanup ? 1 : 0, now, now, id);
  }

  /** A snapshot deleted while creating whose push is known not to have happened. */
  wakeDeletion(id: string, now: number): void {
    statement(this.db, 
      `UPDATE snapshots SET next_attempt_at = ?, progress = NULL, updated_at = ? WHERE id = ? AND status = 'deleting'`,
    ).run(now, now, id);
  }

  updateProgress(id: string, progress: Progress, now: number): boolean {
    return statement(this.db, 
      `UPDATE snapshots SET progress = ?, updated_at = ? WHERE id = ? AND status IN ('creating', 'deleting')`,
    ).run(JSON.stringify(progress), now, id).changes === 1;
  }

  setTtl(id: string, ttlSecs: number, expiresAt: number | null, now: number): void {
    statement(this.db, 'UPDATE snapshots SET ttl_secs = ?, expires_at = ?, updated_at = ? WHERE id = ?')
      .run(ttlSecs, expiresAt, now, id);
  }

  /** Starts deleting a snapshot; returns false when it is already on its way out. */
  requestDelete(id: string, reason: DeleteReason, now: number): boolean {
    return statement(this.db, 
      `UPDATE snapshots SET status = 'deleting', delete_reason = ?, delete_requested_at = ?, next_attempt_at = ?,
              progress = CASE WHEN status = 'creating' THEN progress ELSE NULL END, updated_at = ?
        WHERE id = ? AND status IN ('creating', 'active', 'failed')`,
    ).run(reason, now, now, now, id).changes === 1;
  }

  /**
   * Moves up to `limit` active snapshots past their expiry to `deleting`, oldest deadline first.
   * Snapshots a pending or lazy restore still reads are left for a later pass.
   */
  expireDue(now: number, limit: number): string[] {
    const rows = statement(this.db, 
      `SELECT id FROM snapshots s
        WHERE status = 'active' AND expires_at IS NOT NULL AND expires_at <= ?
          AND NOT EXISTS (SELECT 1 FROM sandboxes b WHERE b.restored_from_snapshot = s.id
                            AND (b.status = 'pending' OR (b.restore_mode = 'lazy' AND b.status != 'terminated')))
        ORDER BY expires_at LIMIT ?`,
    ).all(now, limit) as Array<{ id: string }>;
    const ids = rows.map((r) => r.id);
    const mark = statement(this.db, 
      `UPDATE snapshots SET status = 'deleting', delete_reason = 'expired', delete_requested_at = ?,
              next_attempt_at = ?, updated_at = ? WHERE id = ? AND status = 'active'`,
    );
    for (const id of ids) mark.run(now, now, now, id);
    return ids;
  }

  /** Deleting snapshots due for another attempt, skipping those whose push is still in flight. */
  dueForDeletion(now: number, limit: number): SnapshotRow[] {
    return statement(this.db, 
      `SELECT * FROM snapshots s
        WHERE status = 'deleting' AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?
          AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.snapshot_id = s.id AND o.kind = 'snapshot'
                            AND o.state IN ('queued', 'leased'))
        ORDER BY next_attempt_at LIMIT ?`,
    ).all(now, limit) as SnapshotRow[];
  }

  /**
   * Ended snapshots whose push may still have reached the registry: the executor vanished
   * mid-push, or reported a push after the snapshot had already ended.
   */
  dueForOrphanCheck(now: number, limit: number): SnapshotRow[] {
    return statement(this.db, 
      `SELECT * FROM snapshots WHERE status IN ('failed', 'deleted', 'expired')
          AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?
        ORDER BY next_attempt_at LIMIT ?`,
    ).all(now, limit) as SnapshotRow[];
  }

  /** A push reported for a snapshot that has already ended: its manifest has to go too. */
  scheduleLateCleanup(id: string, digest: string | null, now: number): boolean {
    return statement(this.db, 
      `UPDATE snapshots SET digest = COALESCE(?, digest), registry_cleared_at = NULL, next_attempt_at = ?, updated_at = ?
        WHERE id = ? AND status IN ('failed', 'deleted', 'expired')`,
    ).run(digest, now, now, id).changes === 1;
  }

  recordDeleteError(id: string, error: string, nextAttemptAt: number, now: number): void {
    statement(this.db, 
      `UPDATE snapshots SET delete_attempts = delete_attempts + 1, last_delete_error = ?, next_attempt_at = ?,
              updated_at = ? WHERE id = ?`,
    ).run(error, nextAttemptAt, now, id);
  }

  markRegistryCleared(id: string, digest: string | null, now: number): void {
    statement(this.db, 
      `UPDATE snapshots SET registry_cleared_at = ?, digest = COALESCE(digest, ?), last_delete_error = NULL,
              next_attempt_at = CASE WHEN status IN ('failed', 'deleted', 'expired') THEN NULL ELSE next_attempt_at END,
              updated_at = ? WHERE id = ?`,
    ).run(now, digest, now, id);
  }

  markLocalCleanupRequested(id: string, now: number): void {
    statement(this.db, 'UPDATE snapshots SET local_cleanup_at = ?, updated_at = ? WHERE id = ?').run(now, now, id);
  }

  /** Postpones the next look at a deleting snapshot (waiting for executors to remove copies). */
  postpone(id: string, nextAttemptAt: number): void {
    statement(this.db, 'UPDATE snapshots SET next_attempt_at = ? WHERE id = ?').run(nextAttemptAt, id);
  }

  finish(id: string, reason: DeleteReason, now: number): boolean {
    const column = reason === 'expired' ? 'expired_at' : 'deleted_at';
    return statement(this.db, 
      `UPDATE snapshots SET status = ?, ${column} = ?, next_attempt_at = NULL, last_delete_error = NULL,
              progress = NULL, updated_at = ? WHERE id = ? AND status = 'deleting'`,
    ).run(reason, now, now, id).changes === 1;
  }

  /** Snapshots whose image is gone (or never existed) and that ended before `before`. */
  pruneEnded(before: number, limit: number): number {
    return statement(this.db, 
      `DELETE FROM snapshots WHERE id IN (
         SELECT id FROM snapshots
          WHERE status IN ('deleted', 'expired', 'failed') AND next_attempt_at IS NULL AND updated_at < ? LIMIT ?)`,
    ).run(before, limit).changes;
  }

  countByStatus(): Array<{ status: string; count: number }> {
    return statement(this.db, 'SELECT status, COUNT(*) AS count FROM snapshots GROUP BY status').all() as Array<{
      status: string;
      count: number;
    }>;
  }
}
