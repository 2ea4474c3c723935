/**
 * Issue 2 end to end: real server, real executors, two Docker engines (hosts A and B, plus C with
 * a wrong registry password and D with a fault hook) and a registry with htpasswd auth.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { startCluster, type Cluster } from './support/cluster';
import { importBusybox, docker, busyboxRootfsTar } from './support/images';
import { DOCKER_BIN } from './support/dockerd';
import { waitFor, killAll } from './support/processes';
import { obj, waitSandbox, waitSnapshot, execIn, type Obj } from './support/api';

const NS = '/v1/namespaces/e2e';
let cluster: Cluster;
let baseImage: string;

const waitSandboxIn = (id: string, statuses: string[]): Promise<Obj> => waitSandbox(cluster, NS, id, statuses);
const waitSnapshotIn = (id: string, statuses: string[]): Promise<Obj> =>
  waitSnapshot(cluster, NS, id, (s) => statuses.includes(String(s.status)), `in ${statuses.join('|')}`);
const exec = (sandboxId: string, command: string[]): Promise<Obj> => execIn(cluster, NS, sandboxId, command);

async function createSandbox(image: string, executorId: string): Promise<string> {
  const res = await cluster.api('POST', `${NS}/sandboxes`, { image, command: ['sh'], executor_id: executorId });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(obj(res.body).sandbox_id);
  await waitSandboxIn(id, ['running']);
  return id;
}

function containerState(engine: string, sandboxId: string): { Running: boolean; Paused: boolean } {
  const host = cluster.engines.get(engine)?.host ?? '';
  return JSON.parse(docker(host, ['inspect', '--format', '{{json .State}}', `cryo-${sandboxId}`])) as { Running: boolean; Paused: boolean };
}

beforeAll(async () => {
  busyboxRootfsTar();
  cluster = await startCluster({
    hosts: [{ name: 'A' }, { name: 'B' }, { name: 'C', registryPassword: 'not-the-password' }, { name: 'D' }],
    heartbeatTimeoutSecs: 20,
  });
  const registry = cluster.registry;
  if (registry === undefined) throw new Error('registry expected');
  // The base image lives in the registry: pushed with the Docker CLI, then removed from A so the
  // executor has to pull it with its own credentials.
  const engineA = cluster.engines.get('A');
  if (engineA === undefined) throw new Error('engine A expected');
  baseImage = `${registry.host}/base/busybox:1`;
  importBusybox(engineA.host, baseImage);
  const dockerConfig = mkdtempSync(join(cluster.dir, 'docker-config-'));
  execFileSync(DOCKER_BIN, ['-H', engineA.host, '--config', dockerConfig, 'login', '-u', cluster.registryUser, '--password-stdin', registry.host],
    { input: cluster.registryPassword, stdio: ['pipe', 'pipe', 'pipe'] });
  execFileSync(DOCKER_BIN, ['-H', engineA.host, '--config', dockerConfig, 'push', baseImage], { stdio: 'pipe' });
  docker(engineA.host, ['rmi', baseImage]);
  for (const name of ['C', 'D']) {
    const engine = cluster.engines.get(name);
    if (engine !== undefined) importBusybox(engine.host, 'busybox:local');
  }
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await killAll();
});

describe('snapshot on one host, restore on another', () => {
  let snapshotId = '';
  let failedSnapshotId = '';

  it('creates a sandbox on A from the registry, snapshots it, restores it on B with the same file', async () => {
    const sandboxId = await createSandbox(baseImage, 'A');
    const content = `hello from A ${Date.now()}`;
    const write = await exec(sandboxId, ['sh', '-c', `echo "${content}" > /data/note.txt && cat /data/note.txt`]);
    expect(write.exit_code).toBe(0);
    expect(write.stdout).toBe(`${content}\n`);

    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3600 });
    expect(snap.status, JSON.stringify(snap.body)).toBe(202);
    snapshotId = String(obj(snap.body).snapshot_id);
    const active = await waitSnapshotIn(snapshotId, ['active', 'failed']);
    expect(active.error).toBeNull();
    expect(active.status).toBe('active');
    expect(String(active.digest)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(active.executor_id).toBe('A');
    expect(active.ttl_secs).toBe(3600);
    expect(typeof active.expires_at).toBe('string');
    const timings = obj(active.timings);
    // Pre-copy (the default on overlay2): copied while running, paused for the last pass only,
    // pushed without the engine with its clip index in the same pass.
    for (const key of ['pause_ms', 'precopy_ms', 'push_ms', 'index_ms']) expect(typeof timings[key], key).toBe('number');
    expect(timings.commit_ms).toBeNull();
    expect(obj(active.capture).method).toBe('precopy');
    expect(String(active.clip_index_ref)).toMatch(/\.clip$/);
    const imageRef = String(active.image_ref);
    expect(imageRef.startsWith(`${cluster.registry?.host}/cryo/snapshots:`)).toBe(true);

    // The registry really has the tag, and its manifest digest is the one reported.
    const tag = imageRef.slice(imageRef.lastIndexOf(':') + 1);
    const auth = `Basic ${Buffer.from(`${cluster.registryUser}:${cluster.registryPassword}`).toString('base64')}`;
    const tags = await fetch(`http://${cluster.registry?.host}/v2/cryo/snapshots/tags/list`, { headers: { authorization: auth } });
    expect(((await tags.json()) as { tags: string[] }).tags).toContain(tag);
    const head = await fetch(`http://${cluster.registry?.host}/v2/cryo/snapshots/manifests/${tag}`, {
      method: 'HEAD', headers: { authorization: auth, accept: 'application/vnd.docker.distribution.manifest.v2+json' },
    });
    expect(head.headers.get('docker-content-digest')).toBe(active.digest);

    // The source sandbox kept running and is not paused.
    expect(obj((await cluster.api('GET', `${NS}/sandboxes/${sandboxId}`)).body).status).toBe('running');
    expect(containerState('A', sandboxId)).toMatchObject({ Running: true, Paused: false });

    const hostB = cluster.engines.get('B')?.host ?? '';
    expect(docker(hostB, ['images', '-q', imageRef])).toBe('');
    const restore = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: 'B' });
    expect(restore.status, JSON.stringify(restore.body)).toBe(202);
    expect(obj(restore.body).restored_from_snapshot).toBe(snapshotId);
    const restoredId = String(obj(restore.body).sandbox_id);
    const restored = await waitSandboxIn(restoredId, ['running']);
    expect(restored.executor_id).toBe('B');
    expect(restored.restored_from_snapshot).toBe(snapshotId);
    // B pulled it: the image is now in B's engine.
    expect(docker(hostB, ['images', '-q', imageRef])).not.toBe('');
    const read = await exec(restoredId, ['cat', '/data/note.txt']);
    expect(read.stdout).toBe(`${content}\n`);
  });

  it('a wrong registry password fails the snapshot with an error naming the registry, and the sandbox keeps running unpaused', async () => {
    const sandboxId = await createSandbox('busybox:local', 'C');
    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, {});
    expect(snap.status).toBe(202);
    failedSnapshotId = String(obj(snap.body).snapshot_id);
    const failed = await waitSnapshotIn(failedSnapshotId, ['failed', 'active']);
    expect(failed.status).toBe('failed');
    expect(String(failed.error)).toContain(`registry ${cluster.registry?.host}`);
    expect(String(failed.error)).toMatch(/rejected credentials for user cryouser/);
    expect(String(failed.error)).not.toContain('not-the-password');
    const sandbox = await waitSandboxIn(sandboxId, ['running']);
    expect(sandbox.status).toBe('running');
    expect(containerState('C', sandboxId)).toMatchObject({ Running: true, Paused: false });
    expect((await exec(sandboxId, ['echo', 'still alive'])).stdout).toBe('still alive\n');
    // Nothing half-made stays on C: no snapshot image tag remains.
    const hostC = cluster.engines.get('C')?.host ?? '';
    expect(docker(hostC, ['images', '--filter', `label=dev.cryo.snapshot-id=${failedSnapshotId}`, '-q'])).toBe('');
  });

  // 5 MB of NUL bytes on each stream encode to ~30 MB of JSON escapes: before, the result was
  // refused (413) and the exec never answered.
  it('an exec writing megabytes of binary output answers with the start of it, marked as cut', async () => {
    const sandboxId = await createSandbox('busybox:local', 'C');
    const out = await exec(sandboxId, ['sh', '-c', 'head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2; exit 3']);
    expect(out.exit_code).toBe(3);
    for (const stream of [String(out.stdout), String(out.stderr)]) {
      expect(stream.startsWith('\u0000'.repeat(1000))).toBe(true);
      expect(stream).toMatch(/\[cryo: output truncated: 5000000 bytes written; the start is kept, cut to \d+ bytes as JSON\]$/);
    }
  });

  it('restoring a failed snapshot is a 409', async () => {
    const res = await cluster.api('POST', `${NS}/snapshots/${failedSnapshotId}/restore`, {});
    expect(res.status).toBe(409);
    expect(obj(obj(res.body).error).code).toBe('CONFLICT');
  });

  it('an executor killed between pause and unpause unpauses the container after restart, and the operation ends clearly', async () => {
    const executorD = cluster.executors.get('D');
    if (executorD === undefined) throw new Error('executor D expected');
    await executorD.kill();
    await cluster.startExecutor('D', { CRYO_FAULT_HOLD_PAUSED_MS: '60000' });
    await cluster.waitExecutors(['D']);
    const sandboxId = await createSandbox('busybox:local', 'D');
    await exec(sandboxId, ['sh', '-c', 'echo before-crash > /data/crash.txt']);
    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, {});
    const snapId = String(obj(snap.body).snapshot_id);
    await waitFor('container paused by the snapshot', async () => (containerState('D', sandboxId).Paused ? true : undefined), 60_000);
    await cluster.executors.get('D')?.kill('SIGKILL');
    expect(containerState('D', sandboxId).Paused).toBe(true);

    await cluster.startExecutor('D');
    await waitFor('container unpaused after restart', async () => {
      const state = containerState('D', sandboxId);
      return state.Running && !state.Paused ? true : undefined;
    }, 60_000);
    const ended = await waitSnapshotIn(snapId, ['failed', 'active']);
    expect(ended.status).toBe('failed');
    expect(String(ended.error)).toMatch(/restarted while this snapshot operation was running/);
    expect(String(ended.error)).toMatch(/unpaused/);
    const sandbox = await waitSandboxIn(sandboxId, ['running']);
    expect(sandbox.status).toBe('running');
    expect((await exec(sandboxId, ['cat', '/data/crash.txt'])).stdout).toBe('before-crash\n');
  });

  it('answers bad input with 4xx JSON errors that name the problem', async () => {
    const noImage = await cluster.api('POST', `${NS}/sandboxes`, { command: ['sh'] });
    expect(noImage.status).toBe(400);
    expect(JSON.stringify(noImage.body)).toContain('image');
    const badCommand = await cluster.api('POST', `${NS}/sandboxes`, { image: 'x', command: 'sh' });
    expect(badCommand.status).toBe(400);
    expect(JSON.stringify(badCommand.body)).toContain('command');
    const badJson = await cluster.api('POST', `${NS}/sandboxes`, '{"image":');
    expect(badJson.status).toBe(400);
    const badTtl = await cluster.api('POST', `${NS}/sandboxes/sbx-doesnotexist1/snapshots`, { ttl_secs: -5 });
    expect(badTtl.status).toBe(400);
    expect(JSON.stringify(badTtl.body)).toContain('ttl_secs');
    const badNs = await cluster.api('GET', '/v1/namespaces/Bad..NS/sandboxes');
    expect(badNs.status).toBe(400);

    for (const path of [`${NS}/sandboxes/sbx-doesnotexist1`, `${NS}/snapshots/snap-doesnotexist1`]) {
      const res = await cluster.api('GET', path);
      expect(res.status).toBe(404);
      expect(obj(obj(res.body).error).code).toBe('NOT_FOUND');
      expect(String(obj(obj(res.body).error).message)).toContain('doesnotexist1');
    }
    expect((await cluster.api('POST', `${NS}/snapshots/snap-doesnotexist1/restore`, {})).status).toBe(404);
    expect((await cluster.api('DELETE', `${NS}/sandboxes/sbx-doesnotexist1`)).status).toBeLessThan(500);

    const noKey = await fetch(`${cluster.serverUrl}${NS}/sandboxes`);
    expect(noKey.status).toBe(401);
    expect(((await noKey.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
    const wrongKey = await cluster.api('GET', `${NS}/sandboxes`, undefined, { authorization: 'Bearer wrong' });
    expect(wrongKey.status).toBe(401);
    const executorTokenAsKey = await cluster.api('GET', `${NS}/sandboxes`, undefined, { authorization: `Bearer ${cluster.executorToken}` });
    expect(executorTokenAsKey.status).toBe(401);
  });

  it('never writes a secret into logs, the database or API responses', async () => {
    const secrets = [cluster.apiKey, cluster.executorToken, cluster.registryPassword];
    const logs = cluster.logs();
    expect(logs.length).toBeGreaterThan(1000);
    const files = readdirSync(cluster.dir).filter((f) => f.startsWith('server.db'));
    expect(files).toContain('server.db');
    const db = files.map((f) => readFileSync(join(cluster.dir, f)).toString('latin1')).join('');
    const responses = JSON.stringify([
      (await cluster.api('GET', `${NS}/snapshots?limit=500`)).body,
      (await cluster.api('GET', `${NS}/sandboxes?limit=500`)).body,
      (await cluster.api('GET', '/v1/executors')).body,
    ]);
    for (const s of secrets) {
      expect(logs.includes(s), 'secret in logs').toBe(false);
      expect(db.includes(s), 'secret in the database').toBe(false);
      expect(responses.includes(s), 'secret in API responses').toBe(false);
    }
  });
});
