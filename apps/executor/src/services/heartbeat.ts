/** Reports the executor's full observed state every few seconds; the answer says what should exist. */
import type { Logger } from 'pino';
import type { HeartbeatBody, HeartbeatResponse } from '@cryo/snapshot';
import type { ServerClient } from '../server-client';
import { PeriodicTask } from './periodic';

/** The part of the server the heartbeat talks to. */
export type HeartbeatServer = Pick<ServerClient, 'heartbeat'>;

export class HeartbeatService {
  private intervalMs = 3000;
  private readonly task: PeriodicTask;

  constructor(
    private readonly server: HeartbeatServer,
    private readonly observe: () => Promise<HeartbeatBody>,
    private readonly onResponse: (res: HeartbeatResponse) => Promise<void>,
    log: Logger,
  ) {
    this.task = new PeriodicTask(() => this.beat(), { intervalMs: () => this.intervalMs, runFirst: false, log, failure: 'heartbeat failed' });
  }

  /** Send one heartbeat now; used at start so the server knows the executor before it polls. */
  async beat(): Promise<HeartbeatResponse> {
    const res = await this.server.heartbeat(await this.observe());
    this.intervalMs = res.heartbeat_interval_ms;
    await this.onResponse(res);
    return res;
  }

  start(): void {
    this.task.start();
  }

  /** Send the next heartbeat right away (e.g. after a container changed state). */
  nudge(): void {
    this.task.nudge();
  }

  async stop(): Promise<void> {
    await this.task.stop();
  }
}
