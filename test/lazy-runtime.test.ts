/**
 * The runc-lazy driver end to end, without the server: a small two-layer image (busybox + a
 * layer with setuid files, hard links, symlinks, owners, a whiteout and a large file) pushed to a
 * real registry with @cryo/oci, indexed and its index pushed next to it (ClipArtifacts, as the
 * executor's build_index does), run lazily (FUSE + overlay + runc),
 * written to, snapshotted (no Docker), and the snapshot pulled and run by a real dockerd. Also:
 * killing a mount process and recovering, an executor restart (a new driver adopting its
 * sandboxes), a lazy restore of the lazy snapshot, and no mount left behind.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStaleMount, listMounts, mountsUnder, processAlive } from '@cryo/clip/fuse';
import { MediaType, RegistryClient } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { SNAPSHOT_LABELS } from '@cryo/snapshot';
import { RuncLazyDriver, type RuncLazyDriverOptions } from '../apps/executor/src/runtime/runc-lazy';
import type { SandboxSpec } from '../apps/executor/src/runtime/driver';
import { lazyCapabilities } from '../apps/executor/src/runtime/lazy/capabilities';
import { lazyCgroupGroup } from '../apps/executor/src/runtime/lazy/cgroups';
import { DOCKER_BIN, startDockerd, type TestDockerd } from './support/dockerd';
import { ClipArtifacts, lazyRestoreOf } from './support/lazy';
import { busyboxRootfsTar } from './support/images';
import { startRegistry, type TestRegistry } from './support/registry';

const USER = 'lazyuser';
const PASS = 'lazy-secret-pass';
const BASE_REPO = 'base/busybox';
const SNAP_REPO = 'cryo/snapshots';
const work = mkdtempSync('/var/tmp/cryo-lazy-runtime-');
const stateDir = join(work, 'state');
const dockerConfig = join(work, 'docker-config');
const log = pino({ level: process.env.CRYO_TEST_LOG ?? 'silent' });
const big = randomBytes(6 * 1024 * 1024 + 123);
const text = Buffer.from(Array.from({ length: 4000 }, (_, i) => `line ${i} of a text file read byte for byte through FUSE\n`).join(''));
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const digestOf = (b: Buffer): string => `sha256:${sha256(b)}`;

let registry: TestRegistry;
let engine: TestDockerd;
let driver: RuncLazyDriver;
let driverOptions: RuncLazyDriverOptions;
let clip: ClipArtifacts;
let baseRef: string;
let appRef: string;
const created: string[] = [];

function docker(args: string[], input?: string): string {
  return execFileSync(DOCKER_BIN, ['-H', engine.host, '--config', dockerConfig, ...args], {
    encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 1 << 26, ...(input !== undefined ? { input } : {}),
  }).trim();
}

/** The second layer: what the metadata checks look at, made with GNU tar from a real directory. */
function topLayerTar(): Buffer {
  const dir = join(work, 'layer2');
  mkdirSync(dir);
  for (const d of ['bin', 'etc', 'data', 'data/replace-me', 'data/shared', 'home/app', 'opt']) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'bin', '.wh.wc'), ''); // hides busybox's wc from layer 1
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n');
  writeFileSync(join(dir, 'data', 'big.bin'), big);
  writeFileSync(join(dir, 'data', 'text.txt'), text);
  writeFileSync(join(dir, 'data', 'hello.txt'), 'hello from the base image\n');
  writeFileSync(join(dir, 'data', 'delete-me'), 'to be deleted in the sandbox\n');
  writeFileSync(join(dir, 'data', 'replace-me', 'old'), 'old content\n');
  writeFileSync(join(dir, 'data', 'suid-tool'), 'not really a tool\n');
  chmodSync(join(dir, 'data', 'suid-tool'), 0o4755);
  chmodSync(join(dir, 'data', 'shared'), 0o2775);
  chownSync(join(dir, 'data', 'shared'), 0, 50);
  writeFileSync(join(dir, 'data', 'hard1'), 'one inode, two names\n');
  linkSync(join(dir, 'data', 'hard1'), join(dir, 'data', 'hard2'));
  symlinkSync('hello.txt', join(dir, 'data', 'link'));
  symlinkSync('/data/hello.txt', join(dir, 'data', 'abs-link'));
  writeFileSync(join(dir, 'home', 'app', 'notes'), 'app notes\n');
  chmodSync(join(dir, 'home', 'app'), 0o700);
  for (const p of ['home/app', 'home/app/notes']) chownSync(join(dir, p), 1000, 1000);
  const tar = join(work, 'layer2.tar');
  execFileSync('tar', ['-C', dir, '--numeric-owner', '-cf', tar, '.']);
  return readFileSync(tar);
}

/** Push busybox + the top layer with @cryo/oci; one tag runs as root, one as user `app`. */
async function pushBaseImages(): Promise<void> {
  const client = new RegistryClient({ host: registry.host, insecure: true, credentials: { username: USER, password: PASS } });
  try {
    const tars = [readFileSync(busyboxRootfsTar()), topLayerTar()];
    const layers = [];
    for (const tar of tars) {
      const gz = gzipSync(tar);
      await client.uploadBlob(BASE_REPO, gz, digestOf(gz), gz.length);
      layers.push({ mediaType: MediaType.DockerLayerGzip, size: gz.length, digest: digestOf(gz) });
    }
    for (const [tag, user] of [['v1', ''], ['app', 'app']] as const) {
      const config = Buffer.from(JSON.stringify({
        architecture: 'amd64', os: 'linux', created: '2024-01-01T00:00:00Z',
        config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], WorkingDir: '/', User: user, Labels: { origin: 'lazy-runtime-test' } },
        rootfs: { type: 'layers', diff_ids: tars.map(digestOf) },
        history: [{ created_by: 'busybox rootfs' }, { created_by: 'test layer' }],
      }));
      await client.uploadBlob(BASE_REPO, config, digestOf(config), config.length);
      const manifest = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: MediaType.DockerManifest,
        config: { mediaType: MediaType.DockerConfig, size: config.length, digest: digestOf(config) }, layers,
      }));
      await client.putManifest(BASE_REPO, tag, manifest, MediaType.DockerManifest);
    }
  } finally {
    await client.close();
  }
  baseRef = `${registry.host}/${BASE_REPO}:v1`;
  appRef = `${registry.host}/${BASE_REPO}:app`;
}

function registryAccess(): RegistryAccessSettings {
  return { snapshot_registry: { url: registry.host, repository: SNAP_REPO, username: USER, password: PASS, insecure: true } };
}

async function lazySandbox(sandboxId: string, ref: string, over: Partial<SandboxSpec> = {}): Promise<string> {
  const restore = await lazyRestoreOf(clip, registryAccess(), ref, `snap-of-${sandboxId}`);
  created.push(sandboxId);
  return driver.create({
    sandboxId, namespace: 'test', image: ref, command: null, env: { SANDBOX_VAR: 'from-sandbox' }, labels: {}, resources: {}, restore, ...over,
  }, () => undefined);
}

async function sh(sandboxId: string, script: string, timeoutSecs = 60): Promise<string> {
  const result = await driver.exec(sandboxId, ['sh', '-c', script], timeoutSecs);
  expect(result.exit_code, `${script}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

const METADATA_PATHS = ['/tmp', '/data/suid-tool', '/data/shared', '/data/hard1', '/data/hard2', '/data/link', '/data/abs-link', '/home/app', '/home/app/notes', '/bin/busybox', '/etc/passwd'];
const METADATA_SCRIPT = `stat -c '%n|%a|%u|%g|%h|%F|%s' ${METADATA_PATHS.join(' ')}; `
  + `test "$(stat -c %i /data/hard1)" = "$(stat -c %i /data/hard2)" && echo hard-links-share-an-inode; `
  + 'cat /data/link /data/abs-link; test -e /bin/wc || echo wc-whited-out';

function clipMountsUnder(dir: string): string[] {
  return listMounts().filter((m) => m.mountpoint.startsWith(dir) && m.fstype === 'fuse.clip').map((m) => m.mountpoint);
}

const caps = await lazyCapabilities();

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: { username: USER, password: PASS } });
  engine = await startDockerd('lazy-runtime');
  docker(['login', '-u', USER, '--password-stdin', registry.host], PASS);
  await pushBaseImages();
  clip = new ClipArtifacts(registryAccess(), join(work, 'clip'));
  driverOptions = { stateDir, executorId: 'exec-lazy-test', log, clipIndexes: clip, access: registryAccess() };
  driver = new RuncLazyDriver(driverOptions);
});

afterAll(async () => {
  for (const id of created) await driver?.remove(id).catch(() => undefined);
  await driver?.close();
  const left = mountsUnder(work).map((m) => m.mountpoint);
  await engine?.stop();
  await registry?.destroy();
  if (left.length === 0) rmSync(work, { recursive: true, force: true });
  expect(left).toEqual([]);
});

describe.skipIf(!caps.lazy)('runc-lazy driver', () => {
  let dockerView: string;
  let snapshotRef: string;
  let snapshotDigest: string;

  it('reports this host as lazy-capable', () => {
    expect(caps).toEqual({ lazy: true, lazy_unavailable_reason: null });
  });

  it('runs a lazy sandbox whose files read byte for byte', async () => {
    const started = performance.now();
    const containerId = await lazySandbox('lazy-a', baseRef);
    const firstExec = await driver.exec('lazy-a', ['cat', '/data/hello.txt'], 30);
    const firstExecMs = performance.now() - started;
    expect(containerId).toBe('cryo-lazy-a');
    // The container's cgroup is this executor instance's: another executor's lazy-a is apart.
    expect(lazyCgroupDirs().length).toBeGreaterThan(0);
    expect(await Promise.all([driver.owns('lazy-a'), driver.owns('other'), driver.owns('../x')])).toEqual([true, false, false]);
    expect(firstExec).toEqual({ exit_code: 0, stdout: 'hello from the base image\n', stderr: '' });
    log.info({ first_exec_ms: firstExecMs, ...driver.createTimings.get('lazy-a') }, 'lazy create -> first exec');
    expect(driver.createTimings.get('lazy-a')?.total_ms).toBeGreaterThan(0);
    expect((await driver.exec('lazy-a', ['cat', '/data/text.txt'], 30)).stdout).toBe(text.toString());
    expect((await sh('lazy-a', 'sha256sum /data/big.bin')).split(' ')[0]).toBe(sha256(big));
    // The mount process reports what it fetched (stats are written every 2 s).
    await new Promise((r) => setTimeout(r, 2500));
    const fetched = driver.mountStatus('lazy-a')?.fetch;
    log.info({ fetch: fetched }, 'registry bytes fetched by the mount');
    expect(fetched?.bytes).toBeGreaterThan(0);
    expect(await sh('lazy-a', 'echo "$SANDBOX_VAR $PATH $HOSTNAME"; id -u; pwd')).toBe('from-sandbox /bin lazy-a\n0\n/\n');
    // The sandbox's stdin is an open FIFO: its shell is still alive.
    expect((await driver.observe()).find((s) => s.sandbox_id === 'lazy-a')).toMatchObject({ state: 'running', runtime: 'runc-lazy', container_id: 'cryo-lazy-a' });
    const status = driver.mountStatus('lazy-a');
    expect(status?.state).toBe('mounted');
  });

  it('writes no registry secret into the index, the bundle or the sandbox dir', async () => {
    const dir = join(stateDir, 'lazy', 'lazy-a');
    const indexPath = (JSON.parse(readFileSync(join(dir, 'sandbox.json'), 'utf8')) as { index_path: string }).index_path;
    const files = execFileSync('find', [dir, indexPath, '-maxdepth', '1', '-type', 'f'], { encoding: 'utf8' }).trim().split('\n');
    expect(files).toEqual(expect.arrayContaining([join(dir, 'config.json'), join(dir, 'sandbox.json'), join(dir, 'mount.json'), indexPath]));
    for (const file of files) expect(readFileSync(file).includes(PASS), file).toBe(false);
    // The mount process got its registry access on stdin: not in its argv, not in its environment.
    const pid = driver.mountStatus('lazy-a')?.pid ?? 0;
    expect(readFileSync(`/proc/${pid}/cmdline`).includes(PASS)).toBe(false);
    expect(readFileSync(`/proc/${pid}/environ`).includes(PASS)).toBe(false);
  });

  it('exec reports exit codes, stderr, missing commands and timeouts', async () => {
    expect(await driver.exec('lazy-a', ['sh', '-c', 'echo out; echo err >&2; exit 3'], 30)).toEqual({ exit_code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect((await driver.exec('lazy-a', ['/no/such/binary'], 30)).exit_code).toBe(127);
    const before = performance.now();
    await expect(driver.exec('lazy-a', ['sleep', '30'], 1)).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(performance.now() - before).toBeLessThan(10_000);
    await expect(driver.exec('nope', ['true'], 5)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('shows setuid bits, owners, links, /tmp and whiteouts as Docker does', async () => {
    const lazyView = await sh('lazy-a', METADATA_SCRIPT);
    docker(['pull', baseRef]);
    dockerView = docker(['run', '--rm', '--network', 'none', baseRef, 'sh', '-c', METADATA_SCRIPT]);
    expect(lazyView.trim()).toBe(dockerView);
    expect(lazyView).toContain('/tmp|1777|0|0|');
    expect(lazyView).toContain('/data/suid-tool|4755|0|0|1|regular file');
    expect(lazyView).toContain('/data/shared|2775|0|50|');
    expect(lazyView).toContain('/data/hard1|644|0|0|2|');
    expect(lazyView).toContain('/home/app|700|1000|1000|');
    expect(lazyView).toContain('hard-links-share-an-inode');
    expect(lazyView).toContain('wc-whited-out');
  });

  it('resolves the image user through the image\'s /etc/passwd and /etc/group', async () => {
    await lazySandbox('lazy-app', appRef);
    expect(await sh('lazy-app', 'id -u; id -g; id -G; echo $HOME; cat /home/app/notes')).toBe('1000\n1000\n1000 50\n/home/app\napp notes\n');
    // Not root: the image's modes and owners hold (default_permissions), no capabilities to bypass them.
    const denied = await driver.exec('lazy-app', ['sh', '-c', 'echo x >> /etc/passwd'], 30);
    expect(denied.exit_code).not.toBe(0);
    expect(denied.stderr).toMatch(/Permission denied/);
    await driver.remove('lazy-app');
  });

  it('snapshots without Docker into an image that docker pull accepts', async () => {
    await sh('lazy-a', [
      'echo written-in-the-lazy-sandbox > /root/written.txt',
      'rm /data/delete-me',
      'rm -rf /data/replace-me && mkdir /data/replace-me && echo new > /data/replace-me/fresh',
      'chmod 4750 /data/text.txt',
      'echo sandbox-hosts >> /etc/hosts',
    ].join(' && '));
    const phases: string[] = [];
    const outcome = await driver.snapshot({
      opId: 'op-1', sandboxId: 'lazy-a', snapshotId: 'snap1', namespace: 'test', tag: 'sb-lazy-a-snap-snap1', baseImage: baseRef,
    }, (p) => phases.push(p.phase));
    snapshotRef = outcome.imageRef;
    snapshotDigest = outcome.digest ?? '';
    expect(outcome.imageRef).toBe(`${registry.host}/${SNAP_REPO}:sb-lazy-a-snap-snap1`);
    expect(outcome.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(outcome.sizeBytes).toBeGreaterThan(big.length);
    expect(outcome.timings.pause_ms).toBeGreaterThan(0);
    expect(outcome.timings.pause_ms).toBeLessThan(5000);
    expect(outcome.timings.commit_ms).toBeGreaterThan(0);
    expect(outcome.timings.push_ms).toBeGreaterThan(0);
    expect(phases).toEqual(['pause', 'commit', 'push', 'pushed']);
    log.info({ timings: outcome.timings, size: outcome.sizeBytes }, 'lazy snapshot');
    // The sandbox keeps running, unpaused.
    expect(await sh('lazy-a', 'cat /root/written.txt')).toBe('written-in-the-lazy-sandbox\n');
    expect((await driver.observe()).find((s) => s.sandbox_id === 'lazy-a')?.state).toBe('running');

    docker(['pull', snapshotRef]);
    const inspect = JSON.parse(docker(['image', 'inspect', snapshotRef])) as Array<{ RepoDigests: string[]; Config: { Labels: Record<string, string>; Env: string[] } }>;
    expect(inspect[0]?.RepoDigests).toContain(`${registry.host}/${SNAP_REPO}@${outcome.digest}`);
    expect(inspect[0]?.Config.Labels).toMatchObject({ [SNAPSHOT_LABELS.snapshotId]: 'snap1', [SNAPSHOT_LABELS.sandboxId]: 'lazy-a', origin: 'lazy-runtime-test' });
    expect(inspect[0]?.Config.Env).toContain('SANDBOX_VAR=from-sandbox');
    const fromDocker = docker(['run', '--rm', '--network', 'none', snapshotRef, 'sh', '-c',
      'cat /root/written.txt; sha256sum /data/big.bin; test -e /data/delete-me || echo deleted; ls /data/replace-me; stat -c %a /data/text.txt; grep -c sandbox-hosts /etc/hosts || true']);
    expect(fromDocker.split('\n')).toEqual([
      'written-in-the-lazy-sandbox', `${sha256(big)}  /data/big.bin`, 'deleted', 'fresh', '4750', '0',
    ]);
  });

  it('recovers from a killed mount process without leaving a stale mount', async () => {
    const pid = driver.mountStatus('lazy-a')?.pid;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid ?? 0, 'SIGKILL');
    for (let i = 0; i < 100 && processAlive(pid ?? 0); i++) await new Promise((r) => setTimeout(r, 20));
    const lower = join(stateDir, 'lazy', 'lazy-a', 'lower');
    expect(await isStaleMount(lower)).toBe(true);
    expect((await driver.observe()).find((s) => s.sandbox_id === 'lazy-a')?.state).toBe('exited');

    const recovered = await driver.recover();
    expect(recovered.find((r) => r.sandbox_id === 'lazy-a')).toMatchObject({ action: 'restarted' });
    expect(clipMountsUnder(work)).toEqual([lower]);
    expect(await isStaleMount(lower)).toBe(false);
    expect(listMounts().filter((m) => m.fstype === 'fuse.clip' && m.mountpoint === lower)).toHaveLength(1);
    // The upper dir was kept: the sandbox's own files are still there.
    expect(await sh('lazy-a', 'cat /root/written.txt; sha256sum /data/big.bin')).toBe(`written-in-the-lazy-sandbox\n${sha256(big)}  /data/big.bin\n`);
  });

  it('creating an existing sandbox again keeps it and its files', async () => {
    const restore = await lazyRestoreOf(clip, registryAccess(), baseRef, 'snap-again');
    const pid = driver.mountStatus('lazy-a')?.pid;
    expect(await driver.create({
      sandboxId: 'lazy-a', namespace: 'test', image: baseRef, command: null, env: {}, labels: {}, resources: {}, restore,
    }, () => undefined)).toBe('cryo-lazy-a');
    expect(driver.mountStatus('lazy-a')?.pid).toBe(pid);
    expect(await sh('lazy-a', 'cat /root/written.txt')).toBe('written-in-the-lazy-sandbox\n');
  });

  it('a paused sandbox refuses exec with CONFLICT', async () => {
    await driver.runc.pause('cryo-lazy-a');
    try {
      await expect(driver.exec('lazy-a', ['true'], 5)).rejects.toMatchObject({ code: 'CONFLICT' });
      expect((await driver.observe()).find((s) => s.sandbox_id === 'lazy-a')?.state).toBe('paused');
    } finally {
      await driver.runc.resume('cryo-lazy-a');
    }
  });

  it('a restarted executor adopts running lazy sandboxes', async () => {
    const pid = driver.mountStatus('lazy-a')?.pid;
    await driver.close();
    driver = new RuncLazyDriver(driverOptions);
    expect(await driver.recover()).toEqual([{ sandbox_id: 'lazy-a', action: 'adopted', reason: expect.any(String) }]);
    expect(driver.mountStatus('lazy-a')?.pid).toBe(pid);
    expect(await sh('lazy-a', 'cat /root/written.txt')).toBe('written-in-the-lazy-sandbox\n');
  });

  it('restores the lazy snapshot lazily again, with both files', async () => {
    await lazySandbox('lazy-b', `${registry.host}/${SNAP_REPO}:sb-lazy-a-snap-snap1`, { command: ['sh'] });
    expect(snapshotDigest).toMatch(/^sha256:/);
    expect(await sh('lazy-b', 'cat /root/written.txt; sha256sum /data/big.bin; test -e /data/delete-me || echo deleted; ls /data/replace-me'))
      .toBe(`written-in-the-lazy-sandbox\n${sha256(big)}  /data/big.bin\ndeleted\nfresh\n`);
    const view = await sh('lazy-b', METADATA_SCRIPT);
    expect(view.trim()).toBe(dockerView);
  });

  it('removes sandboxes with every mount, process and dir, idempotently', async () => {
    const pids = ['lazy-a', 'lazy-b'].map((id) => driver.mountStatus(id)?.pid ?? 0);
    expect(await driver.remove('lazy-a')).toBe(true);
    expect(await driver.remove('lazy-b')).toBe(true);
    expect(await driver.remove('lazy-a')).toBe(false);
    expect(mountsUnder(work)).toEqual([]);
    for (const pid of pids) expect(processAlive(pid)).toBe(false);
    expect(await driver.observe()).toEqual([]);
    expect(await driver.runc.list()).toEqual([]);
    // Their cgroups went with them, in every hierarchy, and the executor's group too.
    expect(lazyCgroupDirs()).toEqual([]);
  });
});

/** This driver's cgroup group dirs (/sys/fs/cgroup[/<controller>]/cryo-lazy/<group>) that exist. */
function lazyCgroupDirs(): string[] {
  const group = lazyCgroupGroup(driverOptions.executorId, join(stateDir, 'lazy'));
  const roots = ['/sys/fs/cgroup', ...['freezer', 'memory', 'pids', 'cpu', 'unified'].map((c) => `/sys/fs/cgroup/${c}`)];
  return roots.map((r) => join(r, 'cryo-lazy', group)).filter((d) => existsSync(d));
}
