/**
 * Ends sandboxes whose `timeout_secs` has run out. The deadline (`expires_at`) was stored when the
 * sandbox started running, so it survives server and executor restarts. A sandbox in the middle
 * of a snapshot is ended once the snapshot finishes.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import type { Database } from '../db/database';
import type { SandboxStore } from '../store/sandboxes';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';

export class SandboxTimeouts {
  constructor(
    private readonly db: Database,
    private readonly sandboxes: SandboxStore,
    private readonly queue: OperationQueue,
    private readonly metrics: Metrics,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly batchSize = 200,
  ) {}

  runOnce(): number {
    return this.db.transaction(() => {
      const now = this.clock.now();
      let ended = 0;
      for (const sandbox of this.sandboxes.dueForTimeout(now, this.batchSize)) {
        const reason = `ran for its timeout_secs (${sandbox.timeout_secs})`;
        if (!this.sandboxes.terminate(sandbox.id, { kind: 'timeout', reason }, now)) continue;
        if (sandbox.executor_id !== null) {
          this.queue.enqueue('delete_sandbox', sandbox.executor_id, { sandbox_id: sandbox.id }, { sandboxId: sandbox.id });
        }
        this.metrics.inc('cryo_sandboxes_timed_out_total');
        this.logger.info({ sandbox_id: sandbox.id, timeout_secs: sandbox.timeout_secs }, 'sandbox timed out');
        ended += 1;
      }
      return ended;
    })();
  }
}
