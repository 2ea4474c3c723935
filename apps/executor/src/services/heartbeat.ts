/** Reports the executor's full observed state every few seconds; the answer says what should exist. */
import type { Logger } from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HeartbeatBody, HeartbeatResponse } from '@cryo/snapshot';
import type { ServerClient } from '../server-client';

/** The part of the server the heartbeat talks to. */
export type HeartbeatServer = Pick<ServerClient, 'heartbeat'>;

export class HeartbeatService {
  private stopped = false;
  private running: Promise<void> | undefined;
  private intervalMs = 3000;
  private wake: (() => void) | undefined;

  constructor(
    private readonly server: HeartbeatServer,
    private readonly observe: () => Promise<HeartbeatBody>,
    private readonly onResponse: (res: HeartbeatResponse) => Promise<void>,
    private readonly log: Logger,
  ) {}

  /** Send one heartbeat now; used at start so the server knows the executor before it polls. */
  async beat(): Promise<HeartbeatResponse> {
    const res = await this.server.heartbeat(await this.observe());
    this.intervalMs = res.heartbeat_interval_ms;
    await this.onResponse(res);
    return res;
  }

  start(): void {
    this.running = this.loop();
  }

  /** Send the next heartbeat right away (e.g. after a container changed state). */
  nudge(): void {
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await Promise.race([sleep(this.intervalMs), new Promise<void>((resolve) => { this.wake = resolve; })]);
      if (this.stopped) return;
      try {
        await this.beat();
      } catch (err) {
        this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'heartbeat failed');
      }
    }
  }
}
