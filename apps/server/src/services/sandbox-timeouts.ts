/**
 * Ends sandboxes whose `timeout_secs` has run out. The deadline (`expires_at`) was stored when the
 * sandbox started running, so it survives server and executor restarts. A sandbox in the middle
 * of a snapshot is ended once the snapshot finishes.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import type { Database } from '../db/database';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';

export class SandboxTimeouts {
  constructor(
    private readonly db: Database,
    private readonly queue: OperationQueue,
    private readonly metrics: Metrics,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly batchSize = 200,
  ) {}

  async runOnce(): Promise<number> {
    return this.db.transaction(async (tx) => {
      const now = this.clock.now();
      let ended = 0;
      for (const sandbox of await tx.sandboxes.dueForTimeout(now, this.batchSize)) {
        const reason = `ran for its timeout_secs (${sandbox.timeout_secs})`;
        // Compare-and-set: a sandbox ended meanwhile (by a user, on another replica) is skipped.
        if (!(await tx.sandboxes.terminate(sandbox.id, { kind: 'timeout', reason }, now))) continue;
        if (sandbox.executor_id !== null) {
          await this.queue.enqueue(tx, 'delete_sandbox', sandbox.executor_id, { sandbox_id: sandbox.id }, { sandboxId: sandbox.id });
        }
        this.metrics.inc('cryo_sandboxes_timed_out_total');
        this.logger.info({ sandbox_id: sandbox.id, timeout_secs: sandbox.timeout_secs }, 'sandbox timed out');
        ended += 1;
      }
      return ended;
    });
  }
}
