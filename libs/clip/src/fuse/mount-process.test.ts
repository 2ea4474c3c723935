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
import { buildImage } from '../testing/fixtures';
import { writeTar } from '../testing/tar-writer';
import { cleanupStaleMount, isStaleMount, mountsAt, mountsUnder, sweepStaleClipMounts } from './mounts';
import { readMountStatus } from './mount-status';
import { MOUNT_MAIN, isMountProcess, processAlive, startMountProcess, stopMountProcess } from './mount-process';
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
    await stopMountProcess(readMountStatus(statusFile)?.pid, mnt);
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
});
