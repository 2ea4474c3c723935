import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, REGISTRY, runningSandbox, type FakeExecutor } from '../testing/harness';

const DIGEST_PUSHED = `sha256:${'1'.repeat(64)}`;
const DIGEST_ORPHAN = `sha256:${'2'.repeat(64)}`;
const DIGEST_LATE = `sha256:${'3'.repeat(64)}`;

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({
    snapshots: { default_ttl_secs: 3600, reaper_interval_secs: 10, delete_retry_base_secs: 5, delete_retry_max_secs: 60 },
  });
});
afterEach(async () => {
  await h.close();
});

async function pushedSnapshot(executor: FakeExecutor, sandboxId: string, ttlSecs: number) {
  const reply = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: ttlSecs });
  expect(reply.status).toBe(202);
  const pushed = await executor.pushNext({ sizeBytes: 5000 });
  await executor.heartbeat(); // reports the local copy
  return pushed;
}

async function snapshot(id: string): Promise<Record<string, unknown>> {
  return (await h.api('GET', `/snapshots/${id}`)).json;
}

describe('TTL expiry', () => {
  it('deletes the manifest by digest, removes local copies, then marks the snapshot expired', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const { snapshotId, digest } = await pushedSnapshot(executor, sandboxId, 3);
    expect(h.registry.has(digest)).toBe(true);

    h.clock.advanceSecs(2);
    expect((await h.server.reaper.runOnce()).markedExpired).toBe(0);
    h.clock.advanceSecs(2);
    const pass = await h.server.reaper.runOnce();
    expect(pass).toMatchObject({ markedExpired: 1, waiting: 1 });
    expect(h.registry.has(digest)).toBe(false);
    expect(h.registry.deleted).toEqual([digest]);
    expect(await snapshot(snapshotId)).toMatchObject({ status: 'deleting' });

    const removal = await executor.pollOne('delete_image');
    expect(removal.payload.snapshot_id).toBe(snapshotId);
    expect(removal.payload.image_refs).toContain(`cryo-snapshots:sb-${sandboxId}-snap-${snapshotId}`);
    await executor.ok(removal.op_id, { removed: removal.payload.image_refs });
    expect((await h.server.reaper.runOnce()).finished).toBe(1);

    const expired = await snapshot(snapshotId);
    expect(expired).toMatchObject({ status: 'expired', expired_at: new Date(h.clock.now()).toISOString() });
    const restore = await h.api('POST', `/snapshots/${snapshotId}/restore`, {});
    expect(restore.status).toBe(410);
    expect(restore.json).toMatchObject({
      error: { code: 'GONE', message: `snapshot ${snapshotId} expired at ${expired.expires_at as string} (ttl_secs 3) and can no longer be restored or changed` },
    });
    expect((await h.api('GET', '/snapshots?status=expired')).json.items).toHaveLength(1);
    expect(await h.server.metrics.value('cryo_snapshots_expired_total')).toBe(1);
    expect(await h.server.metrics.value('cryo_snapshot_bytes_reclaimed_total')).toBe(5000);
    const record = await h.server.stores.records.forSnapshot(snapshotId);
    expect(record).toEqual([{ action: 'expired', registry_result: 'deleted', digest, local_removed: JSON.stringify(removal.payload.image_refs) }]);
  });

  it('deletes the access record beside the image (named after the image tag, not the user\'s tag)', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const reply = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3, tag: 'before-upgrade' });
    expect(reply.status).toBe(202);
    const { ref, digest } = await executor.pushNext({ clip: true });
    expect(ref).not.toContain('before-upgrade');
    // What a lazy start of the image pushes beside it (apps/executor ClipArtifacts.publishAccess).
    const accessDigest = `sha256:${'a'.repeat(64)}`;
    h.registry.push(`${ref}.access`, accessDigest);
    h.clock.advanceSecs(4);
    await h.server.reaper.runOnce();
    expect(h.registry.has(digest)).toBe(false);
    expect(h.registry.has(accessDigest)).toBe(false);
    expect(h.registry.deleted).toContain(accessDigest);
  });

  it('answers 410 for a snapshot past its expiry even before the reaper ran', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const { snapshotId } = await pushedSnapshot(executor, sandboxId, 10);
    h.clock.advanceSecs(11);
    expect((await h.api('POST', `/snapshots/${snapshotId}/restore`, {})).status).toBe(410);
  });

  it('keeps a snapshot that a pending restore still needs until the restore has started', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const { snapshotId } = await pushedSnapshot(executor, sandboxId, 10);
    await h.api('POST', `/snapshots/${snapshotId}/restore`, {});
    h.clock.advanceSecs(11);
    expect((await h.server.reaper.runOnce()).markedExpired).toBe(0);
    await executor.startNext();
    expect((await h.server.reaper.runOnce()).markedExpired).toBe(1);
  });

  it('retries with backoff while the registry is unreachable, showing deleting and the error', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const { snapshotId, digest } = await pushedSnapshot(executor, sandboxId, 1);
    h.registry.down = true;
    h.clock.advanceSecs(2);
    expect((await h.server.reaper.runOnce()).errors).toBe(1);
    expect(await snapshot(snapshotId)).toMatchObject({
      status: 'deleting', error: `registry ${REGISTRY.url} is unreachable (connect ECONNREFUSED)`,
    });
    expect(await h.server.metrics.value('cryo_reaper_errors_total')).toBe(1);
    // Not retried before the backoff (5s), then 10s.
    h.clock.advanceSecs(4);
    expect((await h.server.reaper.runOnce()).errors).toBe(0);
    h.clock.advanceSecs(1);
    expect((await h.server.reaper.runOnce()).errors).toBe(1);
    h.clock.advanceSecs(9);
    expect((await h.server.reaper.runOnce()).errors).toBe(0);
    expect(h.registry.has(digest)).toBe(true);
    expect((await snapshot(snapshotId)).status).toBe('deleting');

    h.registry.down = false;
    h.clock.advanceSecs(1);
    await h.server.reaper.runOnce();
    expect(h.registry.has(digest)).toBe(false);
    await executor.ok((await executor.pollOne('delete_image')).op_id, { removed: [] });
    await h.server.reaper.runOnce();
    expect(await snapshot(snapshotId)).toMatchObject({ status: 'expired', error: null });
  });

  it('survives a server restart in the middle of a pending expiry', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const removeLocalCopies = async (): Promise<void> => {
      for (const op of await executor.poll()) {
        if (op.kind === 'delete_image') await executor.ok(op.op_id, { removed: op.payload.image_refs });
      }
    };
    const first = await pushedSnapshot(executor, sandboxId, 5);
    const second = await pushedSnapshot(executor, sandboxId, 5);
    h.registry.down = true;
    h.clock.advanceSecs(6);
    await h.server.reaper.runOnce(); // both now deleting, registry deletes failed
    h = await h.restart();
    executor.attach(h);
    h.registry.down = false;
    h.clock.advanceSecs(60);
    await h.server.reaper.runOnce();
    expect(h.registry.has(first.digest)).toBe(false);
    expect(h.registry.has(second.digest)).toBe(false);
    await removeLocalCopies();
    await h.server.reaper.runOnce();

    // A snapshot whose expiry passes while the server is down is expired after the restart.
    const third = await pushedSnapshot(executor, sandboxId, 5);
    await h.server.close();
    h.clock.advanceSecs(10);
    h = await h.restart();
    executor.attach(h);
    await h.server.reaper.runOnce();
    expect(h.registry.has(third.digest)).toBe(false);
    await removeLocalCopies();
    await h.server.reaper.runOnce();
    for (const id of [first.snapshotId, second.snapshotId, third.snapshotId]) {
      expect((await snapshot(id)).status).toBe('expired');
    }
  });

  it('works through many snapshots in bounded batches without holding up requests', async () => {
    await h.close();
    h = await Harness.start({ snapshots: { reaper_batch_size: 50, reaper_concurrency: 4 } });
    const { snapshots, namespaces } = h.server.stores;
    const now = h.clock.now();
    await namespaces.ensure('test', now);
    for (let i = 0; i < 230; i += 1) {
      const id = `snap-bulk${String(i).padStart(4, '0')}`;
      const tag = `sb-x-${id}`;
      const ref = `${REGISTRY.url}/${REGISTRY.repository}:${tag}`;
      await snapshots.insert({
        id, namespace: 'test', sandboxId: 'sbx-x', executorId: 'exec-gone', tag, userTag: false, labels: {},
        plannedRef: ref, baseImage: 'busybox', ttlSecs: 1, now,
      });
      const digest = `sha256:${String(i).padStart(64, '0')}`;
      h.registry.push(ref, digest);
      await snapshots.recordPushed(id, {
        image_ref: ref, digest, size_bytes: 10, timings: { pause_ms: 1, commit_ms: 1, push_ms: 1, index_ms: null, precopy_ms: null, flatten_ms: null },
        clip_index_ref: null, capture: null, excluded_mounts: [], layers: 2, flattened: false,
      }, now);
    }
    h.clock.advanceSecs(2);
    // Registry deletes take a little while; a request issued meanwhile is answered before the pass ends.
    const slowDelete = h.registry.deleteManifest.bind(h.registry);
    h.registry.deleteManifest = async (ref, digest) => {
      await new Promise((resolve) => setTimeout(resolve, 2));
      return slowDelete(ref, digest);
    };
    let passDone = false;
    const pass = h.server.reaper.runOnce().then((p) => {
      passDone = true;
      return p;
    });
    const health = await h.request('GET', '/healthz', undefined, null);
    expect(health.status).toBe(200);
    expect(passDone).toBe(false);
    const result = await pass;
    expect(result).toMatchObject({ markedExpired: 230, finished: 230 });
    expect(h.registry.manifests.size).toBe(0);
    expect((await h.api('GET', '/snapshots?status=expired&limit=500')).json.items).toHaveLength(230);
  });
});

describe('DELETE', () => {
  it('deletes an active snapshot from the registry at once (202, then deleted); repeating is harmless', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const { snapshotId, digest } = await pushedSnapshot(executor, sandboxId, 3600);
    const reply = await h.api('DELETE', `/snapshots/${snapshotId}`);
    expect(reply.status).toBe(202);
    expect(reply.json).toMatchObject({ status: 'deleting' });
    await h.server.reaper.runOnce();
    expect(h.registry.has(digest)).toBe(false);
    await executor.ok((await executor.pollOne('delete_image')).op_id, { removed: ['x'] });
    await h.server.reaper.runOnce();
    expect(await snapshot(snapshotId)).toMatchObject({ status: 'deleted', deleted_at: expect.any(String) });
    expect((await h.api('DELETE', `/snapshots/${snapshotId}`)).json).toMatchObject({ status: 'deleted' });
    const restore = await h.api('POST', `/snapshots/${snapshotId}/restore`, {});
    expect(restore.status).toBe(410);
    expect(restore.json).toMatchObject({ error: { message: expect.stringContaining('was deleted at') } });
    expect(await h.server.metrics.value('cryo_snapshots_deleted_total')).toBe(1);
  });

  it('waits for a push in flight and then deletes what it pushed, leaving nothing behind', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = (await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {})).json.snapshot_id as string;
    const op = await executor.pollOne('snapshot'); // the executor has started
    expect((await h.api('DELETE', `/snapshots/${id}`)).json).toMatchObject({ status: 'deleting' });
    await h.server.reaper.runOnce();
    expect(await snapshot(id)).toMatchObject({ status: 'deleting' });

    const ref = `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`;
    h.registry.push(ref, DIGEST_PUSHED);
    await executor.ok(op.op_id, {
      image_ref: ref, digest: DIGEST_PUSHED, size_bytes: 77,
      timings: { pause_ms: 1, commit_ms: 1, push_ms: 1, index_ms: null },
    });
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('running');
    await h.server.reaper.runOnce();
    expect(h.registry.has(DIGEST_PUSHED)).toBe(false);
    await executor.ok((await executor.pollOne('delete_image')).op_id, { removed: [] });
    await h.server.reaper.runOnce();
    expect(await snapshot(id)).toMatchObject({ status: 'deleted', digest: DIGEST_PUSHED });
  });

  it('looks the pushed manifest up by tag when the executor vanished mid-push', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = (await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {})).json.snapshot_id as string;
    const op = await executor.pollOne('snapshot');
    h.registry.push(`${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`, DIGEST_ORPHAN);
    h.clock.advanceSecs(60); // the executor stops heartbeating
    await h.server.monitor.runOnce();
    expect(await snapshot(id)).toMatchObject({ status: 'failed', error: expect.stringContaining('lost during snapshot') });
    await h.server.reaper.runOnce();
    expect(h.registry.has(DIGEST_ORPHAN)).toBe(false);
  });
});

describe('late pushes', () => {
  it('deletes the manifest of a push reported after the server gave up on it', async () => {
    await h.close();
    h = await Harness.start({ operations: { max_attempts: 1, snapshot_lease_secs: 60 } });
    const { executor, sandboxId } = await runningSandbox(h);
    const id = (await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {})).json.snapshot_id as string;
    const op = await executor.pollOne('snapshot');
    h.clock.advanceSecs(61);
    await executor.heartbeat();
    await h.server.monitor.runOnce();
    await h.server.reaper.runOnce(); // nothing in the registry yet: the orphan check finds nothing
    expect((await snapshot(id)).status).toBe('failed');

    const ref = `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`;
    h.registry.push(ref, DIGEST_LATE);
    const late = await executor.ok(op.op_id, {
      image_ref: ref, digest: DIGEST_LATE, size_bytes: 1,
      timings: { pause_ms: 1, commit_ms: 1, push_ms: 1, index_ms: null },
    });
    expect(late.json).toMatchObject({ ignored: true });
    await h.server.reaper.runOnce();
    expect(h.registry.has(DIGEST_LATE)).toBe(false);
    expect((await snapshot(id)).status).toBe('failed');
  });
});
