/**
 * Issue 11 (the snapshot pipeline) and issue 8 item 1 (volume data) end to end: real server and
 * executors, private Docker engines, a registry with htpasswd auth.
 *   A: pre-copy (the default on overlay2), with operator mounts (a tmpfs and a bind)
 *   B: restores (eager and lazy)
 *   C: `snapshots.method: commit`, the same operator mounts
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { startCluster, type Cluster } from './support/cluster';
import { busyboxRootfsTar, docker, importRootfs, richRootfsTar } from './support/images';
import { DOCKER_BIN } from './support/dockerd';
import { killAll } from './support/processes';
import { endSandboxes, obj, waitSandbox, waitSnapshot, execIn, type Obj } from './support/api';
import { lastLayerFromEngine, lastLayerFromRegistry, layerView } from './support/layers';

const NS = '/v1/namespaces/precopy';
let cluster: Cluster;
let richImage: string;
let volumeImage: string;
let hostDir: string;
const children: ChildProcess[] = [];

const engineHost = (name: string): string => cluster.engines.get(name)?.host ?? '';
const exec = async (sandboxId: string, script: string): Promise<Obj> => {
  const out = await execIn(cluster, NS, sandboxId, ['sh', '-c', script]);
  expect(out.exit_code, `${script}: ${String(out.stderr)}`).toBe(0);
  return out;
};

async function createSandbox(image: string, executorId: string): Promise<string> {
  const res = await cluster.api('POST', `${NS}/sandboxes`, { image, command: ['sh'], executor_id: executorId });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(obj(res.body).sandbox_id);
  await waitSandbox(cluster, NS, id, ['running']);
  return id;
}

async function snapshot(sandboxId: string): Promise<Obj> {
  const res = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3600 });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(obj(res.body).snapshot_id);
  const done = await waitSnapshot(cluster, NS, id, (s) => s.status === 'active' || s.status === 'failed', 'active');
  expect(done.error).toBeNull();
  expect(done.status).toBe('active');
  return done;
}

async function restore(snapshotId: string, executorId: string, mode: 'eager' | 'lazy'): Promise<string> {
  const res = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: executorId, mode, command: ['sh'] });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(obj(res.body).sandbox_id);
  expect((await waitSandbox(cluster, NS, id, ['running'])).restore_mode).toBe(mode);
  return id;
}

function access(): RegistryAccessSettings {
  return { snapshot_registry: { url: cluster.registry?.host ?? '', repository: 'cryo/snapshots', username: cluster.registryUser, password: cluster.registryPassword, insecure: true } };
}

function pushBase(engine: string, ref: string): void {
  const dockerConfig = mkdtempSync(join(cluster.dir, 'docker-config-'));
  execFileSync(DOCKER_BIN, ['-H', engineHost(engine), '--config', dockerConfig, 'login', '-u', cluster.registryUser, '--password-stdin', cluster.registry?.host ?? ''],
    { input: cluster.registryPassword, stdio: ['pipe', 'pipe', 'pipe'] });
  execFileSync(DOCKER_BIN, ['-H', engineHost(engine), '--config', dockerConfig, 'push', ref], { stdio: 'pipe' });
}

beforeAll(async () => {
  hostDir = mkdtempSync('/var/tmp/cryo-precopy-host-');
  writeFileSync(join(hostDir, 'host-file'), 'belongs to the host');
  const operatorMounts = [{ type: 'tmpfs' as const, target: '/scratch' }, { type: 'bind' as const, source: hostDir, target: '/hostdir', read_only: true }];
  cluster = await startCluster({
    hosts: [
      { name: 'A', dockerMounts: operatorMounts },
      { name: 'B' },
      { name: 'C', snapshots: { method: 'commit' }, dockerMounts: operatorMounts },
    ],
    heartbeatTimeoutSecs: 30,
  });
  const registry = cluster.registry;
  if (registry === undefined) throw new Error('registry expected');
  richImage = `${registry.host}/base/rich:1`;
  volumeImage = `${registry.host}/base/volume:1`;
  importRootfs(engineHost('A'), richImage, richRootfsTar());
  importRootfs(engineHost('A'), volumeImage, busyboxRootfsTar(), ['VOLUME ["/data"]']);
  pushBase('A', richImage);
  pushBase('A', volumeImage);
  docker(engineHost('A'), ['rmi', richImage, volumeImage]);
}, 600_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  // Lazy sandboxes (restored on B) outlive their executor: end them through the API first.
  if (cluster !== undefined) await endSandboxes(cluster, NS);
  await cluster?.stop();
  await killAll();
  execFileSync('rm', ['-rf', hostDir]);
});

describe('pre-copy snapshots', () => {
  it('record the writable layer as docker commit does, entry by entry', async () => {
    const sandbox = await createSandbox(richImage, 'A');
    await exec(sandbox, [
      'mkdir -p /new/deep/er && echo file > /new/deep/er/f && chmod 4755 /new/deep/er/f',
      'mkdir -m 1777 /new/sticky && chown 1234:5678 /new/deep',
      'echo linked > /new/l1 && ln /new/l1 /new/l2 && ln -s ../new/l1 /new/sym',
      'mkfifo /new/fifo && mknod /new/null c 1 3',
      'rm /lower/gone && rm -rf /lower/dir && mkdir /lower/dir && echo again > /lower/dir/a',
      'touch /bin/capfile /lower/keep/h1',
      `printf '\\377\\376' > "/new/$(printf 'caf\\351')"`,
      'dd if=/dev/urandom of=/new/random bs=1k count=3000 2>/dev/null',
    ].join(' && '));
    // A socket, bound by a process in the sandbox's file system (busybox has no tool that binds one).
    const merged = JSON.parse(docker(engineHost('A'), ['inspect', '--format', '{{json .GraphDriver.Data.MergedDir}}', `cryo-${sandbox}`])) as string;
    const sock = spawn(process.execPath, ['-e', 'require("net").createServer().listen("sock", () => console.log("up"))'], { cwd: join(merged, 'new'), stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(sock);
    await new Promise((resolve) => sock.stdout?.once('data', resolve));

    const active = await snapshot(sandbox);
    expect(obj(active.capture).method).toBe('precopy');
    expect(obj(active.capture).method_reason).toBe("snapshots.method is auto, and the container's overlay2 upper dir is readable on this host");
    // The clip index came with the push: set when the snapshot turned active, no build_index round.
    expect(active.clip_index_ref).toMatch(/\.clip$/);
    const pushed = await lastLayerFromRegistry(String(active.image_ref), access());
    // The base's layers were mounted from base/rich, not uploaded again: what was pushed is the
    // new layer plus config and manifest.
    expect(pushed.baseSize).toBeGreaterThan(500_000);
    expect(Number(obj(active.capture).bytes_pushed)).toBeGreaterThan(pushed.size);
    expect(Number(obj(active.capture).bytes_pushed)).toBeLessThan(pushed.size + 64 * 1024);
    const ours = layerView(pushed.tar);

    docker(engineHost('A'), ['commit', `cryo-${sandbox}`, 'compare/commit:1']);
    const theirs = layerView(lastLayerFromEngine(engineHost('A'), 'compare/commit:1'));
    docker(engineHost('A'), ['rmi', 'compare/commit:1']);
    sock.kill('SIGKILL');

    expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
    for (const [name, entry] of theirs) expect(ours.get(name), name).toEqual(entry);
    // What the comparison covered.
    expect(theirs.get('bin/capfile')?.xattrs).toEqual(['security.capability=0100000200200000000000000000000000000000']);
    expect(theirs.get('lower/.wh.gone')?.type).toBe('file');
    expect(theirs.has('lower/dir/.wh..wh..opq')).toBe(true);
    expect(theirs.get('new/l2')).toMatchObject({ type: 'hardlink', link: 'new/l1' });
    expect(theirs.get('new/null')).toMatchObject({ type: 'chardev', device: '1:3' });
    expect(theirs.get('new/deep')).toMatchObject({ uid: 1234, gid: 5678 });
    expect(theirs.get('new/deep/er/f')?.mode).toBe('4755');
    expect(theirs.has('new/caf\\xe9')).toBe(true);
    expect(theirs.has('new/sock')).toBe(false);
  });

  it('hold one instant: two files a writer keeps in lock-step agree after restore', async () => {
    const sandbox = await createSandbox(richImage, 'A');
    await exec(sandbox, 'dd if=/dev/urandom of=/root/bulk bs=1M count=20 2>/dev/null');
    await exec(sandbox, '(i=0; while true; do i=$((i+1)); echo $i > /root/a; echo $i > /root/b; done) > /dev/null 2>&1 &');
    await exec(sandbox, 'sleep 1');
    const active = await snapshot(sandbox);
    const passes = obj(active.capture).passes as Array<{ paused: boolean; bytes_copied: number }>;
    expect(passes.filter((p) => p.paused)).toHaveLength(1);
    expect(passes[0]?.bytes_copied).toBeGreaterThanOrEqual(20 * 1024 * 1024);
    const restored = await restore(String(active.snapshot_id), 'B', 'eager');
    const read = async (file: string): Promise<number | null> => {
      const text = String((await exec(restored, `cat ${file}`)).stdout).trim();
      return text === '' ? null : Number(text);
    };
    const [a, b] = [await read('/root/a'), await read('/root/b')];
    // Frozen at one instant of the loop `echo $i > a; echo $i > b`: both written (equal), `a`
    // written and `b` not yet (one apart), or one of them truncated by its `>` and not yet
    // written (empty). Copies of the two taken at different moments would be far apart.
    if (a !== null && b !== null) expect([0, 1]).toContain(a - b);
    else expect(a ?? b).not.toBeNull();
    expect(Math.max(a ?? 0, b ?? 0)).toBeGreaterThan(10);
  });

  it('keep renames, deletions and hard links made during the snapshot consistent', async () => {
    const sandbox = await createSandbox(richImage, 'A');
    await exec(sandbox, 'mkdir /r && echo 0 > /r/cur');
    // Each round: a new file, a second name for it, the new file renamed over `cur`, the second name removed.
    await exec(sandbox, '(i=0; while true; do i=$((i+1)); echo $i > /r/new; ln /r/new /r/link; mv /r/new /r/cur; rm /r/link; done) > /dev/null 2>&1 &');
    await exec(sandbox, 'sleep 1');
    const active = await snapshot(sandbox);
    const restored = await restore(String(active.snapshot_id), 'B', 'eager');
    const state = String((await exec(restored, 'cd /r && for f in *; do echo "$f $(cat $f) $(stat -c %i $f)"; done')).stdout).trim().split('\n')
      .map((line) => line.split(' ')).map(([name, value, inode]) => ({ name, value: value === '' ? null : Number(value), inode }));
    const byName = new Map(state.map((s) => [s.name, s]));
    const cur = byName.get('cur');
    expect(cur?.value).toBeGreaterThan(10);
    const link = byName.get('link');
    const fresh = byName.get('new');
    // Every state the loop passes through: {cur}, {cur,new}, {cur,new,link}, {cur,link (= cur)};
    // `new` may also be caught just created by its `>`, still empty.
    if (fresh !== undefined && fresh.value !== null) expect(fresh.value).toBe((cur?.value ?? 0) + 1);
    if (link !== undefined && fresh !== undefined) expect(link.inode).toBe(fresh.inode);
    if (link !== undefined && fresh === undefined) expect(link.inode).toBe(cur?.inode);
    expect([...byName.keys()].every((n) => ['cur', 'new', 'link'].includes(n ?? ''))).toBe(true);
  });

  it('leave the image in the local engine: a restore on the same host needs no pull', async () => {
    const sandbox = await createSandbox(richImage, 'A');
    await exec(sandbox, 'echo same-host > /root/here');
    const active = await snapshot(sandbox);
    const ref = String(active.image_ref);
    const restored = await restore(String(active.snapshot_id), 'A', 'eager');
    expect((await exec(restored, 'cat /root/here')).stdout).toBe('same-host\n');
    // Loaded, not pulled: a pulled image would know its registry digest.
    expect(docker(engineHost('A'), ['image', 'inspect', '--format', '{{json .RepoDigests}}', ref])).toBe('[]');
    expect(docker(engineHost('A'), ['image', 'inspect', '--format', '{{.Id}}', ref])).toBe(docker(engineHost('A'), ['image', 'inspect', '--format', '{{.Id}}', `cryo-snapshots:${ref.slice(ref.lastIndexOf(':') + 1)}`]));
    // A snapshot of that restored sandbox (its base is now a cryo snapshot) works the same way.
    await exec(restored, 'echo second > /root/there');
    const again = await snapshot(restored);
    expect(obj(again.capture).method).toBe('precopy');
    const back = await restore(String(again.snapshot_id), 'B', 'lazy');
    expect((await exec(back, 'cat /root/here /root/there')).stdout).toBe('same-host\nsecond\n');
  });
});

describe('volumes and mounts (issue 8 item 1), both methods', () => {
  for (const [method, host] of [['precopy', 'A'], ['commit', 'C']] as const) {
    it(`${method}: the VOLUME's data comes back eagerly and lazily on another host; operator mounts are listed, not captured`, async () => {
      const sandbox = await createSandbox(volumeImage, host);
      await exec(sandbox, 'echo volume-data > /data/v.txt && mkdir -p /data/sub && echo deeper > /data/sub/w.txt && echo root-data > /root/r.txt');
      await exec(sandbox, 'echo not-kept > /scratch/s.txt');
      const active = await snapshot(sandbox);
      expect(obj(active.capture)).toMatchObject({ method, volumes: ['/data'] });
      const excluded = (active.excluded_mounts as Obj[]).map((m) => [m.type, m.destination, m.source]).sort();
      expect(excluded).toEqual([['bind', '/hostdir', hostDir], ['tmpfs', '/scratch', null]]);
      for (const m of active.excluded_mounts as Obj[]) expect(String(m.reason)).not.toBe('');
      // Lazy restore needs the clip index: pre-copy brings it, commit gets it from build_index.
      await waitSnapshot(cluster, NS, String(active.snapshot_id), (s) => s.clip_index_ref !== null, 'indexed');
      for (const mode of ['eager', 'lazy'] as const) {
        const restored = await restore(String(active.snapshot_id), 'B', mode);
        expect((await exec(restored, 'cat /data/v.txt /data/sub/w.txt /root/r.txt')).stdout, mode).toBe('volume-data\ndeeper\nroot-data\n');
        expect((await execIn(cluster, NS, restored, ['ls', '/scratch'])).stdout, mode).not.toContain('s.txt');
        await cluster.api('DELETE', `${NS}/sandboxes/${restored}`);
      }
    });
  }

  it('a file deleted from the volume stays deleted after restore (the volume is opaque over the image)', async () => {
    mkdirSync(join(hostDir, 'unused'), { recursive: true });
    const sandbox = await createSandbox(volumeImage, 'A');
    await exec(sandbox, 'echo one > /data/one && echo two > /data/two');
    const first = await snapshot(sandbox);
    const restored = await restore(String(first.snapshot_id), 'A', 'eager');
    await exec(restored, 'rm /data/one');
    const second = await snapshot(restored);
    const again = await restore(String(second.snapshot_id), 'B', 'eager');
    expect((await exec(again, 'ls /data')).stdout).toBe('two\n');
  });
});

describe('commit method (snapshots.method: commit)', () => {
  it('pauses for the commit, pushes with the engine, and gets its clip index from build_index', async () => {
    const sandbox = await createSandbox(richImage, 'C');
    await exec(sandbox, 'echo by-commit > /root/c.txt && rm /lower/gone');
    const active = await snapshot(sandbox);
    expect(obj(active.capture).method).toBe('commit');
    expect(obj(active.capture).method_reason).toBe("the executor's snapshots.method is commit");
    expect(typeof obj(active.timings).commit_ms).toBe('number');
    expect(obj(active.timings).precopy_ms).toBeNull();
    await waitSnapshot(cluster, NS, String(active.snapshot_id), (s) => s.clip_index_ref !== null, 'indexed');
    const restored = await restore(String(active.snapshot_id), 'B', 'lazy');
    expect((await exec(restored, 'cat /root/c.txt; ls /lower')).stdout).toBe('by-commit\ndir\nkeep\n');
  });
});
