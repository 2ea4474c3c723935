/**
 * Forks waiting for their snapshot (POST /sandboxes/{id}/fork): each sandbox is placed and
 * `pending` at once; its create_sandbox operation is queued when the snapshot becomes active
 * (for a lazy fork: when its clip index is there). The payload holds the fork's environment only
 * until then: the row goes when the operation is queued or the sandbox ends.
 */
import { OPERATIONS, type RestoreMode } from '@cryo/snapshot';
import type { PayloadOf } from './operations';
import { lit } from './sql-dialect';
import { changedRows, type SqlContext } from './sql';
import type { PendingLaunchRow } from '../db/schema';

export type { PendingLaunchRow } from '../db/schema';


/** A create_sandbox payload still without its restore (the snapshot's image is not pushed yet). */
export type LaunchPayload = Omit<PayloadOf<'create_sandbox'>, 'restore'>;

export interface PendingLaunch {
  sandboxId: string;
  snapshotId: string;
  mode: RestoreMode;
  payload: LaunchPayload;
}

const LaunchPayloadSchema = OPERATIONS.create_sandbox.payload.omit({ restore: true });

export class PendingLaunchStore {
  constructor(private readonly ctx: SqlContext) {}

  async insert(launch: PendingLaunch, now: number): Promise<void> {
    await this.ctx.db.insertInto('pending_launches').values({
      sandbox_id: launch.sandboxId, snapshot_id: launch.snapshotId, mode: launch.mode,
      payload: JSON.stringify(launch.payload), created_at: now,
    }).execute();
  }

  /**
   * Takes (deletes and returns) the launches waiting for `snapshotId`, only those of `mode` when
   * given, in the order they were made.
   */
  async take(snapshotId: string, mode?: RestoreMode): Promise<PendingLaunch[]> {
    let query = this.ctx.db.deleteFrom('pending_launches').where('snapshot_id', '=', snapshotId);
    if (mode !== undefined) query = query.where('mode', '=', lit(mode));
    const rows = await query.returningAll().execute();
    return rows.sort((a, b) => a.created_at - b.created_at || a.sandbox_id.localeCompare(b.sandbox_id)).map((row) => ({
      sandboxId: row.sandbox_id,
      snapshotId: row.snapshot_id,
      mode: row.mode,
      payload: LaunchPayloadSchema.parse(JSON.parse(row.payload)),
    }));
  }

  /** Drops the launch of a sandbox that ended before its snapshot was ready; true if there was one. */
  async drop(sandboxId: string): Promise<boolean> {
    const result = await this.ctx.db.deleteFrom('pending_launches').where('sandbox_id', '=', sandboxId).executeTakeFirst();
    return changedRows(result) === 1;
  }
}
