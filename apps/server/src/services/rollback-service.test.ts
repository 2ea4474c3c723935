import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox, type FakeExecutor } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ snapshots: { default_ttl_secs: 3600 }, executors: { reconcile_grace_secs: 30 } });
});
afterEach(async () => {
  await h.close();
});

/** A running sandbox (created with a label and a timeout) and an active snapshot of it. */
async function sandboxWithSnapshot(executorId = 'exec-a', body: Record<string, unknown> = {}): Promise<{
  executor: FakeExecutor; sandboxId: string; snapshotId: string; ref: string; digest: string;
}> {
  const executor = h.executor(executorId);
  await executor.heartbeat();
  const created = await h.api('POST', '/sandboxes', { image: 'busybox:latest', command: ['sh'], labels: { team: 'x' }, timeout_secs: 600 });
  const sandboxId = created.json.sandbox_id as string;
  await executor.startNext();
  await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, body);
  const { snapshotId, ref, digest } = await executor.pushNext();
  return { executor, sandboxId, snapshotId, ref, digest };
}

describe('POST /sandboxes/{id}/rollback', () => {
  it('goes running -> restoring -> running with the same id, labels, command and deadline; the container is replaced', async () => {
    const { executor, sandboxId, snapshotId, ref, digest } = await sandboxWithSnapshot();
    const before = (await h.api('GET', `/sandboxes/${sandboxId}`)).json;
    h.clock.advanceSecs(100);
    const reply = await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: snapshotId });
    expect(reply.status).toBe(202);
    expect(reply.json).toEqual({ sandbox_id: sandboxId, status: 'restoring', snapshot_id: snapshotId, restore_mode: 'eager' });
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json).toMatchObject({
      status: 'restoring', pending_reason: expect.stringContaining(`rolling back to snapshot ${snapshotId}`),
    });
    // Nothing else may happen to it meanwhile.
    const exec = await h.api('POST', `/sandboxes/${sandboxId}/exec`, { command: ['true'] });
    expect(exec.status).toBe(409);
    expect(exec.json).toMatchObject({ error: { message: `sandbox ${sandboxId} is restoring; exec needs a running sandbox` } });
    expect((await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {})).status).toBe(409);
    const twice = await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: snapshotId });
    expect(twice.status).toBe(409);
    expect(twice.json).toMatchObject({ error: { message: expect.stringContaining('wait for the rollback under way') } });

    const op = await executor.pollOne('rollback_sandbox');
    expect(op.payload).toEqual({
      sandbox_id: sandboxId, namespace: 'test', image: ref, command: ['sh'], env: {}, labels: { team: 'x' }, resources: {},
      restore: { snapshot_id: snapshotId, image_ref: ref, digest, clip_index_ref: null, mode: 'eager' },
    });
    // A heartbeat composed during the swap shows no container: that is no loss while restoring.
    executor.containers.delete(sandboxId);
    await executor.heartbeat();
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('restoring');

    await executor.ok(op.op_id, { container_id: 'ctr-new', runtime: 'docker' });
    const after = (await h.api('GET', `/sandboxes/${sandboxId}`)).json;
    expect(after).toMatchObject({
      sandbox_id: sandboxId, status: 'running', pending_reason: null, labels: { team: 'x' }, command: ['sh'], timeout_secs: 600,
      expires_at: before.expires_at, started_at: before.started_at, restored_from_snapshot: snapshotId, restore_mode: 'eager', image: ref,
    });
    // A heartbeat composed before the new container started, arriving late, does not end it either.
    await executor.heartbeat();
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('running');
    expect(await h.server.metrics.value('cryo_rollbacks_total', { outcome: 'done' })).toBe(1);
    // The snapshot was used: last_used_at moved (its TTL counts from creation: expires_at did not).
    const snapshot = (await h.api('GET', `/snapshots/${snapshotId}`)).json;
    expect(snapshot.last_used_at).toBe(new Date(h.clock.now()).toISOString());
    expect(snapshot.expires_at).toBe(new Date(Date.parse(snapshot.created_at as string) + 3600_000).toISOString());
  });

  it('rolls back to a snapshot of another sandbox in the namespace, lazily on an executor that can', async () => {
    const lazy = h.executor('exec-l', { capabilities: { lazy: true, lazy_unavailable_reason: null } });
    await lazy.heartbeat();
    const start = async (): Promise<string> => {
      await h.api('POST', '/sandboxes', { image: 'busybox:latest', command: ['sh'] });
      return lazy.startNext();
    };
    const sandboxId = await start();
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const other = await lazy.pushNext({ clip: true });
    const target = await start();
    const reply = await h.api('POST', `/sandboxes/${target}/rollback`, { snapshot_id: other.snapshotId, mode: 'lazy' });
    expect(reply.status).toBe(202);
    const op = await lazy.pollOne('rollback_sandbox');
    expect(op.payload.restore).toMatchObject({ snapshot_id: other.snapshotId, mode: 'lazy', clip_index_ref: `${other.ref}.clip` });
    await lazy.ok(op.op_id, { container_id: `cryo-${target}`, runtime: 'runc-lazy' });
    expect((await h.api('GET', `/sandboxes/${target}`)).json).toMatchObject({ status: 'running', restore_mode: 'lazy', restored_from_snapshot: other.snapshotId });
  });

  it('answers 404, 409, 410 and 422 with what to do', async () => {
    const { executor, sandboxId, snapshotId } = await sandboxWithSnapshot('exec-a', { ttl_secs: 50 });
    expect((await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: 'snap-nope' })).status).toBe(404);
    expect((await h.api('POST', '/sandboxes/sbx-nope/rollback', { snapshot_id: snapshotId })).status).toBe(404);
    expect((await h.api('POST', `/sandboxes/${sandboxId}/rollback`, {})).status).toBe(400);
    const lazy = await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: snapshotId, mode: 'lazy' });
    expect(lazy.status).toBe(422);
    expect(lazy.json).toMatchObject({ error: { message: expect.stringContaining('no clip index') } });

    // Snapshotting: 409; a snapshot still creating: 409.
    const creating = (await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {})).json.snapshot_id as string;
    const busy = await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: snapshotId });
    expect(busy.status).toBe(409);
    expect(busy.json).toMatchObject({ error: { message: `sandbox ${sandboxId} is snapshotting; only a running sandbox can be rolled back; wait for its snapshot to finish` } });
    const { sandboxId: second } = await runningSandbox(h, 'exec-a');
    const notActive = await h.api('POST', `/sandboxes/${second}/rollback`, { snapshot_id: creating });
    expect(notActive.status).toBe(409);
    expect(notActive.json).toMatchObject({ error: { message: expect.stringContaining('still creating') } });

    h.clock.advanceSecs(51);
    const expired = await h.api('POST', `/sandboxes/${second}/rollback`, { snapshot_id: snapshotId });
    expect(expired.status).toBe(410);
    expect((await h.api('GET', `/sandboxes/${second}`)).json.status).toBe('running');
    expect((await executor.poll()).map((o) => o.kind)).not.toContain('rollback_sandbox');
  });

  it('refuses a snapshot kept only on another executor', async () => {
    const a = h.executor('exec-a', { registry: null });
    await a.heartbeat();
    await h.api('POST', '/sandboxes', { image: 'busybox', executor_id: 'exec-a' });
    const source = await a.startNext();
    await h.api('POST', `/sandboxes/${source}/snapshots`, {});
    const op = await a.pollOne('snapshot');
    await a.ok(op.op_id, { image_ref: `cryo-snapshots:${op.payload.tag}`, digest: null, size_bytes: 1, timings: { pause_ms: 1, commit_ms: 1, push_ms: null, index_ms: null } });
    const b = h.executor('exec-b', { registry: null });
    await b.heartbeat();
    await h.api('POST', '/sandboxes', { image: 'busybox', executor_id: 'exec-b' });
    const onB = await b.startNext();
    const reply = await h.api('POST', `/sandboxes/${onB}/rollback`, { snapshot_id: op.payload.snapshot_id });
    expect(reply.status).toBe(422);
    expect(reply.json).toMatchObject({ error: { message: expect.stringContaining('stored only on executor exec-a') } });
  });

  it('ends the sandbox with the reason when the swap fails, and has the executor remove what is left', async () => {
    const { executor, sandboxId, snapshotId } = await sandboxWithSnapshot();
    await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: snapshotId });
    const op = await executor.pollOne('rollback_sandbox');
    await executor.fail(op.op_id, 'UNAVAILABLE', 'registry 127.0.0.1:5001 is unreachable (pull ...)');
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json).toMatchObject({
      status: 'terminated',
      outcome: { kind: 'failed', reason: `rollback to snapshot ${snapshotId} failed: registry 127.0.0.1:5001 is unreachable (pull ...)` },
    });
    const cleanup = await executor.pollOne('delete_sandbox');
    expect(cleanup.payload).toEqual({ sandbox_id: sandboxId });
    expect(await h.server.metrics.value('cryo_rollbacks_total', { outcome: 'failed' })).toBe(1);
  });

  it('removes the new container when the sandbox was deleted during the swap', async () => {
    const { executor, sandboxId, snapshotId } = await sandboxWithSnapshot();
    await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: snapshotId });
    const op = await executor.pollOne('rollback_sandbox');
    expect((await h.api('DELETE', `/sandboxes/${sandboxId}`)).json).toMatchObject({ status: 'terminated', outcome: { kind: 'user' } });
    expect((await executor.pollOne('delete_sandbox')).payload.sandbox_id).toBe(sandboxId);
    await executor.ok(op.op_id, { container_id: 'ctr-late', runtime: 'docker' });
    expect((await executor.pollOne('delete_sandbox')).payload.sandbox_id).toBe(sandboxId);
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('terminated');
  });

  it('keeps the snapshot a rollback is about to read from expiring under it', async () => {
    const { sandboxId, snapshotId } = await sandboxWithSnapshot('exec-a', { ttl_secs: 50 });
    await h.api('POST', `/sandboxes/${sandboxId}/rollback`, { snapshot_id: snapshotId });
    h.clock.advanceSecs(51);
    expect((await h.server.reaper.runOnce()).markedExpired).toBe(0);
  });
});
