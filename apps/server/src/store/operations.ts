import { sql } from 'kysely';
import { OperationSchema, type Operation, type OperationKind, type OperationOf, type OperationResultOf } from '@cryo/snapshot';
import { toIso } from '../clock';
import { jsonSetKey, lit, lits } from './sql-dialect';
import { changedRows, type SqlContext } from './sql';
import type { OperationRow, OperationState } from '../db/schema';

export type { OperationRow, OperationState } from '../db/schema';

export type PayloadOf<K extends OperationKind> = OperationOf<K>['payload'];


/** A successful end carries the result of its kind, already checked (`parseOperationResult`). */
export type DoneEnd = { [K in OperationKind]: { state: 'done'; kind: K; result: OperationResultOf<K> } }[OperationKind];

export type OperationEnd =
  | DoneEnd
  | { state: 'failed'; code: string; message: string }
  | { state: 'cancelled'; message: string };

const OPEN: OperationState[] = ['queued', 'leased'];
const ENDED: OperationState[] = ['done', 'failed', 'cancelled'];

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

/** How an ended operation row ended; undefined while it is open. */
export function operationEnd(row: OperationRow): OperationEnd | undefined {
  switch (row.state) {
    case 'done':
      // Stored only after parseOperationResult checked it against the kind (operation-outcomes.ts).
      return { state: 'done', kind: row.kind, result: row.result === null ? null : JSON.parse(row.result) } as DoneEnd;
    case 'failed':
      return { state: 'failed', code: row.error_code ?? 'INTERNAL', message: row.error_message ?? '' };
    case 'cancelled':
      return { state: 'cancelled', message: row.error_message ?? '' };
    default:
      return undefined;
  }
}

export class OperationStore {
  constructor(private readonly ctx: SqlContext) {}

  async insert<K extends OperationKind>(
    id: string,
    kind: K,
    executorId: string,
    payload: PayloadOf<K>,
    refs: { sandboxId?: string | null; snapshotId?: string | null },
    now: number,
  ): Promise<void> {
    await this.ctx.db.insertInto('operations').values({
      id, kind, executor_id: executorId, sandbox_id: refs.sandboxId ?? null, snapshot_id: refs.snapshotId ?? null,
      payload: JSON.stringify(payload), state: 'queued', attempt: 0, created_at: now, updated_at: now,
    }).execute();
  }

  get(id: string): Promise<OperationRow | undefined> {
    return this.ctx.db.selectFrom('operations').selectAll().where('id', '=', id).executeTakeFirst();
  }

  /**
   * Leases up to `limit` queued operations of an executor, oldest first. Each lease is a
   * compare-and-set, so two replicas answering polls of the same executor never lease one twice.
   */
  async leaseQueued(executorId: string, now: number, leaseMs: (row: OperationRow) => number, limit: number): Promise<OperationRow[]> {
    const { db } = this.ctx;
    const rows = await db.selectFrom('operations').selectAll()
      .where('executor_id', '=', executorId).where('state', '=', lit('queued'))
      .orderBy('created_at').orderBy('id').limit(limit).execute();
    const leased: OperationRow[] = [];
    for (const row of rows) {
      const until = now + leaseMs(row);
      const result = await db.updateTable('operations')
        .set({ state: 'leased', attempt: sql`attempt + 1`, lease_expires_at: until, updated_at: now })
        .where('id', '=', row.id).where('state', '=', lit('queued'))
        .executeTakeFirst();
      if (changedRows(result) === 1) {
        leased.push({ ...row, state: 'leased', attempt: row.attempt + 1, lease_expires_at: until, updated_at: now });
      }
    }
    return leased;
  }

  expiredLeases(now: number, limit: number): Promise<OperationRow[]> {
    return this.ctx.db.selectFrom('operations').selectAll()
      .where('state', '=', lit('leased')).where('lease_expires_at', '<=', now)
      .orderBy('lease_expires_at').limit(limit).execute();
  }

  async requeue(id: string, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('operations')
      .set({ state: 'queued', lease_expires_at: null, updated_at: now })
      .where('id', '=', id).where('state', '=', lit('leased'))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  async extendLease(id: string, until: number, now: number): Promise<void> {
    await this.ctx.db.updateTable('operations')
      .set((eb) => ({
        lease_expires_at: eb.case().when(eb.fn.coalesce('lease_expires_at', eb.val(0)), '>', until)
          .then(eb.ref('lease_expires_at')).else(until).end(),
        updated_at: now,
      }))
      .where('id', '=', id).where('state', '=', lit('leased'))
      .execute();
  }

  /**
   * Ends an open operation; false when it had already ended (the caller then ignores whatever
   * made it try). Sandbox environments are dropped from finished payloads: they may hold secrets.
   */
  async finish(id: string, end: OperationEnd, now: number): Promise<boolean> {
    const { db, dialect } = this.ctx;
    const result = await db.updateTable('operations')
      .set((eb) => ({
        state: end.state,
        result: end.state === 'done' ? JSON.stringify(end.result) : null,
        error_code: end.state === 'failed' ? end.code : end.state === 'cancelled' ? 'CANCELLED' : null,
        error_message: end.state === 'done' ? null : end.message,
        lease_expires_at: null,
        payload: eb.case().when('kind', '=', 'create_sandbox').then(jsonSetKey(dialect, 'payload', 'env', {}))
          .else(eb.ref('payload')).end(),
        updated_at: now,
      }))
      .where('id', '=', id).where('state', 'in', lits(OPEN))
      .executeTakeFirst();
    return changedRows(result) === 1;
  }

  async reassign(id: string, executorId: string, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('operations').set({ executor_id: executorId, updated_at: now })
      .where('id', '=', id).where('state', '=', lit('queued')).executeTakeFirst();
    return changedRows(result) === 1;
  }

  openOnExecutor(executorId: string): Promise<OperationRow[]> {
    return this.ctx.db.selectFrom('operations').selectAll()
      .where('executor_id', '=', executorId).where('state', 'in', lits(OPEN))
      .orderBy('created_at').orderBy('id').execute();
  }

  openForSandbox(sandboxId: string, kind: OperationKind): Promise<OperationRow[]> {
    return this.ctx.db.selectFrom('operations').selectAll()
      .where('sandbox_id', '=', sandboxId).where('kind', '=', kind).where('state', 'in', lits(OPEN)).execute();
  }

  openForSnapshot(snapshotId: string, kind: OperationKind): Promise<OperationRow[]> {
    return this.ctx.db.selectFrom('operations').selectAll()
      .where('snapshot_id', '=', snapshotId).where('kind', '=', kind).where('state', 'in', lits(OPEN)).execute();
  }

  /** Every operation of a kind for a snapshot, open or ended. */
  allForSnapshot(snapshotId: string, kind: OperationKind): Promise<OperationRow[]> {
    return this.ctx.db.selectFrom('operations').selectAll()
      .where('snapshot_id', '=', snapshotId).where('kind', '=', kind).execute();
  }

  /** The newest operation of a kind for a snapshot on one executor: is it open, when did it last change? */
  async lastForSnapshotOnExecutor(
    snapshotId: string,
    kind: OperationKind,
    executorId: string,
  ): Promise<{ open: boolean; updatedAt: number } | undefined> {
    const row = await this.ctx.db.selectFrom('operations').select(['state', 'updated_at'])
      .where('snapshot_id', '=', snapshotId).where('kind', '=', kind).where('executor_id', '=', executorId)
      .orderBy('updated_at', 'desc').limit(1).executeTakeFirst();
    if (row === undefined) return undefined;
    return { open: row.state === 'queued' || row.state === 'leased', updatedAt: row.updated_at };
  }

  async pruneEnded(before: number, limit: number): Promise<number> {
    const { db } = this.ctx;
    const result = await db.deleteFrom('operations')
      .where('id', 'in', db.selectFrom('operations').select('id').where('state', 'in', lits(ENDED)).where('updated_at', '<', before).limit(limit))
      .executeTakeFirst();
    return changedRows(result);
  }
}
