import {
  OutcomeSchema,
  ResourcesSchema,
  RestoreModeSchema,
  SandboxStatusSchema,
  type ListQuery,
  type Outcome,
  type RestoreMode,
  type Sandbox,
  type SandboxListItem,
  type SandboxStatus,
} from '@cryo/snapshot';
import { toIsoOrNull, toIso } from '../clock';
import type { Database } from '../db/database';
import { sqlStrings, statement } from '../db/statements';
import { decodeJson, decodeJsonOrNull, StringListSchema, StringMapSchema } from './columns';
import { addListFilters, toPage, WhereClause, type Page } from './pagination';

export interface SandboxRow {
  id: string;
  namespace: string;
  image: string;
  base_image: string;
  command: string | null;
  labels: string;
  resources: string;
  timeout_secs: number;
  status: SandboxStatus;
  pending_reason: string | null;
  outcome_kind: Outcome['kind'] | null;
  outcome_reason: string | null;
  executor_id: string | null;
  pinned: number;
  container_id: string | null;
  restored_from_snapshot: string | null;
  restore_mode: RestoreMode | null;
  created_at: number;
  started_at: number | null;
  terminated_at: number | null;
  expires_at: number | null;
  updated_at: number;
}

export interface NewSandbox {
  id: string;
  namespace: string;
  image: string;
  baseImage: string;
  command: string[] | null;
  labels: Record<string, string>;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  timeoutSecs: number;
  executorId: string;
  pinned: boolean;
  pendingReason: string;
  restoredFromSnapshot: string | null;
  restoreMode: RestoreMode | null;
  now: number;
}

/** Sandboxes that occupy an executor. */
export const LIVE_SANDBOX_STATUSES: readonly SandboxStatus[] = ['pending', 'running', 'snapshotting'];
const LIVE = sqlStrings(LIVE_SANDBOX_STATUSES);

/** A sandbox as lists show it: `command` (up to 256 KiB) is neither decoded nor sent. */
export function toSandboxListItem(row: SandboxRow): SandboxListItem {
  const outcome = row.outcome_kind === null
    ? null
    : OutcomeSchema.parse(row.outcome_reason === null ? { kind: row.outcome_kind } : { kind: row.outcome_kind, reason: row.outcome_reason });
  return {
    sandbox_id: row.id,
    namespace: row.namespace,
    image: row.image,
    labels: decodeJson(StringMapSchema, row.labels, 'sandboxes.labels'),
    resources: decodeJson(ResourcesSchema, row.resources, 'sandboxes.resources'),
    timeout_secs: row.timeout_secs,
    status: row.status,
    pending_reason: row.pending_reason,
    outcome,
    executor_id: row.executor_id,
    restored_from_snapshot: row.restored_from_snapshot,
    restore_mode: row.restore_mode === null ? null : RestoreModeSchema.parse(row.restore_mode),
    created_at: toIso(row.created_at),
    started_at: toIsoOrNull(row.started_at),
    terminated_at: toIsoOrNull(row.terminated_at),
    expires_at: toIsoOrNull(row.expires_at),
  };
}

export function toSandboxView(row: SandboxRow): Sandbox {
  return { ...toSandboxListItem(row), command: decodeJsonOrNull(StringListSchema, row.command, 'sandboxes.command') };
}

export class SandboxStore {
  constructor(private readonly db: Database) {}

  insert(s: NewSandbox): void {
    statement(this.db, 
      `INSERT INTO sandboxes (id, namespace, image, base_image, command, labels, resources, timeout_secs, status,
         pending_reason, executor_id, pinned, restored_from_snapshot, restore_mode, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      s.id, s.namespace, s.image, s.baseImage, s.command === null ? null : JSON.stringify(s.command),
      JSON.stringify(s.labels), JSON.stringify(s.resources), s.timeoutSecs, s.pendingReason, s.executorId,
      s.pinned ? 1 : 0, s.restoredFromSnapshot, s.restoreMode, s.now, s.now,
    );
  }

  get(id: string): SandboxRow | undefined {
    return statement(this.db, 'SELECT * FROM sandboxes WHERE id = ?').get(id) as SandboxRow | undefined;
  }

  getInNamespace(namespace: string, id: string): SandboxRow | undefined {
    return statement(this.db, 'SELECT * FROM sandboxes WHERE id = ? AND namespace = ?').get(id, namespace) as
      | SandboxRow
      | undefined;
  }

  list(namespace: string, query: ListQuery): Page<SandboxListItem> {
    const where = new WhereClause().add('namespace = ?', namespace);
    addListFilters(where, query, SandboxStatusSchema.options);
    const rows = this.db
      .prepare(`SELECT * FROM sandboxes ${where.toSql()} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .all(...where.params, query.limit + 1) as SandboxRow[];
    return toPage(rows, query.limit, toSandboxListItem);
  }

  liveOnExecutor(executorId: string): SandboxRow[] {
    return this.db
      .prepare(`SELECT * FROM sandboxes WHERE executor_id = ? AND status IN (${LIVE})`)
      .all(executorId) as SandboxRow[];
  }

  /** Live sandboxes and the resources they reserve, per executor: what placement subtracts. */
  reservationsByExecutor(): Map<string, { sandboxes: number; cpus: number; memoryMb: number }> {
    const rows = this.db
      .prepare(
        `SELECT executor_id, COUNT(*) AS sandboxes,
                COALESCE(SUM(json_extract(resources, '$.cpus')), 0) AS cpus,
                COALESCE(SUM(json_extract(resources, '$.memory_mb')), 0) AS memory_mb
           FROM sandboxes WHERE status IN (${LIVE}) AND executor_id IS NOT NULL
          GROUP BY executor_id`,
      )
      .all() as Array<{ executor_id: string; sandboxes: number; cpus: number; memory_mb: number }>;
    return new Map(rows.map((r) => [r.executor_id, { sandboxes: r.sandboxes, cpus: r.cpus, memoryMb: r.memory_mb }]));
  }

  markRunning(id: string, containerId: string, now: number, expiresAt: number | null): boolean {
    return statement(this.db, 
      `UPDATE sandboxes SET status = 'running', pending_reason = NULL, container_id = ?, started_at = ?,
              expires_at = ?, updated_at = ?
        WHERE id = ? AND status = 'pending'`,
    ).run(containerId, now, expiresAt, now, id).changes === 1;
  }

  /** Moves a sandbox between running and snapshotting; false when it is no longer in `from`. */
  setStatus(id: string, from: SandboxStatus, to: SandboxStatus, now: number): boolean {
    return statement(this.db, 'UPDATE sandboxes SET status = ?, updated_at = ? WHERE id = ? AND status = ?')
      .run(to, now, id, from).changes === 1;
  }

  /** Ends a sandbox unless it has already ended; returns whether this call ended it. */
  terminate(id: string, outcome: Outcome, now: number): boolean {
    return statement(this.db, 
      `UPDATE sandboxes SET status = 'terminated', outcome_kind = ?, outcome_reason = ?, pending_reason = NULL,
              terminated_at = ?, updated_at = ?
        WHERE id = ? AND status != 'terminated'`,
    ).run(outcome.kind, outcome.reason ?? null, now, now, id).changes === 1;
  }

  reassign(id: string, executorId: string, pendingReason: string, now: number): void {
    statement(this.db, 
      `UPDATE sandboxes SET executor_id = ?, pending_reason = ?, updated_at = ? WHERE id = ? AND status = 'pending'`,
    ).run(executorId, pendingReason, now, id);
  }

  setPendingReason(id: string, reason: string, now: number): void {
    statement(this.db, `UPDATE sandboxes SET pending_reason = ?, updated_at = ? WHERE id = ? AND status = 'pending'`)
      .run(reason, now, id);
  }

  /** Running sandboxes whose timeout has passed. Snapshotting ones wait until their snapshot ends. */
  dueForTimeout(now: number, limit: number): SandboxRow[] {
    return this.db
      .prepare(`SELECT * FROM sandboxes WHERE status = 'running' AND expires_at IS NOT NULL AND expires_at <= ?
                ORDER BY expires_at LIMIT ?`)
      .all(now, limit) as SandboxRow[];
  }

  /** Is anything still reading this snapshot's image: a pending restore, or a lazily restored sandbox? */
  hasRestoresInUse(snapshotId: string): boolean {
    const row = statement(this.db, 
      `SELECT 1 FROM sandboxes WHERE restored_from_snapshot = ?
          AND (status = 'pending' OR (restore_mode = 'lazy' AND status != 'terminated')) LIMIT 1`,
    ).get(snapshotId);
    return row !== undefined;
  }

  /** Deletes terminated sandboxes that ended before `before`; returns how many. */
  pruneTerminated(before: number, limit: number): number {
    return statement(this.db, 
      `DELETE FROM sandboxes WHERE id IN (
         SELECT id FROM sandboxes WHERE status = 'terminated' AND terminated_at < ? LIMIT ?)`,
    ).run(before, limit).changes;
  }

  countByStatus(): Array<{ status: string; count: number }> {
    return statement(this.db, 'SELECT status, COUNT(*) AS count FROM sandboxes GROUP BY status').all() as Array<{
      status: string;
      count: number;
    }>;
  }
}
