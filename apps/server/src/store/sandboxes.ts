import {
  OutcomeSchema,
  ProgressSchema,
  ResourcesSchema,
  RestoreModeSchema,
  SandboxStatusSchema,
  type ListQuery,
  type Outcome,
  type Progress,
  type RestoreMode,
  type Sandbox,
  type SandboxListItem,
  type SandboxStatus,
} from '@cryo/snapshot';
import { toIsoOrNull, toIso } from '../clock';
import { decodeJson, decodeJsonOrNull, StringListSchema, StringMapSchema } from './columns';
import { listFilters, toPage, type Page } from './pagination';
import { jsonNumberSum, lit, lits } from './sql-dialect';
import { changedRows, type SqlContext } from './sql';
import type { SandboxRow } from '../db/schema';

export type { SandboxRow } from '../db/schema';

export interface NewSandbox {
  id: string;
  namespace: string;
  image: string;
  baseImage: string;
  command: string[] | null;
  labels: Record<string, string>;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  timeoutSecs: number;
  /** Null for a fork no executor could take (it is ended at once). */
  executorId: string | null;
  pinned: boolean;
  pendingReason: string;
  restoredFromSnapshot: string | null;
  restoreMode: RestoreMode | null;
  now: number;
}

/** Sandboxes that occupy an executor. */
export const LIVE_SANDBOX_STATUSES: readonly SandboxStatus[] = ['pending', 'running', 'snapshotting', 'restoring'];

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
    progress: row.status === 'pending' || row.status === 'restoring' ? decodeJsonOrNull(ProgressSchema, row.progress, 'sandboxes.progress') : null,
    created_at: toIso(row.created_at),
    started_at: toIsoOrNull(row.started_at),
    terminated_at: toIsoOrNull(row.terminated_at),
    expires_at: toIsoOrNull(row.expires_at),
  };
}

export function toSandboxView(row: SandboxRow): Sandbox {
  return { ...toSandboxListItem(row), command: decodeJsonOrNull(StringListSchema, row.command, 'sandboxes.command') };
}

const LIVE = [...LIVE_SANDBOX_STATUSES];

export class SandboxStore {
  constructor(private readonly ctx: SqlContext) {}

  async insert(s: NewSandbox): Promise<void> {
    await this.ctx.db.insertInto('sandboxes').values({
      id: s.id,
      namespace: s.namespace,
      image: s.image,
      base_image: s.baseImage,
      command: s.command === null ? null : JSON.stringify(s.command),
      labels: JSON.stringify(s.labels),
      resources: JSON.stringify(s.resources),
      timeout_secs: s.timeoutSecs,
      status: 'pending',
      pending_reason: s.pendingReason,
      executor_id: s.executorId,
      pinned: s.pinned ? 1 : 0,
      restored_from_snapshot: s.restoredFromSnapshot,
      restore_mode: s.restoreMode,
      created_at: s.now,
      updated_at: s.now,
    }).execute();
  }

  get(id: string): Promise<SandboxRow | undefined> {
    return this.ctx.db.selectFrom('sandboxes').selectAll().where('id', '=', id).executeTakeFirst();
  }

  getInNamespace(namespace: string, id: string): Promise<SandboxRow | undefined> {
    return this.ctx.db.selectFrom('sandboxes').selectAll().where('id', '=', id).where('namespace', '=', namespace).executeTakeFirst();
  }

  async list(namespace: string, query: ListQuery): Promise<Page<SandboxListItem>> {
    let select = this.ctx.db.selectFrom('sandboxes').selectAll().where('namespace', '=', namespace);
    for (const condition of listFilters(this.ctx.dialect, query, SandboxStatusSchema.options)) select = select.where(condition);
    const rows = await select.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(query.limit + 1).execute();
    return toPage(rows, query.limit, toSandboxListItem);
  }

  liveOnExecutor(executorId: string): Promise<SandboxRow[]> {
    return this.ctx.db.selectFrom('sandboxes').selectAll()
      .where('executor_id', '=', executorId).where('status', 'in', lits(LIVE)).execute();
  }

  /** Live sandboxes and the resources they reserve, per executor: what placement subtracts. */
  async reservationsByExecutor(): Promise<Map<string, { sandboxes: number; cpus: number; memoryMb: number }>> {
    const { dialect } = this.ctx;
    const rows = await this.ctx.db.selectFrom('sandboxes')
      .select((eb) => [
        'executor_id',
        eb.fn.countAll<number>().as('sandboxes'),
        jsonNumberSum(dialect, 'resources', 'cpus').as('cpus'),
        jsonNumberSum(dialect, 'resources', 'memory_mb').as('memory_mb'),
      ])
      .where('status', 'in', lits(LIVE)).where('executor_id', 'is not', null)
      .groupBy('executor_id')
      .execute();
    const out = new Map<string, { sandboxes: number; cpus: number; memoryMb: number }>();
    for (const r of rows) {
      if (r.executor_id !== null) out.set(r.executor_id, { sandboxes: r.sandboxes, cpus: r.cpus, memoryMb: r.memory_mb });
    }
    return out;
  }

  async markRunning(id: string, containerId: string, now: number, expiresAt: number | null): Promise<boolean> {
    const result = await this.ctx.db.updateTable('sandboxes')
      .set({ status: 'running', pending_reason: null, progress: null, container_id: containerId, started_at: now, expires_at: expiresAt, updated_at: now })
      .where('id', '=', id).where('status', '=', lit('pending'))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  /**
   * Compare-and-set running -> snapshotting for a sandbox with an executor; the row after the
   * move, or undefined when the sandbox is missing or not running.
   */
  beginSnapshot(namespace: string, id: string, now: number): Promise<SandboxRow | undefined> {
    return this.ctx.db.updateTable('sandboxes').set({ status: 'snapshotting', updated_at: now })
      .where('id', '=', id).where('namespace', '=', namespace).where('status', '=', lit('running')).where('executor_id', 'is not', null)
      .returningAll()
      .executeTakeFirst();
  }

  /**
   * Compare-and-set running -> restoring for a rollback in place: the sandbox now reads from
   * `snapshot` (so the reaper keeps that snapshot while the rollback or a lazy sandbox needs it).
   * The row after the move, or undefined when the sandbox is missing or not running.
   */
  beginRollback(
    namespace: string,
    id: string,
    snapshot: { id: string; imageRef: string; baseImage: string; mode: RestoreMode },
    reason: string,
    now: number,
  ): Promise<SandboxRow | undefined> {
    return this.ctx.db.updateTable('sandboxes')
      .set({
        status: 'restoring', restored_from_snapshot: snapshot.id, restore_mode: snapshot.mode, image: snapshot.imageRef,
        base_image: snapshot.baseImage, pending_reason: reason, progress: null, updated_at: now,
      })
      .where('id', '=', id).where('namespace', '=', namespace).where('status', '=', lit('running')).where('executor_id', 'is not', null)
      .returningAll()
      .executeTakeFirst();
  }

  /** Compare-and-set restoring -> running: the rollback's container runs. Timeout and expiry stay. */
  async finishRollback(id: string, containerId: string, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('sandboxes')
      .set({ status: 'running', container_id: containerId, pending_reason: null, progress: null, restored_at: now, updated_at: now })
      .where('id', '=', id).where('status', '=', lit('restoring'))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  /** Moves a sandbox between running and snapshotting; false when it is no longer in `from`. */
  async setStatus(id: string, from: SandboxStatus, to: SandboxStatus, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('sandboxes').set({ status: to, updated_at: now })
      .where('id', '=', id).where('status', '=', lit(from)).executeTakeFirst();
    return changedRows(result) === 1;
  }

  /** Ends a sandbox unless it has already ended; returns whether this call ended it. */
  async terminate(id: string, outcome: Outcome, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('sandboxes')
      .set({
        status: 'terminated', outcome_kind: outcome.kind, outcome_reason: outcome.reason ?? null, pending_reason: null,
        terminated_at: now, updated_at: now,
      })
      .where('id', '=', id).where('status', '!=', lit('terminated'))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  async reassign(id: string, executorId: string, pendingReason: string, now: number): Promise<void> {
    await this.ctx.db.updateTable('sandboxes').set({ executor_id: executorId, pending_reason: pendingReason, updated_at: now })
      .where('id', '=', id).where('status', '=', lit('pending')).execute();
  }

  /** The executor's progress on the restore of a pending (or restoring) sandbox; false when it is neither any more. */
  async updateProgress(id: string, progress: Progress, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('sandboxes').set({ progress: JSON.stringify(progress), updated_at: now })
      .where('id', '=', id).where('status', 'in', lits<SandboxStatus>(['pending', 'restoring']))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  async setPendingReason(id: string, reason: string, now: number): Promise<void> {
    await this.ctx.db.updateTable('sandboxes').set({ pending_reason: reason, updated_at: now })
      .where('id', '=', id).where('status', '=', lit('pending')).execute();
  }

  /** Running sandboxes whose timeout has passed. Snapshotting ones wait until their snapshot ends. */
  dueForTimeout(now: number, limit: number): Promise<SandboxRow[]> {
    return this.ctx.db.selectFrom('sandboxes').selectAll()
      .where('status', '=', lit('running')).where('expires_at', 'is not', null).where('expires_at', '<=', now)
      .orderBy('expires_at').limit(limit).execute();
  }

  /** Is anything still reading this snapshot's image: a pending restore, or a lazily restored sandbox? */
  async hasRestoresInUse(snapshotId: string): Promise<boolean> {
    const row = await this.ctx.db.selectFrom('sandboxes').select('id')
      .where('restored_from_snapshot', '=', snapshotId)
      .where((eb) => eb.or([
        eb('status', 'in', lits<SandboxStatus>(['pending', 'restoring'])),
        eb.and([eb('restore_mode', '=', lit('lazy')), eb('status', '!=', lit('terminated'))]),
      ]))
      .limit(1).executeTakeFirst();
    return row !== undefined;
  }

  /** Deletes terminated sandboxes that ended before `before`; returns how many. */
  async pruneTerminated(before: number, limit: number): Promise<number> {
    const { db } = this.ctx;
    const result = await db.deleteFrom('sandboxes')
      .where('id', 'in', db.selectFrom('sandboxes').select('id')
        .where('status', '=', lit('terminated')).where('terminated_at', '<', before).limit(limit))
      .executeTakeFirst();
    return changedRows(result);
  }

  countByStatus(): Promise<Array<{ status: string; count: number }>> {
    return this.ctx.db.selectFrom('sandboxes')
      .select((eb) => ['status', eb.fn.countAll<number>().as('count')])
      .groupBy('status').execute();
  }
}
