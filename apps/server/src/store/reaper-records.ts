import type { SqlContext } from './sql';
import { changedRows } from './sql';

/** What the reaper removed for one snapshot: the audit trail of expiry and deletion. */
export interface ReaperRecord {
  snapshotId: string;
  namespace: string;
  action: 'expired' | 'deleted';
  imageRef: string | null;
  digest: string | null;
  /** `deleted`, `not_found` (already gone), or `none` (never in a registry). */
  registryResult: 'deleted' | 'not_found' | 'none';
  localRemoved: string[];
  bytesReclaimed: number;
  attempts: number;
  at: number;
}

export class ReaperRecordStore {
  constructor(private readonly ctx: SqlContext) {}

  async insert(r: ReaperRecord): Promise<void> {
    await this.ctx.db.insertInto('reaper_records').values({
      snapshot_id: r.snapshotId,
      namespace: r.namespace,
      action: r.action,
      image_ref: r.imageRef,
      digest: r.digest,
      registry_result: r.registryResult,
      local_removed: JSON.stringify(r.localRemoved),
      bytes_reclaimed: r.bytesReclaimed,
      attempts: r.attempts,
      at: r.at,
    }).execute();
  }

  forSnapshot(snapshotId: string): Promise<Array<{ action: string; registry_result: string; local_removed: string; digest: string | null }>> {
    return this.ctx.db.selectFrom('reaper_records')
      .select(['action', 'registry_result', 'local_removed', 'digest'])
      .where('snapshot_id', '=', snapshotId)
      .orderBy('seq')
      .execute();
  }

  async pruneBefore(before: number, limit: number): Promise<number> {
    const { db } = this.ctx;
    const result = await db.deleteFrom('reaper_records')
      .where('seq', 'in', db.selectFrom('reaper_records').select('seq').where('at', '<', before).limit(limit))
      .executeTakeFirst();
    return changedRows(result);
  }
}
