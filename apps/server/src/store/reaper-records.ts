import type { Database } from '../db/database';
import { statement } from '../db/statements';

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
  constructor(private readonly db: Database) {}

  insert(r: ReaperRecord): void {
    statement(this.db, 
      `INSERT INTO reaper_records (snapshot_id, namespace, action, image_ref, digest, registry_result, local_removed,
         bytes_reclaimed, attempts, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      r.snapshotId, r.namespace, r.action, r.imageRef, r.digest, r.registryResult, JSON.stringify(r.localRemoved),
      r.bytesReclaimed, r.attempts, r.at,
    );
  }

  forSnapshot(snapshotId: string): Array<{ action: string; registry_result: string; local_removed: string; digest: string | null }> {
    return this.db
      .prepare('SELECT action, registry_result, local_removed, digest FROM reaper_records WHERE snapshot_id = ? ORDER BY seq')
      .all(snapshotId) as Array<{ action: string; registry_result: string; local_removed: string; digest: string | null }>;
  }

  pruneBefore(before: number, limit: number): number {
    return statement(this.db, 
      'DELETE FROM reaper_records WHERE seq IN (SELECT seq FROM reaper_records WHERE at < ? LIMIT ?)',
    ).run(before, limit).changes;
  }
}
