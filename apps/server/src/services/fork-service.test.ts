import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Operation } from '@cryo/snapshot';
import { Harness, runningSandbox, type FakeExecutor } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ snapshots: { default_ttl_secs: 3600 } });
});
afterEach(async () => {
  await h.close();
});

type Create = Extract<Operation, { kind: 'create_sandbox' }>;
const creates = async (executor: FakeExecutor): Promise<Create[]> =>
  (await executor.poll()).filter((o): o is Create => o.kind === 'create_sandbox');

/** Exec-a runs a sandbox with an active snapshot (its image reported by a heartbeat); exec-b is empty. */
async function twoExecutorsAndSnapshot(): Promise<{ a: FakeExecutor; b: FakeExecutor; sandboxId: string; snapshotId: string; ref: string }> {
  const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
  const b = h.executor('exec-b');
  await b.heartbeat();
  await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
  const { snapshotId, ref } = await a.pushNext();
  await a.heartbeat();
  return { a, b, sandboxId, snapshotId, ref };
}

describe('POST /snapshots/{id}/fork', () => {
  it('starts count sandboxes spread evenly over executors, the image holder first, each with its own create', async () => {
    const { a, b, snapshotId, ref } = await twoExecutorsAndSnapshot();
    const one = await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 1 });
    expect(one.status).toBe(202);
    expect(one.json).toMatchObject({ snapshot_id: snapshotId, restored_from_snapshot: snapshotId, sandboxes: [{ status: 'pending', executor_id: 'exec-a' }] });
    expect((await creates(a)).length).toBe(1);

    const ten = await h.api('POST', `/snapshots/${snapshotId}/fork`, {
      count: 10, command: ['sh'], env: { RUN: '1' }, labels: { batch: 'b1' }, timeout_secs: 600,
    });
    expect(ten.status).toBe(202);
    const forks = ten.json.sandboxes as Array<{ sandbox_id: string; status: string; executor_id: string }>;
    expect(forks).toHaveLength(10);
    expect(new Set(forks.map((f) => f.sandbox_id)).size).toBe(10);
    expect(forks.filter((f) => f.executor_id === 'exec-a')).toHaveLength(5);
    expect(forks.filter((f) => f.executor_id === 'exec-b')).toHaveLength(5);
    const onA = await creates(a);
    const onB = await creates(b);
    expect(onA).toHaveLength(5);
    expect(onB).toHaveLength(5);
    for (const op of [...onA, ...onB]) {
      expect(op.payload).toMatchObject({
        image: ref, command: ['sh'], env: { RUN: '1' }, labels: { batch: 'b1' },
        restore: { snapshot_id: snapshotId, image_ref: ref, mode: 'eager' },
      });
    }
    // Each runs or fails on its own: one create fails, the other nine run.
    const [failing, ...rest] = [...onA, ...onB];
    if (failing === undefined) throw new Error('no create');
    await a.fail(failing.op_id, 'UNAVAILABLE', 'pull failed: registry 127.0.0.1:5001 is unreachable');
    for (const op of rest) {
      await (onA.includes(op) ? a : b).ok(op.op_id, { container_id: `ctr-${op.payload.sandbox_id}`, runtime: 'docker' });
    }
    const states = await Promise.all(forks.map(async (f) => (await h.api('GET', `/sandboxes/${f.sandbox_id}`)).json));
    expect(states.filter((s) => s.status === 'running')).toHaveLength(9);
    const failed = states.find((s) => s.sandbox_id === failing.payload.sandbox_id);
    expect(failed).toMatchObject({
      status: 'terminated', outcome: { kind: 'failed', reason: 'pull failed: registry 127.0.0.1:5001 is unreachable' },
      labels: { batch: 'b1' }, restored_from_snapshot: snapshotId,
    });
  });

  it('keeps to executor_ids, and ends the forks no executor has room for with the reason', async () => {
    const { a, b, snapshotId } = await twoExecutorsAndSnapshot();
    const onlyB = await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 3, executor_ids: ['exec-b'] });
    expect((onlyB.json.sandboxes as Array<{ executor_id: string }>).map((s) => s.executor_id)).toEqual(['exec-b', 'exec-b', 'exec-b']);
    expect(await creates(a)).toHaveLength(0);
    expect(await creates(b)).toHaveLength(3);

    const nowhere = await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 2, executor_ids: ['exec-z'] });
    expect(nowhere.status).toBe(503);
    expect(nowhere.json).toMatchObject({ error: { message: expect.stringContaining('exec-z: not a ready executor') } });

    // exec-a and exec-b take 10 each; 1 + 3 are taken: 16 places for 20 forks.
    const full = await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 20 });
    expect(full.status).toBe(202);
    const forks = full.json.sandboxes as Array<{ sandbox_id: string; status: string; executor_id: string | null }>;
    expect(forks.filter((f) => f.status === 'pending')).toHaveLength(16);
    const unplaced = forks.filter((f) => f.status === 'terminated');
    expect(unplaced).toHaveLength(4);
    expect(unplaced.every((f) => f.executor_id === null)).toBe(true);
    const first = unplaced[0];
    if (first === undefined) throw new Error('expected an unplaced fork');
    expect((await h.api('GET', `/sandboxes/${first.sandbox_id}`)).json).toMatchObject({
      status: 'terminated', outcome: { kind: 'failed', reason: expect.stringMatching(/^not placed: no ready executor can take this sandbox \(.*full/) },
    });
  });

  it('checks count and the snapshot: 400 outside 1..100, 409 creating, 410 expired (or falls back to the base image)', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const snapshotId = (await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 60 })).json.snapshot_id as string;
    expect((await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 0 })).status).toBe(400);
    expect((await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 101 })).status).toBe(400);
    expect((await h.api('POST', `/snapshots/${snapshotId}/fork`, {})).status).toBe(400);
    expect((await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 1 })).status).toBe(409);
    await a.pushNext();
    h.clock.advanceSecs(61);
    const gone = await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 2 });
    expect(gone.status).toBe(410);
    expect(gone.json).toMatchObject({ error: { code: 'GONE', message: expect.stringContaining('expired at') } });
    const fallback = await h.api('POST', `/snapshots/${snapshotId}/fork`, { count: 2, on_expired: 'base_image' });
    expect(fallback.status).toBe(202);
    expect(fallback.json).toMatchObject({
      snapshot_id: snapshotId, restored_from_snapshot: null,
      fallback: { reason: expect.stringMatching(/expired at .*; started from its base image busybox:latest instead/) },
    });
    const ops = await creates(a);
    expect(ops).toHaveLength(2);
    // The base image, with the command its sandbox ran.
    for (const op of ops) expect(op.payload).toMatchObject({ image: 'busybox:latest', command: ['sleep', '1000'], restore: null });
    expect(await h.server.metrics.value('cryo_restore_fallbacks_total')).toBe(2);
  });
});

describe('POST /sandboxes/{id}/fork', () => {
  it('snapshots the sandbox and starts the forks once the snapshot is active', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const b = h.executor('exec-b');
    await b.heartbeat();
    const reply = await h.api('POST', `/sandboxes/${sandboxId}/fork`, { count: 4, labels: { fork: 'yes' } });
    expect(reply.status).toBe(202);
    const snapshotId = reply.json.snapshot_id as string;
    expect(reply.json.restored_from_snapshot).toBe(snapshotId);
    const forks = reply.json.sandboxes as Array<{ sandbox_id: string; status: string; executor_id: string }>;
    expect(forks.map((f) => f.status)).toEqual(['pending', 'pending', 'pending', 'pending']);
    expect(forks.filter((f) => f.executor_id === 'exec-a')).toHaveLength(2);
    expect((await h.api('GET', `/snapshots/${snapshotId}`)).json).toMatchObject({ status: 'creating', ttl_secs: 3600, sandbox_id: sandboxId });
    expect((await h.api('GET', `/sandboxes/${forks[0]?.sandbox_id}`)).json).toMatchObject({
      status: 'pending', pending_reason: expect.stringContaining(`waiting for snapshot ${snapshotId} to be pushed`),
    });
    // Nothing to create before the push.
    expect((await b.poll()).map((o) => o.kind)).toEqual([]);
    const { ref } = await a.pushNext();
    const ops = [...await creates(a), ...await creates(b)];
    expect(ops).toHaveLength(4);
    for (const op of ops) {
      expect(op.payload).toMatchObject({ image: ref, labels: { fork: 'yes' }, restore: { snapshot_id: snapshotId, image_ref: ref, mode: 'eager' } });
    }
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('running');
  });

  it('starts lazy forks at the push when the snapshot result brings its clip index (pre-copy)', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const lazy = h.executor('exec-l', { capabilities: { lazy: true, lazy_unavailable_reason: null } });
    await lazy.heartbeat();
    const reply = await h.api('POST', `/sandboxes/${sandboxId}/fork`, { count: 2, mode: 'lazy' });
    expect(reply.status).toBe(202);
    const push = await a.pollOne('snapshot');
    const ref = `127.0.0.1:5001/cryo/snapshots:${push.payload.tag}`;
    await a.ok(push.op_id, {
      image_ref: ref, digest: `sha256:${'d'.repeat(64)}`, size_bytes: 10,
      timings: { pause_ms: 1, precopy_ms: 5, commit_ms: null, push_ms: 1, index_ms: 2 }, clip_index_ref: `${ref}.clip`,
    });
    const ops = await creates(lazy);
    expect(ops).toHaveLength(2);
    expect(ops[0]?.payload.restore).toMatchObject({ mode: 'lazy', clip_index_ref: `${ref}.clip` });
    expect((await a.poll()).map((o) => o.kind)).not.toContain('build_index');
  });

  it('starts lazy forks once the clip index is there, and ends them with the reason when the snapshot fails', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const lazy = h.executor('exec-l', { capabilities: { lazy: true, lazy_unavailable_reason: null } });
    await lazy.heartbeat();
    const reply = await h.api('POST', `/sandboxes/${sandboxId}/fork`, { count: 2, mode: 'lazy' });
    expect(reply.status).toBe(202);
    expect((reply.json.sandboxes as Array<{ executor_id: string }>).map((s) => s.executor_id)).toEqual(['exec-l', 'exec-l']);
    const push = await a.pollOne('snapshot');
    const ref = `127.0.0.1:5001/cryo/snapshots:${push.payload.tag}`;
    await a.ok(push.op_id, { image_ref: ref, digest: `sha256:${'c'.repeat(64)}`, size_bytes: 10, timings: { pause_ms: 1, commit_ms: 1, push_ms: 1, index_ms: null } });
    expect(await creates(lazy)).toHaveLength(0); // pushed, not yet indexed
    const index = await a.pollOne('build_index');
    await a.ok(index.op_id, { clip_index_ref: `${ref}.clip`, index_ms: 5, index_size_bytes: 1, image_size_bytes: 10 });
    const ops = await creates(lazy);
    expect(ops).toHaveLength(2);
    expect(ops[0]?.payload.restore).toMatchObject({ mode: 'lazy', clip_index_ref: `${ref}.clip` });

    const again = await h.api('POST', `/sandboxes/${sandboxId}/fork`, { count: 2 });
    const failedPush = await a.pollOne('snapshot');
    await a.fail(failedPush.op_id, 'UNAVAILABLE', 'registry 127.0.0.1:5001 is unreachable');
    for (const fork of again.json.sandboxes as Array<{ sandbox_id: string }>) {
      expect((await h.api('GET', `/sandboxes/${fork.sandbox_id}`)).json).toMatchObject({
        status: 'terminated',
        outcome: { kind: 'failed', reason: `snapshot ${again.json.snapshot_id as string} failed: registry 127.0.0.1:5001 is unreachable` },
      });
    }
  });

  it('ends the forks of a snapshot deleted before it was ready; 409 for a sandbox that is not running', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const reply = await h.api('POST', `/sandboxes/${sandboxId}/fork`, { count: 1 });
    expect((await h.api('POST', `/sandboxes/${sandboxId}/fork`, { count: 1 })).status).toBe(409); // snapshotting
    await h.api('DELETE', `/snapshots/${reply.json.snapshot_id as string}`);
    const fork = (reply.json.sandboxes as Array<{ sandbox_id: string }>)[0]?.sandbox_id ?? '';
    expect((await h.api('GET', `/sandboxes/${fork}`)).json).toMatchObject({
      status: 'terminated', outcome: { reason: expect.stringContaining('was deleted before it was ready') },
    });
    expect((await a.poll()).map((o) => o.kind)).not.toContain('create_sandbox');
    // A fork deleted while it waits is simply dropped.
    const second = await h.api('POST', `/sandboxes/${sandboxId}/fork`, { count: 1 });
    const waiting = (second.json.sandboxes as Array<{ sandbox_id: string }>)[0]?.sandbox_id ?? '';
    expect((await h.api('DELETE', `/sandboxes/${waiting}`)).json).toMatchObject({ status: 'terminated', outcome: { kind: 'user' } });
    await a.pushNext();
    expect((await a.poll()).map((o) => o.kind)).not.toContain('create_sandbox');
  });
});
