/**
 * Moves observed state toward desired state: containers of sandboxes the server no longer wants
 * are removed, once they have been unwanted for a grace period (so a create still on its way to
 * the server is never raced).
 */
import type { Logger } from 'pino';
import type { ObservedSandbox } from '@cryo/snapshot';

export interface ReconcileTarget {
  observe(): Promise<ObservedSandbox[]>;
  remove(sandboxId: string): Promise<boolean>;
}

export class Reconciler {
  private readonly unwantedSince = new Map<string, number>();

  constructor(
    private readonly target: ReconcileTarget,
    private readonly busy: (sandboxId: string) => boolean,
    private readonly log: Logger,
    private readonly graceMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {}

  async reconcile(desired: readonly string[]): Promise<string[]> {
    const wanted = new Set(desired);
    const removed: string[] = [];
    const seen = new Set<string>();
    for (const sandbox of await this.target.observe()) {
      seen.add(sandbox.sandbox_id);
      if (wanted.has(sandbox.sandbox_id) || this.busy(sandbox.sandbox_id)) {
        this.unwantedSince.delete(sandbox.sandbox_id);
        continue;
      }
      const since = this.unwantedSince.get(sandbox.sandbox_id);
      if (since === undefined) {
        this.unwantedSince.set(sandbox.sandbox_id, this.now());
      } else if (this.now() - since >= this.graceMs) {
        this.log.info({ sandbox_id: sandbox.sandbox_id }, 'removing sandbox the server no longer wants');
        await this.target.remove(sandbox.sandbox_id);
        this.unwantedSince.delete(sandbox.sandbox_id);
        removed.push(sandbox.sandbox_id);
      }
    }
    for (const id of this.unwantedSince.keys()) if (!seen.has(id)) this.unwantedSince.delete(id);
    return removed;
  }
}
