/**
 * Keeps the database from growing forever: terminated sandboxes, snapshots that are gone
 * (deleted, expired, or failed and checked), finished operations and reaper records are removed
 * once they are older than their retention period. Small batches, one transaction each.
 */
import type { Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import type { Metrics } from './metrics';

export interface PruneCounts {
  sandboxes: number;
  snapshots: number;
  operations: number;
  records: number;
}

export interface RetentionPrunerDeps {
  db: Database;
  metrics: Metrics;
  clock: Clock;
  config: ServerConfig;
}

const BATCH = 500;

export class RetentionPruner {
  constructor(private readonly deps: RetentionPrunerDeps) {}

  async runOnce(): Promise<PruneCounts> {
    const { clock, config } = this.deps;
    const { sandboxes, snapshots, operations, records } = this.deps.db.stores;
    const now = clock.now();
    const sandboxCutoff = now - config.sandboxes.retention_secs * 1000;
    const snapshotCutoff = now - config.snapshots.retention_secs * 1000;
    // Operations only matter while the things they were for are kept.
    const operationCutoff = Math.min(sandboxCutoff, snapshotCutoff);
    const counts: PruneCounts = {
      sandboxes: await this.drain((limit) => sandboxes.pruneTerminated(sandboxCutoff, limit)),
      snapshots: await this.drain((limit) => snapshots.pruneEnded(snapshotCutoff, limit)),
      operations: await this.drain((limit) => operations.pruneEnded(operationCutoff, limit)),
      records: await this.drain((limit) => records.pruneBefore(snapshotCutoff, limit)),
    };
    const total = counts.sandboxes + counts.snapshots + counts.operations + counts.records;
    if (total > 0) this.deps.metrics.inc('cryo_rows_pruned_total', total);
    return counts;
  }

  /** Each batch is one statement (its own transaction); deleting what is gone is idempotent. */
  private async drain(prune: (limit: number) => Promise<number>): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await prune(BATCH);
      total += n;
      if (n < BATCH) return total;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}
