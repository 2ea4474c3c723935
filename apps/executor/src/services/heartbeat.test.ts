import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { HeartbeatBody, HeartbeatResponse } from '@cryo/snapshot';
import { ServerError } from '../server-client';
import { until } from '../testing/until';
import { HeartbeatService, type HeartbeatServer } from './heartbeat';

const log = pino({ level: 'silent' });

function body(n: number): HeartbeatBody {
  return {
    host: 'h', version: 'test', labels: {}, capacity: { cpus: 1, memory_mb: 1024, max_sandboxes: 1 },
    capabilities: { lazy: false, lazy_unavailable_reason: 'test' }, registry: null, sandboxes: [], images: [{ ref: `img-${n}`, snapshot_id: null, size_bytes: 1 }],
  };
}

class FakeServer implements HeartbeatServer {
  readonly beats: HeartbeatBody[] = [];
  failNext = 0;
  constructor(private readonly intervalMs: number) {}
  async heartbeat(sent: HeartbeatBody): Promise<HeartbeatResponse> {
    if (this.failNext > 0) {
      this.failNext--;
      throw new ServerError('cannot reach cryo server (ECONNREFUSED)', undefined);
    }
    this.beats.push(sent);
    return { executor_id: 'e', heartbeat_interval_ms: this.intervalMs, desired_sandboxes: [`sbx-${this.beats.length}`] };
  }
}


describe('HeartbeatService', () => {
  it('sends the observed state and hands the answer (desired sandboxes) on', async () => {
    const server = new FakeServer(3000);
    let observed = 0;
    const answers: string[][] = [];
    const service = new HeartbeatService(server, async () => body(++observed), async (res) => { answers.push(res.desired_sandboxes); }, log);
    const res = await service.beat();
    expect(res.desired_sandboxes).toEqual(['sbx-1']);
    expect(server.beats).toEqual([body(1)]);
    expect(answers).toEqual([['sbx-1']]);
  });

  it('beats at the interval the server asks for, at once when nudged, and survives failures', async () => {
    const server = new FakeServer(60_000);
    let observed = 0;
    const service = new HeartbeatService(server, async () => body(++observed), async () => undefined, log);
    await service.beat(); // the server now asks for one beat a minute
    service.start();
    try {
      service.nudge();
      await until('the nudged beat', () => server.beats.length === 2);
      server.failNext = 1;
      service.nudge();
      await until('the failed beat', () => server.failNext === 0);
      service.nudge();
      await until('a beat after the failure', () => server.beats.length === 3);
      expect(server.beats.map((b) => b.images[0]?.ref)).toEqual(['img-1', 'img-2', 'img-4']);
    } finally {
      await service.stop();
    }
    const after = server.beats.length;
    await new Promise((r) => setTimeout(r, 50));
    expect(server.beats.length).toBe(after);
  });

  it('follows a short interval from the server without nudges', async () => {
    const server = new FakeServer(20);
    const service = new HeartbeatService(server, async () => body(0), async () => undefined, log);
    await service.beat();
    service.start();
    try {
      await until('three more beats', () => server.beats.length >= 4, 3000);
    } finally {
      await service.stop();
    }
  });
});
