import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({
    executors: { heartbeat_timeout_secs: 15 },
    operations: { max_attempts: 2, lease_secs: 60, create_sandbox_lease_secs: 100, snapshot_lease_secs: 300 },
  });
});
afterEach(async () => {
  await h.close();
});

describe('lost executors', () => {
  it('ends running sandboxes as executor_lost and fails in-flight snapshots, leaving nothing hanging', async () => {
    const { executor, sandboxId } = await runningSandbox(h, 'exec-a');
    const snap = (await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {})).json.snapshot_id as string;
    await executor.pollOne('snapshot');
    h.clock.advanceSecs(14);
    expect((await h.server.monitor.runOnce()).lost).toEqual([]);
    h.clock.advanceSecs(2);
    expect((await h.server.monitor.runOnce()).lost).toEqual(['exec-a']);

    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json).toMatchObject({
      status: 'terminated', outcome: { kind: 'executor_lost', reason: expect.stringContaining('exec-a stopped sending heartbeats') },
    });
    expect((await h.api('GET', `/snapshots/${snap}`)).json).toMatchObject({
      status: 'failed', error: expect.stringMatching(/^executor exec-a lost during snapshot/),
    });
    expect((await h.request('GET', '/v1/executors')).json.items).toEqual([expect.objectContaining({ state: 'lost' })]);
    expect(await h.server.metrics.value('cryo_executors_lost_total')).toBe(1);
    // A lost executor is told to rejoin before it gets work; its heartbeat brings it back.
    const poll = await h.request('GET', '/internal/v1/executors/exec-a/operations?wait_ms=0', undefined, 'test-executor-token-abcdef');
    expect(poll.status).toBe(409);
    const beat = await executor.heartbeat();
    expect(beat.desired).toEqual([]);
    expect((await h.request('GET', '/v1/executors')).json.items).toEqual([expect.objectContaining({ state: 'ready' })]);
  });

  it('moves a queued create to another executor, and fails a pinned one', async () => {
    const a = h.executor('exec-a');
    const b = h.executor('exec-b', { capacity: { cpus: 4, memory_mb: 8192, max_sandboxes: 1 } });
    await a.heartbeat();
    await b.heartbeat();
    const free = (await h.api('POST', '/sandboxes', { image: 'busybox', executor_id: 'exec-a' })).json.sandbox_id as string;
    // Unpin it so that it may move (as if it had been placed by spread).
    await h.server.db.kysely.updateTable('sandboxes').set({ pinned: 0 }).where('id', '=', free).execute();
    const pinned = (await h.api('POST', '/sandboxes', { image: 'busybox', executor_id: 'exec-a' })).json.sandbox_id as string;
    h.clock.advanceSecs(10);
    await b.heartbeat();
    h.clock.advanceSecs(10);
    await h.server.monitor.runOnce();

    expect((await h.api('GET', `/sandboxes/${free}`)).json).toMatchObject({
      status: 'pending', executor_id: 'exec-b', pending_reason: expect.stringContaining('moved to executor exec-b'),
    });
    expect((await b.pollOne('create_sandbox')).payload.sandbox_id).toBe(free);
    expect((await h.api('GET', `/sandboxes/${pinned}`)).json).toMatchObject({
      status: 'terminated', outcome: { kind: 'executor_lost' },
    });
  });

  it('answers 503 for a restore pinned to a lost executor', async () => {
    const { executor, sandboxId } = await runningSandbox(h, 'exec-a');
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const { snapshotId } = await executor.pushNext();
    const other = h.executor('exec-b');
    await other.heartbeat();
    h.clock.advanceSecs(20);
    await other.heartbeat();
    await h.server.monitor.runOnce();
    const reply = await h.api('POST', `/snapshots/${snapshotId}/restore`, { executor_id: 'exec-a' });
    expect(reply.status).toBe(503);
    expect(reply.json).toMatchObject({ error: { message: expect.stringContaining('executor exec-a is lost') } });
  });
});

describe('leases', () => {
  it('offers an operation again when its lease expires on a live executor, then fails it', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const id = (await h.api('POST', '/sandboxes', { image: 'busybox' })).json.sandbox_id as string;
    const first = await executor.pollOne('create_sandbox');
    expect(first.attempt).toBe(1);
    expect(first.lease_expires_at).toBe(new Date(h.clock.now() + 100_000).toISOString());

    h.clock.advanceSecs(101);
    await executor.heartbeat();
    expect(await h.server.monitor.runOnce()).toMatchObject({ requeued: 1, failed: 0 });
    const second = await executor.pollOne('create_sandbox');
    expect(second.op_id).toBe(first.op_id);
    expect(second.attempt).toBe(2);

    h.clock.advanceSecs(101);
    await executor.heartbeat();
    expect(await h.server.monitor.runOnce()).toMatchObject({ requeued: 0, failed: 1 });
    expect((await h.api('GET', `/sandboxes/${id}`)).json).toMatchObject({
      status: 'terminated',
      outcome: { kind: 'failed', reason: `create_sandbox operation ${first.op_id} was not completed by executor exec-a after 2 attempts (its lease expired each time)` },
    });
    // The executor finishing late is told its result no longer counts.
    const late = await executor.ok(first.op_id, { container_id: 'c', runtime: 'docker' });
    expect(late.status).toBe(200);
    expect(late.json).toMatchObject({ ignored: true });
    expect((await h.api('GET', `/sandboxes/${id}`)).json.status).toBe('terminated');
  });

  it('extends a snapshot lease with each progress report', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const op = await executor.pollOne('snapshot');
    h.clock.advanceSecs(250);
    await executor.progress(op.op_id, { phase: 'push', bytes_done: 1, bytes_total: 2 });
    h.clock.advanceSecs(250);
    await executor.heartbeat();
    expect(await h.server.monitor.runOnce()).toMatchObject({ requeued: 0, failed: 0 });
  });

  it('answers 400 naming the field for a result of the wrong shape', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    await h.api('POST', '/sandboxes', { image: 'busybox' });
    const op = await executor.pollOne('create_sandbox');
    const reply = await executor.ok(op.op_id, { container: 'c' });
    expect(reply.status).toBe(400);
    expect(reply.json).toMatchObject({ error: { message: expect.stringContaining('result.container_id') } });
  });

  it('wakes a waiting long poll as soon as work is queued', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const started = Date.now();
    const poll = executor.poll(10_000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await h.api('POST', '/sandboxes', { image: 'busybox' });
    const ops = await poll;
    expect(ops.map((o) => o.kind)).toEqual(['create_sandbox']);
    expect(Date.now() - started).toBeLessThan(2000);
    const empty = Date.now();
    expect(await executor.poll(200)).toEqual([]);
    expect(Date.now() - empty).toBeGreaterThanOrEqual(190);
  });
});

describe('after a server restart', () => {
  it('gives executors a full heartbeat timeout to check in before declaring them lost', async () => {
    const { executor, sandboxId } = await runningSandbox(h, 'exec-a');
    h.clock.advanceSecs(600); // the server was down for ten minutes
    h = await h.restart();
    executor.attach(h);
    expect((await h.server.monitor.runOnce()).lost).toEqual([]);
    h.clock.advanceSecs(10);
    await executor.heartbeat();
    h.clock.advanceSecs(10);
    expect((await h.server.monitor.runOnce()).lost).toEqual([]);
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('running');
    h.clock.advanceSecs(16);
    expect((await h.server.monitor.runOnce()).lost).toEqual(['exec-a']);
  });
});
