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
