import { OperationSchema, type Operation, type OperationKind, type OperationOf, type OperationResultOf } from '@cryo/snapshot';
import { toIso } from '../clock';
import type { Database } from '../db/database';
import { statement } from '../db/statements';

export type OperationState = 'queued' | 'leased' | 'done' | 'failed' | 'cancelled';
export type PayloadOf<K extends OperationKind> = OperationOf<K>['payload'];

export interface OperationRow {
  id: string;
  kind: OperationKind;
  executor_id: string;
  sandbox_id: string | null;
  snapshot_id: string | null;
  payload: string;
  state: OperationState;
  attempt: number;
  lease_expires_at: number | null;
  result: string | null;
  error_code: string | null;
  error_message: string | null;
  created_at: number;
  updated_at: number;
}

/** A successful end carries the result of its kind, already checked (`parseOperationResult`). */
export type DoneEnd = { [K in OperationKind]: { state: 'done'; kind: K; result: OperationResultOf<K> } }[OperationKind];

export type OperationEnd =
  | DoneEnd
  | { state: 'failed'; code: string; message: string }
  | { state: 'cancelled'; message: string };

/** An operation as sent to an executor. The payload is re-checked against the protocol schema. */
export function toWireOperation(row: OperationRow): Operation {
  return OperationSchema.parse({
    op_id: row.id,
    attempt: row.attempt,
    lease_expires_at: toIso(row.lease_expires_at ?? row.updated_at),
    kind: row.kind,
    payload: JSON.parse(row.payload),
  });
}

export class OperationStore {
  constructor(private readonly db: Database) {}

  insert<K extends OperationKind>(
    id: string,
    kind: K,
    executorId: string,
    payload: PayloadOf<K>,
    refs: { sandboxId?: string | null; snapshotId?: string | null },
    now: number,
  ): void {
    statement(this.db, 
      `INSERT INTO operations (id, kind, executor_id, sandbox_id, snapshot_id, payload, state, attempt, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?)`,
    ).run(id, kind, executorId, refs.sandboxId ?? null, refs.snapshotId ?? null, JSON.stringify(payload), now, now);
  }

  get(id: string): OperationRow | undefined {
    return statement(this.db, 'SELECT * FROM operations WHERE id = ?').get(id) as OperationRow | undefined;
  }

  /** Leases up to `limit` queued operations of an executor, oldest first. */
  leaseQueued(executorId: string, now: number, leaseMs: (row: OperationRow) => number, limit: number): OperationRow[] {
    const rows = this.db
      .prepare(`SELECT * FROM operations WHERE executor_id = ? AND state = 'queued' ORDER BY created_at, id LIMIT ?`)
      .all(executorId, limit) as OperationRow[];
    const lease = statement(this.db, 
      `UPDATE operations SET state = 'leased', attempt = attempt + 1, lease_expires_at = ?, updated_at = ?
        WHERE id = ? AND state = 'queued'`,
    );
    const leased: OperationRow[] = [];
    for (const row of rows) {
      const until = now + leaseMs(row);
      if (lease.run(until, now, row.id).changes === 1) {
        leased.push({ ...row, state: 'leased', attempt: row.attempt + 1, lease_expires_at: until, updated_at: now });
      }
    }
    return leased;
  }

  expiredLeases(now: number, limit: number): OperationRow[] {
    return statement(this.db, 
      `SELECT * FROM operations WHERE state = 'leased' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?`,
    ).all(now, limit) as OperationRow[];
  }

  requeue(id: string, now: number): boolean {
    return statement(this.db, 
      `UPDATE operations SET state = 'queued', lease_expires_at = NULL, updated_at = ? WHERE id = ? AND state = 'leased'`,
    ).run(now, id).changes === 1;
  }

  extendLease(id: string, until: number, now: number): void {
    statement(this.db, 
      `UPDATE operations SET lease_expires_at = MAX(COALESCE(lease_expires_at, 0), ?), updated_at = ?
        WHERE id = ? AND state = 'leased'`,
    ).run(until, now, id);
  }

  /**
   * Ends an open operation; false when it had already ended (the caller then ignores whatever
   * made it try). Sandbox environments are dropped from finished payloads: they may hold secrets.
   */
  finish(id: string, end: OperationEnd, now: number): boolean {
    const result = end.state === 'done' ? JSON.stringify(end.result) : null;
    const code = end.state === 'failed' ? end.code : end.state === 'cancelled' ? 'CANCELLED' : null;
    const message = end.state === 'done' ? null : end.message;
    return statement(this.db, 
      `UPDATE operations SET state = ?, result = ?, error_code = ?, error_message = ?, lease_expires_at = NULL,
              payload = CASE WHEN kind = 'create_sandbox' THEN json_set(payload, '$.env', json('{}')) ELSE payload END,
              updated_at = ?
        WHERE id = ? AND state IN ('queued', 'leased')`,
    ).run(end.state, result, code, message, now, id).changes === 1;
  }

  reassign(id: string, executorId: string, now: number): boolean {
    return statement(this.db, 
      `UPDATE operations SET executor_id = ?, updated_at = ? WHERE id = ? AND state = 'queued'`,
    ).run(executorId, now, id).changes === 1;
  }

  openOnExecutor(executorId: string): OperationRow[] {
    return statement(this.db, 
      `SELECT * FROM operations WHERE executor_id = ? AND state IN ('queued', 'leased') ORDER BY created_at, id`,
    ).all(executorId) as OperationRow[];
  }

  openForSandbox(sandboxId: string, kind: OperationKind): OperationRow[] {
    return statement(this.db, 
      `SELECT * FROM operations WHERE sandbox_id = ? AND kind = ? AND state IN ('queued', 'leased')`,
    ).all(sandboxId, kind) as OperationRow[];
  }

  openForSnapshot(snapshotId: string, kind: OperationKind): OperationRow[] {
    return statement(this.db, 
      `SELECT * FROM operations WHERE snapshot_id = ? AND kind = ? AND state IN ('queued', 'leased')`,
    ).all(snapshotId, kind) as OperationRow[];
  }

  finishedForSnapshot(snapshotId: string, kind: OperationKind): OperationRow[] {
    return statement(this.db, 
      `SELECT * FROM operations WHERE snapshot_id = ? AND kind = ? AND state IN ('done', 'failed', 'cancelled')`,
    ).all(snapshotId, kind) as OperationRow[];
  }

  /** The newest operation of a kind for a snapshot on one executor: is it open, when did it last change? */
  lastForSnapshotOnExecutor(
    snapshotId: string,
    kind: OperationKind,
    executorId: string,
  ): { open: boolean; updatedAt: number } | undefined {
    const row = statement(this.db, 
      `SELECT state, updated_at FROM operations WHERE snapshot_id = ? AND kind = ? AND executor_id = ?
        ORDER BY updated_at DESC LIMIT 1`,
    ).get(snapshotId, kind, executorId) as { state: OperationState; updated_at: number } | undefined;
    if (row === undefined) return undefined;
    return { open: row.state === 'queued' || row.state === 'leased', updatedAt: row.updated_at };
  }

  pruneEnded(before: number, limit: number): number {
    return statement(this.db, 
      `DELETE FROM operations WHERE id IN (
         SELECT id FROM operations WHERE state IN ('done', 'failed', 'cancelled') AND updated_at < ? LIMIT ?)`,
    ).run(before, limit).changes;
  }
}
