import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, REGISTRY, runningSandbox, type FakeExecutor } from '../testing/harness';

const DIGEST_ABC = `sha256:${'a'.repeat(64)}`;

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ snapshots: { default_ttl_secs: 3600 } });
});
afterEach(async () => {
  await h.close();
});

async function snapshotOf(sandboxId: string, body: Record<string, unknown> = {}): Promise<string> {
  const reply = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, body);
  if (reply.status !== 202) throw new Error(`snapshot answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.json.snapshot_id as string;
}

async function activeSnapshot(executor: FakeExecutor, sandboxId: string, body: Record<string, unknown> = {}) {
  const snapshotId = await snapshotOf(sandboxId, body);
  const pushed = await executor.pushNext({ sizeBytes: 4096 });
  expect(pushed.snapshotId).toBe(snapshotId);
  return pushed;
}

describe('snapshot creation', () => {
  it('goes creating -> active with what the executor reports, the sandbox snapshotting -> running', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const created = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { labels: { kind: 'test' } });
    expect(created.status).toBe(202);
    expect(created.json).toMatchObject({ status: 'creating' });
    const id = created.json.snapshot_id as string;
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('snapshotting');
    const again = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    expect(again.status).toBe(409);
    expect(again.json).toMatchObject({ error: { message: expect.stringContaining('already snapshotting') } });

    const op = await executor.pollOne('snapshot');
    expect(op.payload).toEqual({
      sandbox_id: sandboxId, snapshot_id: id, namespace: 'test', tag: `sb-${sandboxId}-snap-${id}`, base_image: 'busybox:latest',
    });
    expect((await executor.progress(op.op_id, { phase: 'push', bytes_done: 10, bytes_total: 100 })).json).toEqual({ ignored: false, reason: null });
    expect((await h.api('GET', `/snapshots/${id}`)).json.progress).toEqual({ phase: 'push', bytes_done: 10, bytes_total: 100 });

    const ref = `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`;
    await executor.ok(op.op_id, {
      image_ref: ref, digest: DIGEST_ABC, size_bytes: 1234,
      timings: { pause_ms: 12, commit_ms: 80, push_ms: 900, index_ms: null },
    });
    const snapshot = (await h.api('GET', `/snapshots/${id}`)).json;
    expect(snapshot).toMatchObject({
      status: 'active', image_ref: ref, digest: DIGEST_ABC, size_bytes: 1234, base_image: 'busybox:latest',
      executor_id: 'exec-a', ttl_secs: 3600, progress: null, labels: { kind: 'test' }, error: null,
      timings: { pause_ms: 12, commit_ms: 80, push_ms: 900, index_ms: null },
      expires_at: new Date(Date.parse(snapshot.created_at as string) + 3600_000).toISOString(),
    });
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('running');
    expect((await h.api('GET', `/sandboxes/${sandboxId}/snapshots`)).json.items).toHaveLength(1);
    expect(await h.server.metrics.value('cryo_snapshots_created_total')).toBe(1);
  });

  it('a pre-copy result carries its clip index, capture and excluded mounts: active with clip_index_ref, no build_index round', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = await snapshotOf(sandboxId);
    const op = await executor.pollOne('snapshot');
    const ref = `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`;
    const capture = {
      method: 'precopy', bytes_pushed: 5_000_000, volumes: ['/data'],
      passes: [
        { paused: false, ms: 410, entries: 12, changed: 12, files_copied: 5, bytes_copied: 104_857_600 },
        { paused: true, ms: 21, entries: 12, changed: 1, files_copied: 1, bytes_copied: 4096 },
      ],
    };
    const excluded = [{ type: 'tmpfs', destination: '/scratch', source: null, name: null, reason: 'a tmpfs holds memory' }];
    await executor.ok(op.op_id, {
      image_ref: ref, digest: DIGEST_ABC, size_bytes: 1234,
      timings: { pause_ms: 25, precopy_ms: 410, commit_ms: null, push_ms: 900, index_ms: 40 },
      clip_index_ref: `${ref}.clip`, capture, excluded_mounts: excluded,
    });
    expect((await h.api('GET', `/snapshots/${id}`)).json).toMatchObject({
      status: 'active', clip_index_ref: `${ref}.clip`, capture, excluded_mounts: excluded,
      timings: { pause_ms: 25, precopy_ms: 410, commit_ms: null, push_ms: 900, index_ms: 40 },
    });
    expect(await executor.poll()).toEqual([]);
  });

  it('a commit result (no index, no capture) still gets a build_index round, and reads with empty capture fields', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = await snapshotOf(sandboxId);
    const op = await executor.pollOne('snapshot');
    const ref = `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`;
    await executor.ok(op.op_id, { image_ref: ref, digest: DIGEST_ABC, size_bytes: 1, timings: { pause_ms: 1, commit_ms: 2, push_ms: 3, index_ms: null } });
    expect((await h.api('GET', `/snapshots/${id}`)).json).toMatchObject({
      status: 'active', clip_index_ref: null, capture: null, excluded_mounts: [], timings: { precopy_ms: null },
    });
    expect((await executor.pollOne('build_index')).payload).toMatchObject({ snapshot_id: id, digest: DIGEST_ABC });
  });

  it('records the layer count and whether the executor flattened the image (an executor that does not say: null, false)', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const flatId = await snapshotOf(sandboxId);
    const op = await executor.pollOne('snapshot');
    await executor.ok(op.op_id, {
      image_ref: `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`, digest: DIGEST_ABC, size_bytes: 1234, layers: 1, flattened: true,
      timings: { pause_ms: 12, commit_ms: 80, push_ms: 900, index_ms: null, flatten_ms: 2500 },
    });
    expect((await h.api('GET', `/snapshots/${flatId}`)).json).toMatchObject({
      status: 'active', layers: 1, flattened: true, timings: { pause_ms: 12, commit_ms: 80, push_ms: 900, index_ms: null, flatten_ms: 2500 },
    });
    const oldId = await snapshotOf(sandboxId);
    const old = await executor.pollOne('snapshot');
    await executor.ok(old.op_id, {
      image_ref: `${REGISTRY.url}/${REGISTRY.repository}:${old.payload.tag}`, digest: DIGEST_ABC, size_bytes: 1234,
      timings: { pause_ms: 12, commit_ms: 80, push_ms: 900, index_ms: null },
    });
    const listed = (await h.api('GET', `/sandboxes/${sandboxId}/snapshots`)).json.items as Array<Record<string, unknown>>;
    expect(listed.find((s) => s.snapshot_id === oldId)).toMatchObject({ layers: null, flattened: false, timings: { flatten_ms: null } });
    expect(listed.find((s) => s.snapshot_id === flatId)).toMatchObject({ layers: 1, flattened: true });
  });

  it('ends failed with the executor error verbatim; the sandbox keeps running; restore is 409', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = await snapshotOf(sandboxId);
    const op = await executor.pollOne('snapshot');
    const message = 'registry 127.0.0.1:5001 rejected credentials for user myuser (HTTP 401)';
    await executor.fail(op.op_id, 'REGISTRY_UNAUTHORIZED', message);
    expect((await h.api('GET', `/snapshots/${id}`)).json).toMatchObject({ status: 'failed', error: message });
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('running');
    const restore = await h.api('POST', `/snapshots/${id}/restore`, {});
    expect(restore.status).toBe(409);
    expect(restore.json).toMatchObject({ error: { code: 'CONFLICT', message: expect.stringContaining(message) } });
    // A result arriving again for the ended operation is ignored.
    const late = await executor.ok(op.op_id, {});
    expect(late.json).toMatchObject({ ignored: true, reason: expect.stringContaining('already ended (failed)') });
  });

  it('answers 409 for a sandbox that is not running', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const pending = (await h.api('POST', '/sandboxes', { image: 'busybox' })).json.sandbox_id as string;
    const reply = await h.api('POST', `/sandboxes/${pending}/snapshots`, {});
    expect(reply.status).toBe(409);
    expect(reply.json).toMatchObject({ error: { message: `sandbox ${pending} is pending; only a running sandbox can be snapshotted` } });
  });

  it('takes a user tag, and refuses a tag still in use', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await activeSnapshot(executor, sandboxId, { tag: 'v1' });
    const clash = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { tag: 'v1' });
    expect(clash.status).toBe(409);
    expect((await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { tag: 'bad tag!' })).status).toBe(400);
  });

  it('accepts an empty body as {}', async () => {
    const { sandboxId } = await runningSandbox(h);
    const reply = await h.request('POST', `/v1/namespaces/test/sandboxes/${sandboxId}/snapshots`);
    expect(reply.status).toBe(202);
  });
});

describe('TTL and limits', () => {
  it('uses the default TTL, 0 for never, and recomputes expires_at from created_at on PATCH', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const { snapshotId } = await activeSnapshot(executor, sandboxId, { ttl_secs: 0 });
    const created = Date.parse((await h.api('GET', `/snapshots/${snapshotId}`)).json.created_at as string);
    expect((await h.api('GET', `/snapshots/${snapshotId}`)).json).toMatchObject({ ttl_secs: 0, expires_at: null });

    h.clock.advanceSecs(100);
    const patched = await h.api('PATCH', `/snapshots/${snapshotId}`, { ttl_secs: 500 });
    expect(patched.status).toBe(200);
    expect(patched.json).toMatchObject({ ttl_secs: 500, expires_at: new Date(created + 500_000).toISOString() });

    const past = await h.api('PATCH', `/snapshots/${snapshotId}`, { ttl_secs: 50 });
    expect(past.status).toBe(422);
    expect(past.json).toMatchObject({
      error: { code: 'UNPROCESSABLE', message: expect.stringMatching(/ttl_secs 50 would make snapshot .* expire at .*already past.*100s ago/) },
    });
    expect((await h.api('PATCH', `/snapshots/${snapshotId}`, { ttl_secs: 'long' })).status).toBe(400);
    expect((await h.api('PATCH', `/snapshots/${snapshotId}`, { ttl_secs: 0 })).json).toMatchObject({ expires_at: null });
  });

  it('refuses a TTL over snapshots.max_ttl_secs (422) and snapshots over max_per_namespace (429)', async () => {
    await h.close();
    h = await Harness.start({ snapshots: { default_ttl_secs: 60, max_ttl_secs: 3600, max_per_namespace: 2 } });
    const { executor, sandboxId } = await runningSandbox(h);
    const long = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 7200 });
    expect(long.status).toBe(422);
    expect(long.json).toMatchObject({ error: { message: 'ttl_secs 7200 exceeds the limit snapshots.max_ttl_secs = 3600', details: { limit: 'snapshots.max_ttl_secs', value: 3600 } } });
    const never = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 0 });
    expect(never.status).toBe(422);
    expect(never.json).toMatchObject({ error: { message: expect.stringContaining('(never expire)') } });

    const { snapshotId } = await activeSnapshot(executor, sandboxId);
    expect((await h.api('PATCH', `/snapshots/${snapshotId}`, { ttl_secs: 4000 })).status).toBe(422);
    await activeSnapshot(executor, sandboxId);
    const third = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    expect(third.status).toBe(429);
    expect(third.json).toMatchObject({
      error: { code: 'LIMIT_EXCEEDED', message: expect.stringContaining('snapshots.max_per_namespace is 2') },
    });
    // Another namespace has its own count.
    expect((await h.request('GET', '/v1/namespaces/other/snapshots')).json.items).toEqual([]);
  });
});

describe('restore', () => {
  it('starts a new sandbox with a create_sandbox operation carrying the restore, preferring the executor with the image', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const b = h.executor('exec-b', { capacity: { cpus: 4, memory_mb: 8192, max_sandboxes: 100 } });
    await b.heartbeat();
    const { snapshotId, digest, ref } = await activeSnapshot(a, sandboxId);
    await a.heartbeat(); // reports the committed image

    const restored = await h.api('POST', `/snapshots/${snapshotId}/restore`, { command: ['sh'], env: { A: '1' } });
    expect(restored.status).toBe(202);
    expect(restored.json).toMatchObject({ status: 'pending', restored_from_snapshot: snapshotId });
    const op = await a.pollOne('create_sandbox');
    expect(op.payload).toMatchObject({
      image: ref, command: ['sh'], env: { A: '1' },
      restore: { snapshot_id: snapshotId, image_ref: ref, digest, clip_index_ref: null, mode: 'eager' },
    });
    const pinned = await h.api('POST', `/snapshots/${snapshotId}/restore`, { executor_id: 'exec-b' });
    expect(pinned.status).toBe(202);
    expect((await b.pollOne('create_sandbox')).payload.restore?.snapshot_id).toBe(snapshotId);
    const viaCreate = await h.api('POST', '/sandboxes', { image: 'ignored', snapshot_id: snapshotId, executor_id: 'exec-b' });
    expect(viaCreate.json).toMatchObject({ restored_from_snapshot: snapshotId });
  });

  it('shows the executor\'s pull progress on the pending sandbox, and none once it runs', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const { snapshotId } = await activeSnapshot(a, sandboxId);
    const restored = await h.api('POST', `/snapshots/${snapshotId}/restore`, {});
    const id = restored.json.sandbox_id as string;
    expect((await h.api('GET', `/sandboxes/${id}`)).json.progress).toBeNull();
    const op = await a.pollOne('create_sandbox');
    const pulling = { phase: 'pull', bytes_done: 1000, bytes_total: 4000 };
    expect((await a.progress(op.op_id, pulling)).json).toEqual({ ignored: false, reason: null });
    expect((await h.api('GET', `/sandboxes/${id}`)).json).toMatchObject({ status: 'pending', progress: pulling });
    const listed = (await h.api('GET', '/sandboxes')).json.items as Array<{ sandbox_id: string; progress: unknown }>;
    expect(listed.find((s) => s.sandbox_id === id)?.progress).toEqual(pulling);
    await a.ok(op.op_id, { container_id: 'c-restored', runtime: 'docker' });
    expect((await h.api('GET', `/sandboxes/${id}`)).json).toMatchObject({ status: 'running', progress: null });
    // Progress of an operation that ended is ignored (stale), not stored.
    expect((await a.progress(op.op_id, pulling)).json.ignored).toBe(true);
  });

  it('restores a local-only snapshot only on its own executor', async () => {
    const a = h.executor('exec-a', { registry: null });
    const b = h.executor('exec-b', { registry: null });
    await a.heartbeat();
    await b.heartbeat();
    await h.api('POST', '/sandboxes', { image: 'busybox', executor_id: 'exec-a' });
    const sandboxId = await a.startNext();
    const snapshotId = await snapshotOf(sandboxId);
    const op = await a.pollOne('snapshot');
    expect(op.payload.tag).toBe(`sb-${sandboxId}-snap-${snapshotId}`);
    await a.ok(op.op_id, {
      image_ref: `cryo-snapshots:${op.payload.tag}`, digest: null, size_bytes: 10,
      timings: { pause_ms: 1, commit_ms: 2, push_ms: null, index_ms: null },
    });
    const elsewhere = await h.api('POST', `/snapshots/${snapshotId}/restore`, { executor_id: 'exec-b' });
    expect(elsewhere.status).toBe(422);
    expect(elsewhere.json).toMatchObject({ error: { message: expect.stringContaining('stored only on executor exec-a') } });
    const anywhere = await h.api('POST', `/snapshots/${snapshotId}/restore`, {});
    expect(anywhere.status).toBe(202);
    expect((await h.api('GET', `/sandboxes/${anywhere.json.sandbox_id as string}`)).json.executor_id).toBe('exec-a');
  });

  it('restores lazily only with a clip index and on an executor that can', async () => {
    const { executor: a, sandboxId } = await runningSandbox(h, 'exec-a');
    const plain = await activeSnapshot(a, sandboxId);
    const noIndex = await h.api('POST', `/snapshots/${plain.snapshotId}/restore`, { mode: 'lazy' });
    expect(noIndex.status).toBe(422);
    expect(noIndex.json).toMatchObject({ error: { message: expect.stringContaining('no clip index') } });

    await snapshotOf(sandboxId);
    const indexed = await a.pushNext({ clip: true });
    const noLazy = await h.api('POST', `/snapshots/${indexed.snapshotId}/restore`, { mode: 'lazy' });
    expect(noLazy.status).toBe(503);
    expect(noLazy.json).toMatchObject({ error: { message: expect.stringContaining('lazy restore is unavailable (no FUSE in tests)') } });
    const pinned = await h.api('POST', `/snapshots/${indexed.snapshotId}/restore`, { mode: 'lazy', executor_id: 'exec-a' });
    expect(pinned.status).toBe(422);

    const lazy = h.executor('exec-l', { capabilities: { lazy: true, lazy_unavailable_reason: null } });
    await lazy.heartbeat();
    const ok = await h.api('POST', `/snapshots/${indexed.snapshotId}/restore`, { mode: 'lazy' });
    expect(ok.status).toBe(202);
    const op = await lazy.pollOne('create_sandbox');
    expect(op.payload.restore).toMatchObject({ mode: 'lazy', clip_index_ref: `${indexed.ref}.clip` });
  });

  it('answers 409 while creating and 410 once deleted, with the time', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const creating = await snapshotOf(sandboxId);
    expect((await h.api('POST', `/snapshots/${creating}/restore`, {})).status).toBe(409);
    await executor.pushNext();
    await h.api('DELETE', `/snapshots/${creating}`);
    const gone = await h.api('POST', `/snapshots/${creating}/restore`, {});
    expect(gone.status).toBe(410);
    expect(gone.json).toMatchObject({ error: { code: 'GONE', message: expect.stringMatching(/is being deleted \(requested at \d{4}-/) } });
  });
});

describe('delete', () => {
  it('withdraws a snapshot the executor has not started and leaves the sandbox running', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = await snapshotOf(sandboxId);
    const reply = await h.api('DELETE', `/snapshots/${id}`);
    expect(reply.status).toBe(202);
    expect(reply.json).toMatchObject({ status: 'deleting' });
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).json.status).toBe('running');
    expect((await executor.poll()).map((o) => o.kind)).not.toContain('snapshot');
  });
});
