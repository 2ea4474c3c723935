/**
 * `snapshots.method: auto` (the default) on an engine whose storage driver is not overlay2: the
 * snapshot is taken by `docker commit`, says why (`capture.method_reason`, the executor's log),
 * and restores. Real server, executor, registry, and a private engine on the vfs driver (no kernel
 * support needed; it copies every layer, so the image is the small busybox one).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from './support/cluster';
import { docker, importBusybox } from './support/images';
import { killAll } from './support/processes';
import { execIn, obj, waitSandbox, waitSnapshot } from './support/api';

const NS = '/v1/namespaces/method-fallback';
const IMAGE = 'busybox:vfs';
let cluster: Cluster;
let engineHost: string;

beforeAll(async () => {
  cluster = await startCluster({ hosts: [{ name: 'V', storageDriver: 'vfs' }] });
  engineHost = cluster.engines.get('V')?.host ?? '';
  importBusybox(engineHost, IMAGE);
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await killAll();
});

describe('snapshots.method auto on a vfs engine', () => {
  it('falls back to docker commit, says why, and the snapshot restores eagerly with the sandbox file', async () => {
    // The premise: this engine really stores containers without overlay2.
    expect(docker(engineHost, ['info', '--format', '{{.Driver}}'])).toBe('vfs');

    const created = await cluster.api('POST', `${NS}/sandboxes`, { image: IMAGE, command: ['sh'] });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const sandboxId = String(obj(created.body).sandbox_id);
    await waitSandbox(cluster, NS, sandboxId, ['running']);
    const wrote = await execIn(cluster, NS, sandboxId, ['sh', '-c', 'echo kept-by-commit > /data/f.txt']);
    expect(wrote.exit_code, String(wrote.stderr)).toBe(0);

    const taken = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3600 });
    expect(taken.status, JSON.stringify(taken.body)).toBe(202);
    const snapshotId = String(obj(taken.body).snapshot_id);
    const snap = await waitSnapshot(cluster, NS, snapshotId, (s) => s.status === 'active' || s.status === 'failed', 'active');
    expect(snap.error).toBeNull();
    expect(snap.status).toBe('active');
    expect(snap.capture).toEqual({
      method: 'commit',
      method_reason: expect.stringContaining("storage driver is vfs, not overlay2") as unknown,
      passes: [],
      bytes_pushed: null,
      volumes: [],
    });
    // A commit's timings: the engine's commit and push, no pre-copy.
    const timings = obj(snap.timings);
    expect(timings.precopy_ms).toBeNull();
    expect(timings.commit_ms).toEqual(expect.any(Number));
    expect(timings.push_ms).toEqual(expect.any(Number));
    expect(String(snap.image_ref)).toContain(`${cluster.registryHost}/cryo/snapshots:`);
    // The commit method's clip index comes after the push, from a build_index operation.
    const indexed = await waitSnapshot(cluster, NS, snapshotId, (s) => s.clip_index_ref !== null || s.clip_error !== null, 'indexed');
    expect(indexed.clip_error).toBeNull();
    expect(String(indexed.clip_index_ref)).toBe(`${String(snap.image_ref)}.clip`);
    // The executor's log says it too, at the snapshot.
    const line = cluster.logs().split('\n').find((l) => l.includes('"msg":"snapshot method: commit"') && l.includes(snapshotId));
    expect(line, 'the executor logs the method and why').toBeDefined();
    expect(obj(JSON.parse(line ?? '{}')).reason).toBe(obj(snap.capture).method_reason);

    const restored = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { mode: 'eager', command: ['sh'] });
    expect(restored.status, JSON.stringify(restored.body)).toBe(202);
    const restoredId = String(obj(restored.body).sandbox_id);
    expect((await waitSandbox(cluster, NS, restoredId, ['running'])).restore_mode).toBe('eager');
    const read = await execIn(cluster, NS, restoredId, ['cat', '/data/f.txt']);
    expect(read.exit_code, String(read.stderr)).toBe(0);
    expect(String(read.stdout).trim()).toBe('kept-by-commit');
  });
});
