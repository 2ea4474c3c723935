import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ executors: { heartbeat_timeout_secs: 15, reconcile_grace_secs: 5 } });
});
afterEach(async () => {
  await h.close();
});

describe('heartbeat reconciliation', () => {
  it('registers an executor and shows it in GET /v1/executors', async () => {
    const executor = h.executor('exec-a', { labels: { zone: 'a' } });
    executor.images = [{ ref: 'cryo-snapshots:sb-x-snap-y', snapshot_id: 'snap-y', size_bytes: 10 }, { ref: 'busybox:latest', snapshot_id: null, size_bytes: 5 }];
    const beat = await executor.heartbeat();
    expect(beat.status).toBe(200);
    const list = await h.request('GET', '/v1/executors');
    expect(list.json.items).toEqual([
      expect.objectContaining({
        executor_id: 'exec-a', host: 'exec-a.local', labels: { zone: 'a' }, state: 'ready', sandboxes: 0,
        cached_snapshot_images: ['cryo-snapshots:sb-x-snap-y'],
        last_heartbeat_at: new Date(h.clock.now()).toISOString(),
      }),
    ]);
  });

  it('ends a running sandbox whose container exited or vanished, naming why', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const second = await h.api('POST', '/sandboxes', { image: 'busybox' });
    const secondId = await executor.startNext();
    expect(secondId).toBe(second.json.sandbox_id);
    h.clock.advanceSecs(6);
    executor.containers.set(sandboxId, { sandbox_id: sandboxId, container_id: 'c', state: 'exited', exit_code: 137, runtime: 'docker' });
    executor.containers.delete(secondId);
    const beat = await executor.heartbeat();
    expect(beat.desired).toEqual([]);
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json).toMatchObject({
      status: 'terminated', outcome: { kind: 'failed', reason: 'container exited with code 137' },
    });
    expect((await h.api('GET', `/sandboxes/${secondId}`)).json).toMatchObject({
      status: 'terminated', outcome: { kind: 'failed', reason: expect.stringContaining('missing on executor exec-a') },
    });
  });

  it('asks an executor to remove local images of snapshots that failed, once', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const snap = (await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {})).json.snapshot_id as string;
    const op = await executor.pollOne('snapshot');
    executor.images.push({ ref: `cryo-snapshots:${op.payload.tag}`, snapshot_id: snap, size_bytes: 10 });
    await executor.fail(op.op_id, 'PUSH_FAILED', 'registry 127.0.0.1:5001 rejected credentials for user myuser (HTTP 401)');
    await executor.heartbeat();
    const removal = await executor.pollOne('delete_image');
    expect(removal.payload).toEqual({ snapshot_id: snap, image_refs: [`cryo-snapshots:${op.payload.tag}`] });
    await executor.ok(removal.op_id, { removed: [] }); // say it could not remove it
    await executor.heartbeat();
    expect(await executor.poll()).toEqual([]); // not asked again right away
  });
});

describe('registry agreement', () => {
  it('warns (API field and one log line) when an executor pushes to another registry than the server', async () => {
    const same = h.executor('exec-same');
    const other = h.executor('exec-other', { registry: { url: 'registry.elsewhere:5000', repository: 'cryo/snapshots' } });
    const local = h.executor('exec-local', { registry: null });
    for (const e of [same, other, local]) await e.heartbeat();
    await other.heartbeat();
    const items = (await h.request('GET', '/v1/executors')).json.items as Array<{ executor_id: string; warnings: string[] }>;
    const warnings = Object.fromEntries(items.map((e) => [e.executor_id, e.warnings]));
    expect(warnings['exec-same']).toEqual([]);
    expect(warnings['exec-local']).toEqual([]);
    expect(warnings['exec-other']).toEqual([
      "executor exec-other pushes snapshots to registry.elsewhere:5000/cryo/snapshots, not to the server's snapshot_registry " +
        "127.0.0.1:5001/cryo/snapshots: the reaper deletes snapshots with the server's registry settings and may fail on this executor's; " +
        'configure the same snapshot_registry on both',
    ]);
    // Logged once, not on every heartbeat; never with the server's registry password.
    const logged = h.logs.filter((line) => line.includes('pushes snapshots to registry.elsewhere:5000'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain('"level":40');
    expect(logged[0]).not.toContain('registry-secret-pw');
  });

  it('warns when the server has no snapshot_registry to delete an executor\'s snapshots with', async () => {
    const { registryWarning } = await import('./executor-service');
    expect(registryWarning('e', { url: 'r:5000', repository: 'a/b' }, undefined)).toMatch(/^executor e pushes snapshots to r:5000\/a\/b, but the server has no snapshot_registry/);
    expect(registryWarning('e', { url: 'r:5000', repository: 'a/b' }, { url: 'r:5000', repository: 'a/c' })).toMatch(/not to the server's snapshot_registry r:5000\/a\/c/);
    expect(registryWarning('e', null, undefined)).toBeNull();
  });
});
