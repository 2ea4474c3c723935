/**
 * The mount process interface (mount-main.ts via startMountProcess): a separate process, so
 * synchronous file access to its mount is fine here. Metadata comes from the index alone, so
 * these tests need no registry.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@cryo/oci';
import { startRegistry, type TestRegistry } from '../../../../test/support/registry';
import { indexLayers } from '../build/build-index';
import { ClipIndex } from '../format/index-file';
import { buildAccessPack } from '../reader/access-pack';
import { decodeAccessRecord, encodeAccessRecord } from '../reader/access-record';
import { ClipReader } from '../reader/clip-reader';
import { RegistryLayerSource } from '../registry-source';
import { mixedData } from '../testing/data';
import { buildImage, compress, sha256, testImage } from '../testing/fixtures';
import { writeTar } from '../testing/tar-writer';
import { MOUNT_BUNDLE, buildMountBundle, mountBundleFresh } from './mount-bundle';
import { cleanupStaleMount, isStaleMount, mountsAt, mountsUnder, sweepStaleClipMounts } from './mounts';
import { readMountStatus, type MountStatus } from './mount-status';
import {
  MOUNT_MAIN,
  MountLauncher,
  isMountProcess,
  isMountProcessOf,
  processAlive,
  requestAccessRecord,
  startMountProcess,
  stopMountProcess,
} from './mount-process';
import { FUSE_ADDON, fuseNativeStatus } from './native';

const execFileAsync = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 500 && processAlive(pid); i++) await sleep(20);
}

describe.skipIf(!fuseNativeStatus().ok || process.getuid?.() !== 0)('mount process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'clip-mount-process-'));
  const indexPath = join(dir, 'image.clip');
  const mnt = join(dir, 'mnt');
  const statusFile = join(dir, 'mount.json');
  const logFile = join(dir, 'mount.log');
  const opts = { indexPath, mountpoint: mnt, statusFile, logFile, cacheDir: join(dir, 'cache') };

  beforeAll(async () => {
    const image = await buildImage([writeTar([
      { name: 'etc/', type: '5', mode: 0o755 },
      { name: 'etc/os-release', data: 'ID=test\n' },
      { name: 'tmp/', type: '5', mode: 0o1777 },
    ])]);
    writeFileSync(indexPath, image.indexBytes);
  });

  afterAll(async () => {
    await stopMountProcess(readMountStatus(statusFile), mnt);
    expect(mountsUnder(dir)).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('mounts in a detached process that reports its status', async () => {
    const status = await startMountProcess(opts);
    expect(status).toMatchObject({ state: 'mounted', mountpoint: mnt, index: indexPath });
    expect(isMountProcess(status.pid, mnt)).toBe(true);
    expect(mountsAt(mnt)[0]?.fstype).toBe('fuse.clip');
    expect(readdirSync(mnt).sort()).toEqual(['etc', 'tmp']);
    expect(statSync(join(mnt, 'tmp')).mode & 0o7777).toBe(0o1777);
    // The process is its own session leader: it outlives whoever started it.
    const stat = readFileSync(`/proc/${status.pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    expect(Number(stat[3])).toBe(status.pid);
  });

  it('refuses a second mount on a live mountpoint', async () => {
    await expect(startMountProcess({ ...opts, statusFile: join(dir, 'second.json'), timeoutMs: 20_000 })).rejects.toThrow(/already mounted/);
    expect(mountsAt(mnt)).toHaveLength(1);
  });

  it('unmounts cleanly on SIGTERM', async () => {
    const pid = readMountStatus(statusFile)?.pid ?? 0;
    process.kill(pid, 'SIGTERM');
    await waitGone(pid);
    expect(mountsAt(mnt)).toEqual([]);
    expect(readMountStatus(statusFile)?.state).toBe('unmounted');
    expect(readFileSync(logFile, 'utf8')).toContain('"msg":"unmounting"');
  });

  it('a killed process leaves a stale mount that the next mount cleans up', async () => {
    const first = await startMountProcess(opts);
    process.kill(first.pid, 'SIGKILL');
    await waitGone(first.pid);
    expect(await isStaleMount(mnt)).toBe(true);
    const second = await startMountProcess(opts);
    expect(second.pid).not.toBe(first.pid);
    expect(mountsAt(mnt)).toHaveLength(1);
    expect(await isStaleMount(mnt)).toBe(false);
    expect(readdirSync(join(mnt, 'etc'))).toEqual(['os-release']);
  });

  it('a read the registry cannot serve is EIO, and the mount lives on', () => {
    // The fixture's registry (test.local) does not exist: every retry fails.
    expect(() => readFileSync(join(mnt, 'etc', 'os-release'))).toThrow(/EIO/);
    expect(statSync(join(mnt, 'etc', 'os-release')).size).toBe(8);
    expect(isMountProcess(readMountStatus(statusFile)?.pid ?? 0, mnt)).toBe(true);
    expect(readFileSync(logFile, 'utf8')).toContain('"msg":"read failed"');
  });

  it('stale mounts are found and swept; live ones are left alone', async () => {
    expect(await sweepStaleClipMounts(dir)).toEqual([]);
    const pid = readMountStatus(statusFile)?.pid ?? 0;
    process.kill(pid, 'SIGKILL');
    await waitGone(pid);
    expect(await sweepStaleClipMounts(dir)).toEqual([mnt]);
    expect(mountsAt(mnt)).toEqual([]);
    expect(await cleanupStaleMount(mnt)).toBe(false);
  });

  it('the mount process exits when its mount is taken away', async () => {
    const status = await startMountProcess(opts);
    await execFileAsync('fusermount', ['-uz', mnt]);
    await waitGone(status.pid);
    expect(processAlive(status.pid)).toBe(false);
    expect(mountsAt(mnt)).toEqual([]);
  });

  it('takes its registry access on stdin: never in its argv, environment, status or log', async () => {
    const secret = 'handed-over-on-stdin-only';
    const access = { mountpoint: join(dir, 'mnt-access'), statusFile: join(dir, 'access.json'), logFile: join(dir, 'access.log') };
    const status = await startMountProcess({
      ...opts, ...access,
      registryAccess: { snapshot_registry: { url: 'test.local', repository: 'clip/test', username: 'reader', password: secret, insecure: false } },
    });
    try {
      expect(status.state).toBe('mounted');
      for (const file of [`/proc/${status.pid}/cmdline`, `/proc/${status.pid}/environ`, access.statusFile, access.logFile]) {
        expect(readFileSync(file).includes(secret), file).toBe(false);
      }
    } finally {
      await stopMountProcess(status.pid, access.mountpoint);
    }
  });

  it('refuses registry access that is not registry access settings, naming the key', async () => {
    const access = { mountpoint: join(dir, 'mnt-bad'), statusFile: join(dir, 'bad.json'), logFile: join(dir, 'bad.log') };
    const notSettings = { server_url: 'http://127.0.0.1:1', token: 'x' } as unknown as Parameters<typeof startMountProcess>[0]['registryAccess'];
    await expect(startMountProcess({ ...opts, ...access, registryAccess: notSettings })).rejects.toThrow(/registry access on stdin: server_url: unknown key/);
    expect(mountsAt(access.mountpoint)).toEqual([]);
  });

  it('fails with the reason when the index is unreadable', async () => {
    await expect(startMountProcess({ ...opts, indexPath: join(dir, 'missing.clip') })).rejects.toThrow(/cannot read clip index/);
    expect(mountsAt(mnt)).toEqual([]);
  });
});

describe.skipIf(!fuseNativeStatus().ok || process.getuid?.() !== 0)('mount launcher, access records and prefetch (real registry)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'clip-launcher-'));
  const REPO = 'clip/launcher';
  const files = Array.from({ length: 40 }, (_, i) => ({ name: `app/m${i}.py`, data: mixedData(30_000 + i * 1000, 300 + i) }));
  let registry: TestRegistry;
  let indexPath: string;
  const launcher = new MountLauncher({ logFile: join(dir, 'launcher.log') });
  const started: Array<{ status: ReturnType<typeof readMountStatus>; mountpoint: string }> = [];

  beforeAll(async () => {
    registry = await startRegistry();
    const tar = writeTar([{ name: 'app/', type: '5', mode: 0o755 }, ...files.map((f) => ({ name: f.name, data: f.data }))]);
    const { blob, mediaType } = compress(tar, 'gzip');
    const client = new RegistryClient({ host: registry.host, insecure: true });
    await client.uploadBlob(REPO, blob, sha256(blob), blob.length);
    await client.close();
    const image = { ...testImage(), registry: registry.host, repository: REPO, reference: `${registry.host}/${REPO}:v1` };
    const built = await indexLayers(image, [{
      digest: sha256(blob), mediaType, size: blob.length, diffId: sha256(tar),
      open: async () => (async function* () { yield blob; })(),
    }], { span: 64 * 1024 });
    indexPath = join(dir, 'image.clip');
    writeFileSync(indexPath, built.index);
  });

  afterAll(async () => {
    launcher.close();
    for (const m of started) await stopMountProcess(m.status, m.mountpoint);
    await registry?.destroy();
    expect(mountsUnder(dir)).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });

  const job = (name: string, extra: Partial<Parameters<typeof startMountProcess>[0]> = {}): Parameters<typeof startMountProcess>[0] => ({
    indexPath, mountpoint: join(dir, name), statusFile: join(dir, `${name}.json`), logFile: join(dir, `${name}.log`),
    cacheDir: join(dir, `cache-${name}`), accessOut: join(dir, `${name}-access.json`), ...extra,
  });

  it('mounts with a process started ahead, which took its job (and registry access) on stdin', async () => {
    await launcher.prepare();
    const ready = launcher.readyPid ?? 0;
    expect(processAlive(ready)).toBe(true);
    const secret = 'only-on-stdin';
    const opts = job('ready', { registryAccess: { snapshot_registry: { url: registry.host, repository: REPO, username: 'u', password: secret, insecure: true } } });
    const status = await launcher.start(opts);
    started.push({ status, mountpoint: opts.mountpoint });
    expect(status.pid).toBe(ready);
    expect(status.proc_start).toBeGreaterThan(0);
    expect(isMountProcessOf(status)).toBe(true);
    // its argv names no mount: the status (pid + start time) is what identifies it
    const argv = readFileSync(`/proc/${status.pid}/cmdline`, 'utf8');
    expect(argv).toContain('--job-stdin');
    expect(argv).not.toContain(opts.mountpoint);
    for (const file of [`/proc/${status.pid}/cmdline`, `/proc/${status.pid}/environ`, opts.statusFile, opts.logFile]) {
      expect(readFileSync(file).includes(secret), file).toBe(false);
    }
    expect(readdirSync(join(opts.mountpoint, 'app'))).toHaveLength(files.length);
    expect(readFileSync(join(opts.mountpoint, files[3]?.name ?? '')).equals(files[3]?.data ?? Buffer.alloc(1))).toBe(true);
    // the next one is already on its way
    expect(launcher.readyPid).not.toBe(ready);
  });

  it('a ready process nobody needs exits when its launcher closes; mounts it started live on', async () => {
    const other = new MountLauncher({ logFile: join(dir, 'other.log') });
    const opts = job('survivor');
    const status = await other.start(opts);
    started.push({ status, mountpoint: opts.mountpoint });
    const spare = other.readyPid ?? 0;
    expect(processAlive(spare)).toBe(true);
    other.close();
    await waitGone(spare);
    expect(processAlive(spare)).toBe(false);
    expect(isMountProcessOf(status)).toBe(true);
    expect(readFileSync(join(opts.mountpoint, files[0]?.name ?? '')).equals(files[0]?.data ?? Buffer.alloc(1))).toBe(true);
  });

  it('prefetches what an earlier mount recorded, before the first read asks for it', async () => {
    // A first mount: a program reads 10 of the files.
    const first = job('first');
    const status = await launcher.start(first);
    started.push({ status, mountpoint: first.mountpoint });
    const read = files.slice(20, 30);
    for (const f of read) expect(readFileSync(join(first.mountpoint, f.name)).equals(f.data)).toBe(true);
    const out = await requestAccessRecord(status, first.accessOut ?? '');
    expect(out?.record?.files.map((f) => f.path)).toEqual(read.map((f) => `/${f.name}`));
    expect(out?.requests.every((q) => q.reason === 'demand')).toBe(true);
    const recordFile = join(dir, 'record.json.gz');
    writeFileSync(recordFile, encodeAccessRecord(out?.record ?? decodeAccessRecord(Buffer.alloc(0))));

    // A second mount (cold cache) with that record, read at once: every read is served by the
    // prefetch (a read that comes while a prefetched span is still being checked for in the disk
    // cache, or on its way, joins it): not one request on demand.
    const mountAndRead = async (name: string, prefetch: string, done: string): Promise<{ opts: ReturnType<typeof job>; status: MountStatus }> => {
      const opts = job(name, { prefetch });
      const status = await launcher.start(opts);
      started.push({ status, mountpoint: opts.mountpoint });
      for (const f of read) expect(readFileSync(join(opts.mountpoint, f.name)).equals(f.data)).toBe(true);
      await waitFor(() => readFileSync(opts.logFile, 'utf8').includes(`"msg":"${done}"`));
      return { opts, status };
    };
    const { opts: second, status: mounted } = await mountAndRead('second', recordFile, 'prefetch done');
    const after = await requestAccessRecord(mounted, second.accessOut ?? '');
    const requests = after?.requests ?? [];
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.filter((q) => q.reason !== 'prefetch')).toEqual([]);
    expect(after?.record?.files.map((f) => f.path)).toEqual(read.map((f) => `/${f.name}`));

    // With the record's pack (what an executor pushes beside it), a third mount streams that
    // instead, from before it is mounted: the reads are served from it, and no span is fetched.
    const index = await ClipIndex.load(indexPath);
    const client = new RegistryClient({ host: registry.host, insecure: true });
    const builder = new ClipReader(index, { source: new RegistryLayerSource(client, REPO) });
    const record = out?.record ?? decodeAccessRecord(Buffer.alloc(0));
    const packed = await buildAccessPack(index, record, (p, o, l) => builder.read(p, o, l));
    await client.uploadBlob(REPO, packed.blob, packed.pack.digest, packed.blob.length);
    await client.close();
    const packFile = join(dir, 'record-with-pack.json.gz');
    writeFileSync(packFile, encodeAccessRecord({ ...record, pack: packed.pack }));
    const { opts: third, status: withPack } = await mountAndRead('third', packFile, 'access pack done');
    const served = await requestAccessRecord(withPack, third.accessOut ?? '');
    expect(served?.requests).toEqual([]);
    await waitFor(() => (readMountStatus(third.statusFile)?.pack?.reads ?? 0) > 0, 5000);
    const pack = readMountStatus(third.statusFile)?.pack;
    expect(pack).toMatchObject({ state: 'done', misses: 0 });
    expect(pack?.started_at).toBeLessThan((served?.recording_started_at ?? NaN) + Math.min(...(served?.record?.files ?? []).map((f) => f.first_ms)));
  });
});

async function waitFor(check: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(20);
  }
}

describe('mount bundle', () => {
  it('is rebuilt when an input it was built from no longer hashes the same', async () => {
    const stamp = `${MOUNT_BUNDLE}.inputs.json`;
    await buildMountBundle();
    expect(mountBundleFresh()).toBe(true);
    const inputs = JSON.parse(readFileSync(stamp, 'utf8')) as { inputs: Record<string, string> };
    expect(Object.keys(inputs.inputs)).toContain('libs/clip/src/fuse/mount-main.ts');
    const [first] = Object.keys(inputs.inputs);
    writeFileSync(stamp, JSON.stringify({ inputs: { ...inputs.inputs, [first ?? '']: '0'.repeat(64) } }));
    expect(mountBundleFresh()).toBe(false);
    await buildMountBundle();
    expect(mountBundleFresh()).toBe(true);
  });
});

describe('fuse-native loading', () => {
  it.skipIf(!fuseNativeStatus().ok)("loads clip's byte-exact addon (built from source), never the prebuilt UTF-8 one", async () => {
    const probe = `import { loadFuse, fuseNativeStatus } from ${JSON.stringify(join(import.meta.dirname, 'native.ts'))};
      import { readFileSync } from 'node:fs';
      loadFuse();
      const maps = readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.split(/\\s+/).pop());
      console.log(JSON.stringify({ status: fuseNativeStatus(), addons: [...new Set(maps.filter((f) => f.endsWith('.node')))], libs: [...new Set(maps.filter((f) => f.includes('libfuse')))] }));`;
    const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], {
      cwd: join(import.meta.dirname, '..', '..'),
    });
    const result = JSON.parse(stdout) as { status: { ok: boolean }; addons: string[]; libs: string[] };
    expect(result.status.ok).toBe(true);
    expect(result.addons).toEqual([FUSE_ADDON]);
    expect(result.libs.every((l) => l.startsWith('/usr/lib/') || l.startsWith('/lib/'))).toBe(true);
    // the addon passes strings as Latin-1 (one char per byte), not UTF-8
    const symbols = (await execFileAsync('nm', ['-D', FUSE_ADDON])).stdout;
    expect(symbols).toMatch(/napi_create_string_latin1/);
    expect(symbols).not.toMatch(/napi_create_string_utf8|napi_get_value_string_utf8/);
  });

  it('the mount entry exists where the executor looks for it', () => {
    expect(statSync(MOUNT_MAIN).isFile()).toBe(true);
  });

  it.skipIf(!fuseNativeStatus().ok || process.getuid?.() !== 0)('mount processes run the prebuilt bundle', async () => {
    const status = readMountStatus(join(tmpdir(), 'none'));
    expect(status).toBeUndefined();
    const dir = mkdtempSync(join(tmpdir(), 'clip-bundle-'));
    const image = await buildImage([writeTar([{ name: 'etc/', type: '5', mode: 0o755 }])]);
    writeFileSync(join(dir, 'i.clip'), image.indexBytes);
    const mnt = join(dir, 'mnt');
    const started = await startMountProcess({ indexPath: join(dir, 'i.clip'), mountpoint: mnt, statusFile: join(dir, 's.json'), logFile: join(dir, 'l.log') });
    try {
      expect(readFileSync(`/proc/${started.pid}/cmdline`, 'utf8').split('\0')).toContain(MOUNT_BUNDLE);
      expect(isMountProcess(started.pid, mnt)).toBe(true);
    } finally {
      await stopMountProcess(started, mnt);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
