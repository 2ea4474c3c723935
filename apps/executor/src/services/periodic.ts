/**
 * A task run every `intervalMs()` ms until stopped, the executor's background loops' one shape: a
 * failed run is logged and the loop goes on; `nudge()` runs it at once; `stop()` waits for the
 * run under way. `runFirst`: run before the first wait (else wait first).
 */
import type { Logger } from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';

export class PeriodicTask {
  private stopped = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly run: () => Promise<unknown>,
    private readonly opts: { intervalMs: () => number; runFirst: boolean; log: Logger; failure: string; context?: Record<string, unknown> },
  ) {}

  start(): void {
    this.running = this.loop();
  }

  nudge(): void {
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    let first = true;
    while (!this.stopped) {
      if (!first || !this.opts.runFirst) {
        await Promise.race([sleep(this.opts.intervalMs()), new Promise<void>((resolve) => { this.wake = resolve; })]);
        if (this.stopped) return;
      }
      first = false;
      try {
        await this.run();
      } catch (err) {
        this.opts.log.warn({ err: err instanceof Error ? err.message : String(err), ...this.opts.context }, this.opts.failure);
      }
    }
  }
}
