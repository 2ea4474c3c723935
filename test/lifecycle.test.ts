/**
 * Issue 12 end to end: the real server, two executors with their own Docker engines (host B
 * fails its first create_sandbox on purpose: CRYO_FAULT_FAIL_CREATES=1), a registry with
 * htpasswd auth, FUSE and runc for lazy sandboxes. Fork 10 over two hosts with one failure kept
 * to itself, snapshot-and-fork, rollback in place (eager, lazy, and back), retention, a sliding
 * TTL, the base-image fallback, and names used through the real `cryo` CLI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type Cluster } from './support/cluster';
import { docker, importBusybox } from './support/images';
import { killAll, REPO_ROOT, waitFor } from './support/processes';
import { endSandboxes, execIn, obj, waitSandbox, waitSnapshot, type Obj } from './support/api';

const NS = '/v1/namespaces/life';
const IMAGE = 'busybox:local';
let cluster: Cluster;
let lazySupported = false;

const api = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: Obj }> => {
  const res = await cluster.api(method, `${NS}${path}`, body);
  return { status: res.status, body: obj(res.body) };
};
const exec = (id: string, command: string[]): Promise<Obj> => execIn(cluster, NS, id, command);
const read = async (id: string, file: string): Promise<string> => {
  const out = await exec(id, ['sh', '-c', `cat ${file} 2>/dev/null || echo MISSING`]);
  return String(out.stdout).trim();
};

async function sandboxOn(executor: string, labels: Record<string, string> = {}): Promise<string> {
  const res = await api('POST', '/sandboxes', { image: IMAGE, command: ['sh'], executor_id: executor, labels });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(res.body.sandbox_id);
  await waitSandbox(cluster, NS, id, ['running']);
  return id;
}

async function snapshotOf(sandboxId: string, body: Record<string, unknown> = {}, indexed = false): Promise<Obj> {
  const res = await api('POST', `/sandboxes/${sandboxId}/snapshots`, body);
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(res.body.snapshot_id);
  const done = indexed
    ? (s: Obj) => s.status === 'failed' || s.clip_index_ref !== null || s.clip_error !== null
    : (s: Obj) => s.status !== 'creating';
  const snap = await waitSnapshot(cluster, NS, id, done, indexed ? 'indexed' : 'active');
  expect(snap.status, JSON.stringify(snap)).toBe('active');
  if (indexed) expect(snap.clip_error).toBeNull();
  return snap;
}

/** The registry's answer to a HEAD of a snapshot image's manifest (200 there, 404 gone). */
async function registryHead(imageRef: string): Promise<number> {
  const host = cluster.registryHost ?? '';
  const path = imageRef.slice(host.length + 1);
  const colon = path.lastIndexOf(':');
  const auth = `Basic ${Buffer.from(`${cluster.registryUser}:${cluster.registryPassword}`).toString('base64')}`;
  const res = await fetch(`http://${host}/v2/${path.slice(0, colon)}/manifests/${path.slice(colon + 1)}`, {
    method: 'HEAD', headers: { authorization: auth, accept: 'application/vnd.docker.distribution.manifest.v2+json' },
  });
  return res.status;
}

/** The real `cryo` CLI against the cluster, in namespace life. */
function cryo(args: string[]): { code: number; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [join(REPO_ROOT, 'apps', 'cli', 'bin', 'cryo.js'), ...args], {
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, CRYO_SERVER: cluster.serverUrl, CRYO_API_KEY: cluster.apiKey, CRYO_NAMESPACE: 'life' },
  });
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

beforeAll(async () => {
  cluster = await startCluster({
    hosts: [{ name: 'A' }, { name: 'B', env: { CRYO_FAULT_FAIL_CREATES: '1' } }],
    heartbeatTimeoutSecs: 20,
    serverConfig: 'snapshots:\n  reaper_interval_secs: 1\n',
  });
  for (const name of ['A', 'B']) {
    const engine = cluster.engines.get(name);
    if (engine === undefined) throw new Error(`engine ${name} expected`);
    importBusybox(engine.host, IMAGE);
  }
  const executors = obj((await cluster.api('GET', '/v1/executors')).body).items as Array<{ executor_id: string; capabilities: { lazy: boolean } }>;
  lazySupported = executors.find((e) => e.executor_id === 'B')?.capabilities.lazy === true;
}, 600_000);

afterAll(async () => {
  // Lazy sandboxes outlive their executor (detached mounts): end every sandbox through the API first.
  if (cluster !== undefined) await endSandboxes(cluster, NS);
  await cluster?.stop();
  await killAll();
});

describe('fork', () => {
  it('forks one snapshot into 10 sandboxes over two hosts; the one that fails stays on its own', async () => {
    const source = await sandboxOn('A');
    expect((await exec(source, ['sh', '-c', 'echo forked > /data/f.txt'])).exit_code).toBe(0);
    const snap = await snapshotOf(source);

    const res = await api('POST', `/snapshots/${String(snap.snapshot_id)}/fork`, { count: 10, labels: { run: 'fork10' } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const forks = res.body.sandboxes as Array<{ sandbox_id: string; executor_id: string }>;
    expect(forks).toHaveLength(10);
    expect(forks.filter((f) => f.executor_id === 'A')).toHaveLength(5);
    expect(forks.filter((f) => f.executor_id === 'B')).toHaveLength(5);

    const settled = await Promise.all(forks.map((f) => waitSandbox(cluster, NS, f.sandbox_id, ['running', 'terminated'])));
    const failed = settled.filter((s) => s.status === 'terminated');
    expect(failed, JSON.stringify(failed)).toHaveLength(1);
    expect(failed[0]).toMatchObject({ executor_id: 'B', outcome: { kind: 'failed', reason: expect.stringContaining('fault injected') } });
    const running = settled.filter((s) => s.status === 'running');
    expect(running).toHaveLength(9);
    expect(new Set(running.map((s) => s.executor_id))).toEqual(new Set(['A', 'B']));
    for (const sandbox of running) {
      expect(sandbox).toMatchObject({ labels: { run: 'fork10' }, restored_from_snapshot: snap.snapshot_id });
      expect(await read(String(sandbox.sandbox_id), '/data/f.txt')).toBe('forked');
    }
    for (const f of forks) await api('DELETE', `/sandboxes/${f.sandbox_id}`);
  });

  it('snapshots a running sandbox and forks it in one call; the forks start once the snapshot is active', async () => {
    const source = await sandboxOn('A');
    expect((await exec(source, ['sh', '-c', 'echo from-source > /data/s.txt'])).exit_code).toBe(0);
    const res = await api('POST', `/sandboxes/${source}/fork`, { count: 2 });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const snapshotId = String(res.body.snapshot_id);
    const forks = res.body.sandboxes as Array<{ sandbox_id: string; status: string }>;
    expect(forks.map((f) => f.status)).toEqual(['pending', 'pending']);
    for (const f of forks) {
      const sandbox = await waitSandbox(cluster, NS, f.sandbox_id, ['running']);
      expect(sandbox.restored_from_snapshot).toBe(snapshotId);
      expect(await read(f.sandbox_id, '/data/s.txt')).toBe('from-source');
      await api('DELETE', `/sandboxes/${f.sandbox_id}`);
    }
    expect((await api('GET', `/snapshots/${snapshotId}`)).body).toMatchObject({ status: 'active', sandbox_id: source });
    expect((await api('GET', `/sandboxes/${source}`)).body.status).toBe('running');
  });
});

describe('rollback in place', () => {
  it('replaces the container with the snapshot: eager, then lazy (driver changes), then eager again', async () => {
    const id = await sandboxOn('B', { role: 'rollback' });
    const before = (await api('GET', `/sandboxes/${id}`)).body;
    expect((await exec(id, ['sh', '-c', 'echo one > /data/v.txt'])).exit_code).toBe(0);
    const snap = await snapshotOf(id, {}, true);
    const snapshotId = String(snap.snapshot_id);
    const engineB = cluster.engines.get('B')?.host ?? '';

    const rollBack = async (mode: 'eager' | 'lazy'): Promise<Obj> => {
      expect((await exec(id, ['sh', '-c', 'echo two > /data/v.txt && echo later > /data/later.txt'])).exit_code).toBe(0);
      const res = await api('POST', `/sandboxes/${id}/rollback`, { snapshot_id: snapshotId, mode });
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      expect(res.body).toEqual({ sandbox_id: id, status: 'restoring', snapshot_id: snapshotId, restore_mode: mode });
      const after = await waitSandbox(cluster, NS, id, ['running']);
      expect(after).toMatchObject({
        sandbox_id: id, labels: { role: 'rollback' }, timeout_secs: before.timeout_secs, expires_at: before.expires_at,
        executor_id: 'B', restored_from_snapshot: snapshotId, restore_mode: mode,
      });
      // The snapshot's files, and not the ones written after it.
      expect(await read(id, '/data/v.txt')).toBe('one');
      expect(await read(id, '/data/later.txt')).toBe('MISSING');
      return after;
    };

    await rollBack('eager');
    expect(docker(engineB, ['ps', '-q', '--filter', `name=cryo-${id}`])).not.toBe('');
    // As in lazy-restore.test.ts: hosts of this suite have FUSE and runc.
    expect(lazySupported).toBe(true);
    await rollBack('lazy');
    // Now run by runc from the FUSE-mounted index: no Docker container of it is left.
    expect(docker(engineB, ['ps', '-aq', '--filter', `name=cryo-${id}`])).toBe('');
    expect(readFileSync('/proc/mounts', 'utf8')).toContain(id);
    await rollBack('eager');
    expect(docker(engineB, ['ps', '-q', '--filter', `name=cryo-${id}`])).not.toBe('');
    await waitFor('the lazy mount of the sandbox gone', async () => (readFileSync('/proc/mounts', 'utf8').includes(id) ? undefined : true), 60_000);
    expect((await api('GET', `/snapshots/${snapshotId}`)).body.last_used_at).not.toBeNull();
  });

  it('answers 410 for an expired snapshot; the sandbox keeps running', async () => {
    const id = await sandboxOn('A');
    const short = await snapshotOf(id, { ttl_secs: 2 });
    await sleep(2500);
    const gone = await api('POST', `/sandboxes/${id}/rollback`, { snapshot_id: short.snapshot_id });
    expect(gone.status).toBe(410);
    expect((await api('GET', `/sandboxes/${id}`)).body.status).toBe('running');
    expect((await exec(id, ['true'])).exit_code).toBe(0);
  });
});

describe('retention, sliding TTL, fallback', () => {
  it('keep_last deletes the older snapshots of the sandbox from the registry, saying why', async () => {
    const id = await sandboxOn('A');
    const s1 = await snapshotOf(id);
    const s2 = await snapshotOf(id);
    expect(await registryHead(String(s1.image_ref))).toBe(200);
    const s3 = await snapshotOf(id, { keep_last: 2 });
    const deleted = await waitSnapshot(cluster, NS, String(s1.snapshot_id), (s) => s.status === 'deleted', 'deleted by retention');
    expect(deleted).toMatchObject({ deleted_reason: 'retention' });
    expect(await registryHead(String(s1.image_ref))).toBe(404);
    for (const kept of [s2, s3]) {
      expect((await api('GET', `/snapshots/${String(kept.snapshot_id)}`)).body.status).toBe('active');
      expect(await registryHead(String(kept.image_ref))).toBe(200);
    }
  });

  it('ttl_from last_use keeps a used snapshot alive past its first deadline; a fixed one expires', async () => {
    const id = await sandboxOn('A');
    const fixed = await snapshotOf(id, { ttl_secs: 14 });
    const sliding = await snapshotOf(id, { ttl_secs: 14, ttl_from: 'last_use' });
    const created = Date.parse(String(sliding.created_at));
    await sleep(Math.max(0, created + 8_000 - Date.now()));
    const restored = await api('POST', `/snapshots/${String(sliding.snapshot_id)}/restore`, { executor_id: 'A' });
    expect(restored.status).toBe(202);
    const used = (await api('GET', `/snapshots/${String(sliding.snapshot_id)}`)).body;
    expect(Date.parse(String(used.last_used_at))).toBeGreaterThanOrEqual(created + 8_000);
    expect(Date.parse(String(used.expires_at))).toBe(Date.parse(String(used.last_used_at)) + 14_000);
    await waitSnapshot(cluster, NS, String(fixed.snapshot_id), (s) => s.status === 'expired', 'expired');
    await sleep(Math.max(0, created + 16_000 - Date.now()));
    // Past 14 s from its creation, restored 8 s in: alive until 22 s.
    expect((await api('GET', `/snapshots/${String(sliding.snapshot_id)}`)).body.status).toBe('active');
    const again = await api('POST', `/snapshots/${String(sliding.snapshot_id)}/restore`, { executor_id: 'A' });
    expect(again.status, JSON.stringify(again.body)).toBe(202);
    await waitSandbox(cluster, NS, String(again.body.sandbox_id), ['running']);
  });

  it('on_expired base_image starts the base image with the command and says so; fail answers 410', async () => {
    const id = await sandboxOn('A');
    expect((await exec(id, ['sh', '-c', 'echo snapshot-only > /data/gone.txt'])).exit_code).toBe(0);
    const snap = await snapshotOf(id, { ttl_secs: 2 });
    await waitSnapshot(cluster, NS, String(snap.snapshot_id), (s) => s.status === 'expired', 'expired');
    expect((await api('POST', `/snapshots/${String(snap.snapshot_id)}/restore`, {})).status).toBe(410);
    const res = await api('POST', `/snapshots/${String(snap.snapshot_id)}/restore`, { on_expired: 'base_image', executor_id: 'B' });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    expect(res.body).toMatchObject({ restored_from_snapshot: null, fallback: { reason: expect.stringContaining(`started from its base image ${IMAGE}`) } });
    const sandbox = await waitSandbox(cluster, NS, String(res.body.sandbox_id), ['running']);
    expect(sandbox).toMatchObject({ image: IMAGE, command: ['sh'], restored_from_snapshot: null, executor_id: 'B' });
    expect(await read(String(res.body.sandbox_id), '/data/gone.txt')).toBe('MISSING');
    const forked = await api('POST', `/snapshots/${String(snap.snapshot_id)}/fork`, { count: 2, on_expired: 'base_image' });
    expect(forked.body).toMatchObject({ restored_from_snapshot: null, fallback: { reason: expect.stringContaining('expired at') } });
  });
});

describe('names', () => {
  it('a tag is unique among the namespace\'s live snapshots, and the CLI takes tag:NAME for a snapshot id', async () => {
    const id = await sandboxOn('A');
    expect((await exec(id, ['sh', '-c', 'echo golden > /data/g.txt'])).exit_code).toBe(0);
    const golden = await snapshotOf(id, { tag: 'golden' });
    // The registry tag is made of ids, not of the name.
    expect(String(golden.image_ref)).toMatch(/:sb-sbx-[a-z0-9]+-snap-snap-[a-z0-9]+$/);
    const clash = await api('POST', `/sandboxes/${id}/snapshots`, { tag: 'golden' });
    expect(clash.status).toBe(409);
    expect(obj(clash.body.error).message).toContain(`already used by snapshot ${String(golden.snapshot_id)}`);
    // Another namespace has its own names.
    const other = await cluster.api('POST', '/v1/namespaces/life-other/sandboxes', { image: IMAGE, command: ['sh'], executor_id: 'A' });
    const otherId = String(obj(other.body).sandbox_id);
    await waitSandbox(cluster, '/v1/namespaces/life-other', otherId, ['running']);
    expect((await cluster.api('POST', `/v1/namespaces/life-other/sandboxes/${otherId}/snapshots`, { tag: 'golden' })).status).toBe(202);

    const listed = cryo(['snapshots', 'list', '--tag', 'golden', '--quiet']);
    expect(listed).toMatchObject({ code: 0, stdout: `${String(golden.snapshot_id)}\n` });
    const restored = cryo(['snapshots', 'restore', 'tag:golden', '--wait', '--quiet']);
    expect(restored.code, restored.stderr).toBe(0);
    const restoredId = restored.stdout.trim();
    expect(await read(restoredId, '/data/g.txt')).toBe('golden');
    expect((await exec(restoredId, ['sh', '-c', 'echo changed > /data/g.txt'])).exit_code).toBe(0);
    const rolled = cryo(['sandboxes', 'rollback', restoredId, 'tag:golden', '--wait']);
    expect(rolled.code, rolled.stderr).toBe(0);
    expect(rolled.stdout).toContain(`rolled back to snapshot ${String(golden.snapshot_id)}`);
    expect(await read(restoredId, '/data/g.txt')).toBe('golden');
    const forked = cryo(['snapshots', 'fork', 'tag:golden', '--count', '2', '--wait', '--quiet']);
    expect(forked.code, forked.stderr).toBe(0);
    expect(forked.stdout.trim().split('\n')).toHaveLength(2);
    expect(cryo(['snapshots', 'get', 'tag:nothing'])).toMatchObject({ code: 1, stderr: 'error: no snapshot in namespace life is tagged nothing (SNAPSHOT_TAG_NOT_FOUND)\n' });
  });
});
