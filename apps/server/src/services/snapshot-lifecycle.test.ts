/** Issue 12 on the snapshot side: retention (keep_last), sliding TTL (ttl_from), on_expired fallback, names (tag). */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, REGISTRY, runningSandbox, type FakeExecutor } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ snapshots: { default_ttl_secs: 3600 } });
});
afterEach(async () => {
  await h.close();
});

async function snapshot(executor: FakeExecutor, sandboxId: string, body: Record<string, unknown> = {}, ns = 'test'): Promise<string> {
  const reply = await h.request('POST', `/v1/namespaces/${ns}/sandboxes/${sandboxId}/snapshots`, body);
  if (reply.status !== 202) throw new Error(`snapshot answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  const pushed = await executor.pushNext();
  h.clock.advanceSecs(1); // distinct created_at: retention orders by it
  return pushed.snapshotId;
}

describe('retention: keep_last', () => {
  it('deletes the older active snapshots of the sandbox beyond the newest N once the new one is active', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const { sandboxId: otherSandbox } = await runningSandbox(h);
    const s1 = await snapshot(executor, sandboxId);
    const s2 = await snapshot(executor, sandboxId);
    const s3 = await snapshot(executor, sandboxId);
    const elsewhere = await snapshot(executor, otherSandbox);
    // The one asking is still creating: nothing is deleted yet.
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { keep_last: 2 });
    for (const id of [s1, s2, s3]) expect((await h.api('GET', `/snapshots/${id}`)).json.status).toBe('active');
    const { snapshotId: s4 } = await executor.pushNext();
    expect((await h.api('GET', `/snapshots/${s4}`)).json).toMatchObject({ status: 'active', keep_last: 2, deleted_reason: null });
    for (const id of [s1, s2]) {
      expect((await h.api('GET', `/snapshots/${id}`)).json).toMatchObject({ status: 'deleting', deleted_reason: 'retention' });
    }
    expect((await h.api('GET', `/snapshots/${s3}`)).json.status).toBe('active');
    expect((await h.api('GET', `/snapshots/${elsewhere}`)).json.status).toBe('active');
    expect(await h.server.metrics.value('cryo_snapshots_retained_out_total')).toBe(2);

    // Deleted as a DELETE would be: from the registry, then from the executor holding a copy.
    await executor.heartbeat();
    await h.server.reaper.runOnce();
    expect(h.registry.deleted.length).toBeGreaterThanOrEqual(2);
    const removals = (await executor.poll()).filter((o) => o.kind === 'delete_image');
    expect(removals.map((o) => o.payload.snapshot_id).sort()).toEqual([s1, s2].sort());
    for (const op of removals) await executor.ok(op.op_id, { removed: op.payload.image_refs });
    await h.server.reaper.runOnce();
    const gone = (await h.api('GET', `/snapshots/${s1}`)).json;
    expect(gone).toMatchObject({ status: 'deleted', deleted_reason: 'retention' });
    const restore = await h.api('POST', `/snapshots/${s1}/restore`, {});
    expect(restore.status).toBe(410);
    expect(restore.json).toMatchObject({ error: { message: expect.stringContaining('by retention') } });
    // A user's DELETE says so too.
    expect((await h.api('DELETE', `/snapshots/${s3}`)).json).toMatchObject({ deleted_reason: 'user' });
  });

  it('keeps a snapshot a lazily restored sandbox still reads', async () => {
    const lazy = h.executor('exec-l', { capabilities: { lazy: true, lazy_unavailable_reason: null } });
    await lazy.heartbeat();
    const { executor, sandboxId } = await runningSandbox(h, 'exec-a');
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const { snapshotId: old } = await executor.pushNext({ clip: true });
    h.clock.advanceSecs(1);
    const reader = await h.api('POST', `/snapshots/${old}/restore`, { mode: 'lazy' });
    expect(reader.status).toBe(202);
    const newest = await snapshot(executor, sandboxId, { keep_last: 1 });
    expect((await h.api('GET', `/snapshots/${newest}`)).json.status).toBe('active');
    expect((await h.api('GET', `/snapshots/${old}`)).json).toMatchObject({ status: 'active', deleted_reason: null });
  });

  it('refuses keep_last outside 1..1000', async () => {
    const { sandboxId } = await runningSandbox(h);
    expect((await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { keep_last: 0 })).status).toBe(400);
    expect((await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { keep_last: 1001 })).status).toBe(400);
  });
});

describe('sliding TTL: ttl_from', () => {
  it('last_use moves expires_at to now + ttl on every restore, fork or rollback; created does not', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const sliding = await snapshot(executor, sandboxId, { ttl_secs: 100, ttl_from: 'last_use' });
    const fixed = await snapshot(executor, sandboxId, { ttl_secs: 100 });
    expect((await h.api('GET', `/snapshots/${sliding}`)).json).toMatchObject({ ttl_from: 'last_use', last_used_at: null });
    expect((await h.api('GET', `/snapshots/${fixed}`)).json).toMatchObject({ ttl_from: 'created' });

    const use = async (id: string, how: 'restore' | 'fork' | 'rollback'): Promise<number> => {
      const path = how === 'rollback' ? `/sandboxes/${sandboxId}/rollback` : `/snapshots/${id}/${how}`;
      const body = how === 'rollback' ? { snapshot_id: id } : how === 'fork' ? { count: 1 } : {};
      const reply = await h.api('POST', path, body);
      return reply.status;
    };
    for (const how of ['restore', 'fork'] as const) {
      h.clock.advanceSecs(80);
      expect(await use(sliding, how)).toBe(202);
      const now = h.clock.now();
      expect((await h.api('GET', `/snapshots/${sliding}`)).json).toMatchObject({
        last_used_at: new Date(now).toISOString(), expires_at: new Date(now + 100_000).toISOString(), status: 'active',
      });
    }
    // 161 s after it was created the fixed one has expired; the sliding one lives on.
    expect(await use(fixed, 'restore')).toBe(410);
    await h.server.reaper.runOnce();
    expect((await h.api('GET', `/snapshots/${sliding}`)).json.status).toBe('active');
    expect((await h.api('GET', `/snapshots/${fixed}`)).json.status).toBe('deleting');

    // Creates of the restore and the fork: the sandbox they ran from goes on running.
    for (const op of (await executor.poll()).filter((o) => o.kind === 'create_sandbox')) {
      await executor.ok(op.op_id, { container_id: `c-${op.op_id}`, runtime: 'docker' });
    }
    h.clock.advanceSecs(80);
    expect(await use(sliding, 'rollback')).toBe(202);
    expect((await h.api('GET', `/snapshots/${sliding}`)).json.expires_at).toBe(new Date(h.clock.now() + 100_000).toISOString());

    // PATCH counts a new TTL from the last use.
    const patched = await h.api('PATCH', `/snapshots/${sliding}`, { ttl_secs: 30 });
    expect(patched.json).toMatchObject({ expires_at: new Date(h.clock.now() + 30_000).toISOString() });
    expect((await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_from: 'never' })).status).toBe(400);
  });
});

describe('graceful expiry: on_expired', () => {
  it('fails with 410 by default; base_image starts the base image with the command, saying why', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = await snapshot(executor, sandboxId, { ttl_secs: 10 });
    h.clock.advanceSecs(11);
    const gone = await h.api('POST', `/snapshots/${id}/restore`, {});
    expect(gone.status).toBe(410);
    expect((await h.api('POST', `/snapshots/${id}/restore`, { on_expired: 'fail' })).status).toBe(410);

    const fallback = await h.api('POST', `/snapshots/${id}/restore`, { on_expired: 'base_image', env: { MODE: 'cold' } });
    expect(fallback.status).toBe(202);
    expect(fallback.json).toMatchObject({
      status: 'pending', restored_from_snapshot: null,
      fallback: { reason: `snapshot ${id} expired at ${new Date(Date.parse((await h.api('GET', `/snapshots/${id}`)).json.created_at as string) + 10_000).toISOString()} (ttl_secs 10) and can no longer be restored or changed; started from its base image busybox:latest instead (on_expired: base_image)` },
    });
    const op = await executor.pollOne('create_sandbox');
    expect(op.payload).toMatchObject({ image: 'busybox:latest', command: ['sleep', '1000'], env: { MODE: 'cold' }, restore: null });
    expect((await h.api('GET', `/sandboxes/${fallback.json.sandbox_id as string}`)).json).toMatchObject({
      image: 'busybox:latest', restored_from_snapshot: null,
    });
    expect(await h.server.metrics.value('cryo_restore_fallbacks_total')).toBe(1);
    expect(h.logs.join('')).toContain('snapshot gone: started from its base image');

    // A deleted one too, with the request's own command.
    const deleted = await snapshot(executor, sandboxId);
    await h.api('DELETE', `/snapshots/${deleted}`);
    const second = await h.api('POST', `/snapshots/${deleted}/restore`, { on_expired: 'base_image', command: ['sh'] });
    expect(second.json).toMatchObject({ restored_from_snapshot: null, fallback: { reason: expect.stringContaining('is being deleted') } });
    expect((await executor.pollOne('create_sandbox')).payload).toMatchObject({ image: 'busybox:latest', command: ['sh'] });
    // A snapshot that is merely not ready is no fallback case: 409 as before.
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const creating = (await h.api('GET', `/sandboxes/${sandboxId}/snapshots?status=creating`)).json.items as Array<{ snapshot_id: string }>;
    expect((await h.api('POST', `/snapshots/${creating[0]?.snapshot_id}/restore`, { on_expired: 'base_image' })).status).toBe(409);
  });

  it('restores as before when the snapshot is there, saying which one', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const id = await snapshot(executor, sandboxId);
    const reply = await h.api('POST', `/snapshots/${id}/restore`, { on_expired: 'base_image' });
    expect(reply.json).toEqual({ sandbox_id: expect.any(String), status: 'pending', restored_from_snapshot: id });
  });
});

describe('names: tag', () => {
  it('is unique among the namespace\'s live snapshots, found with ?tag=, and never the image tag', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { tag: 'v1' });
    const op = await executor.pollOne('snapshot');
    // The registry tag is made of ids, so equal names in two namespaces never meet in the registry.
    expect(op.payload.tag).toBe(`sb-${sandboxId}-snap-${op.payload.snapshot_id}`);
    await executor.ok(op.op_id, {
      image_ref: `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`, digest: `sha256:${'d'.repeat(64)}`, size_bytes: 1,
      timings: { pause_ms: 1, commit_ms: 1, push_ms: 1, index_ms: null },
    });
    const v1 = op.payload.snapshot_id;
    expect((await h.api('GET', `/snapshots/${v1}`)).json).toMatchObject({ tag: 'v1' });

    const clash = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { tag: 'v1' });
    expect(clash.status).toBe(409);
    expect(clash.json).toMatchObject({
      error: { code: 'CONFLICT', message: `tag v1 is already used by snapshot ${v1} (active) in namespace test; delete that snapshot or choose another tag`, details: { holder: v1 } },
    });
    // Another namespace has its own names.
    await h.request('POST', '/v1/namespaces/other/sandboxes', { image: 'busybox', command: ['sh'] });
    const otherSandbox = await executor.startNext();
    const elsewhere = await snapshot(executor, otherSandbox, { tag: 'v1' }, 'other');
    expect((await h.request('GET', `/v1/namespaces/other/snapshots/${elsewhere}`)).json).toMatchObject({ tag: 'v1', status: 'active' });

    const found = await h.api('GET', '/snapshots?tag=v1');
    expect((found.json.items as Array<{ snapshot_id: string }>).map((s) => s.snapshot_id)).toEqual([v1]);
    expect((await h.api('GET', '/snapshots?tag=v2')).json.items).toEqual([]);
    expect((await h.api('GET', '/snapshots?tag=bad%20tag')).status).toBe(400);

    // Deleted: the name is free again; ?tag= finds both, newest first.
    await h.api('DELETE', `/snapshots/${v1}`);
    const again = await snapshot(executor, sandboxId, { tag: 'v1' });
    const both = (await h.api('GET', '/snapshots?tag=v1')).json.items as Array<{ snapshot_id: string; status: string }>;
    expect(both.map((s) => [s.snapshot_id, s.status])).toEqual([[again, 'active'], [v1, 'deleting']]);
    expect((await h.api('GET', `/snapshots?tag=v1&status=active`)).json.items).toHaveLength(1);
  });
});
