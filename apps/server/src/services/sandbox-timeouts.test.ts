import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start();
});
afterEach(async () => {
  await h.close();
});

describe('sandbox timeouts', () => {
  it('counts timeout_secs from when the sandbox started running, across a server restart', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const id = (await h.api('POST', '/sandboxes', { image: 'busybox', timeout_secs: 30 })).json.sandbox_id as string;
    h.clock.advanceSecs(100); // pending time does not count
    await executor.startNext();
    const started = h.clock.now();
    expect((await h.api('GET', `/sandboxes/${id}`)).json.expires_at).toBe(new Date(started + 30_000).toISOString());

    h.clock.advanceSecs(29);
    expect(await h.server.timeouts.runOnce()).toBe(0);
    h = await h.restart();
    executor.attach(h);
    h.clock.advanceSecs(1);
    expect(await h.server.timeouts.runOnce()).toBe(1);
    expect((await h.api('GET', `/sandboxes/${id}`)).json).toMatchObject({
      status: 'terminated', outcome: { kind: 'timeout' }, terminated_at: new Date(started + 30_000).toISOString(),
    });
    expect((await executor.pollOne('delete_sandbox')).payload.sandbox_id).toBe(id);
  });

  it('never ends a sandbox with timeout_secs 0, and waits for a snapshot in progress', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const forever = (await h.api('POST', '/sandboxes', { image: 'busybox', timeout_secs: 0 })).json.sandbox_id as string;
    await executor.startNext();
    const short = (await h.api('POST', '/sandboxes', { image: 'busybox', timeout_secs: 5 })).json.sandbox_id as string;
    await executor.startNext();
    await h.api('POST', `/sandboxes/${short}/snapshots`, {});
    h.clock.advanceSecs(3600);
    expect(await h.server.timeouts.runOnce()).toBe(0);
    expect((await h.api('GET', `/sandboxes/${forever}`)).json.status).toBe('running');
    await executor.pushNext();
    expect(await h.server.timeouts.runOnce()).toBe(1);
    expect((await h.api('GET', `/sandboxes/${short}`)).json.outcome).toMatchObject({ kind: 'timeout' });
  });
});
