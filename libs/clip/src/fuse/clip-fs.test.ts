import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { lstat, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mixedData } from '../testing/data';
import { buildImage, type BuiltImage } from '../testing/fixtures';
import { writeTar } from '../testing/tar-writer';
import type { LayerSource } from '../source';
import { ClipFilesystem, Errno, makedev } from './clip-fs';
import { mountClip, type ClipMount } from './mount';
import { listMounts, mountsAt } from './mounts';
import type { FuseOperations, FuseStat } from './native';
import { fuseNativeStatus } from './native';

const execFileAsync = promisify(execFile);
// A valid VFS_CAP_REVISION_2 value (the kernel checks the size): cap_net_raw, effective.
const CAP_NET_RAW = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const big = mixedData(3 * 1024 * 1024 + 17, 7);

function tars(): Buffer[] {
  const base = writeTar([
    { name: 'bin/', type: '5', mode: 0o755 },
    { name: 'bin/tool', mode: 0o4755, data: 'setuid tool' },
    { name: 'bin/sgid', mode: 0o2711, uid: 0, gid: 42, data: 'sgid' },
    { name: 'tmp/', type: '5', mode: 0o1777 },
    { name: 'home/', type: '5', mode: 0o755 },
    { name: 'home/user/', type: '5', mode: 0o700, uid: 1000, gid: 1000 },
    { name: 'home/user/secret', mode: 0o600, uid: 1000, gid: 1000, data: 'mine' },
    { name: 'data/', type: '5', mode: 0o755 },
    { name: 'data/big.bin', mode: 0o644, data: big },
    { name: 'data/link', type: '2', linkname: 'big.bin' },
    { name: 'data/hard', type: '1', linkname: 'data/big.bin' },
    { name: 'dev/', type: '5', mode: 0o755 },
    { name: 'dev/null', type: '3', mode: 0o666, devmajor: 1, devminor: 3 },
    { name: 'dev/fifo', type: '6', mode: 0o644 },
    { name: 'caps', mode: 0o755, data: 'x', pax: { 'SCHILY.xattr.security.capability': CAP_NET_RAW, 'SCHILY.xattr.user.note': 'hello' } },
    { name: 'hidden', mode: 0o644, data: 'y', pax: { 'SCHILY.xattr.trusted.overlay.opaque': 'y' } },
  ]);
  const top = writeTar([
    { name: 'etc/', type: '5', mode: 0o755 },
    { name: 'etc/passwd', mode: 0o644, data: 'root:x:0:0:root:/root:/bin/sh\n' },
  ]);
  return [base, top];
}

type Reply<T> = { code: number; value: T | undefined };

function call<T>(fn: (cb: (code: number, value?: T) => void) => void): Promise<Reply<T>> {
  return new Promise((resolve) => fn((code, value) => resolve({ code, value })));
}

describe('ClipFilesystem handlers', () => {
  let image: BuiltImage;
  let ops: FuseOperations;
  let fs: ClipFilesystem;

  beforeAll(async () => {
    image = await buildImage(tars());
    fs = new ClipFilesystem(image.reader());
    ops = fs.operations();
  });

  const getattr = (path: string): Promise<Reply<FuseStat>> => call<FuseStat>((cb) => ops.getattr?.(path, cb));

  it('reports modes with setuid, setgid and sticky bits, owners, links and devices', async () => {
    expect((await getattr('/bin/tool')).value?.mode).toBe(0o104755);
    expect((await getattr('/bin/sgid')).value).toMatchObject({ mode: 0o102711, gid: 42 });
    expect((await getattr('/tmp')).value?.mode).toBe(0o41777);
    expect((await getattr('/home/user/secret')).value).toMatchObject({ uid: 1000, gid: 1000, mode: 0o100600 });
    const big1 = (await getattr('/data/big.bin')).value;
    const hard = (await getattr('/data/hard')).value;
    expect(big1?.nlink).toBe(2);
    expect(hard?.ino).toBe(big1?.ino);
    expect((await getattr('/data/link')).value?.mode).toBe(0o120777);
    expect((await getattr('/dev/null')).value).toMatchObject({ mode: 0o20666, rdev: makedev(1, 3) });
    expect((await getattr('/dev/fifo')).value?.mode).toBe(0o10644);
  });

  it('answers ENOENT and ENOTDIR as errnos, and caches the misses', async () => {
    expect((await getattr('/nope')).code).toBe(-Errno.ENOENT);
    const before = fs.stats.getattrCached;
    expect((await getattr('/nope')).code).toBe(-Errno.ENOENT);
    expect(fs.stats.getattrCached).toBe(before + 1);
    expect((await getattr('/caps/x')).code).toBe(-Errno.ENOTDIR);
    expect((await call<string[]>((cb) => ops.readdir?.('/caps', cb))).code).toBe(-Errno.ENOTDIR);
  });

  it('lists directories with . and .. and serves reads byte for byte', async () => {
    const listing = await new Promise<{ names: string[] | undefined; stats: FuseStat[] | undefined }>((resolve) =>
      ops.readdir?.('/data', (_code, names, stats) => resolve({ names, stats })));
    expect(listing.names).toEqual(['.', '..', 'big.bin', 'hard', 'link']);
    expect(listing.stats?.length).toBe(5);
    const buf = Buffer.alloc(128 * 1024);
    const n = await new Promise<number>((resolve) => ops.read?.('/data/big.bin', 0, buf, buf.length, 1_000_000, resolve));
    expect(n).toBe(buf.length);
    expect(buf.equals(big.subarray(1_000_000, 1_000_000 + buf.length))).toBe(true);
    const tail = await new Promise<number>((resolve) => ops.read?.('/data/big.bin', 0, buf, buf.length, big.length - 10, resolve));
    expect(tail).toBe(10);
    const past = await new Promise<number>((resolve) => ops.read?.('/data/big.bin', 0, buf, buf.length, big.length + 10, resolve));
    expect(past).toBe(0);
  });

  it('serves xattrs and hides overlayfs ones', async () => {
    expect((await call<string[]>((cb) => ops.listxattr?.('/caps', cb))).value).toEqual(['security.capability', 'user.note']);
    expect((await call<Buffer>((cb) => ops.getxattr?.('/caps', 'user.note', 0, cb))).value?.toString()).toBe('hello');
    expect((await call<Buffer>((cb) => ops.getxattr?.('/caps', 'user.none', 0, cb))).code).toBe(-Errno.ENODATA);
    expect((await call<string[]>((cb) => ops.listxattr?.('/hidden', cb))).value).toEqual([]);
    expect((await call<Buffer>((cb) => ops.getxattr?.('/hidden', 'trusted.overlay.opaque', 0, cb))).code).toBe(-Errno.ENODATA);
  });

  it('turns a failing source into EIO without throwing', async () => {
    const broken: LayerSource = {
      readRange: async () => { throw new Error('registry down'); },
      openStream: async () => { throw new Error('registry down'); },
    };
    const failing = new ClipFilesystem(image.reader({ source: broken })).operations();
    const buf = Buffer.alloc(4096);
    const n = await new Promise<number>((resolve) => failing.read?.('/data/big.bin', 0, buf, buf.length, 0, resolve));
    expect(n).toBe(-Errno.EIO);
    const reply = await call<FuseStat>((cb) => failing.getattr?.('/data/big.bin', cb));
    expect(reply.code).toBe(0);
  });

  it('answers when the reply itself throws', async () => {
    let answers = 0;
    ops.getattr?.('/bin/tool', (code) => {
      answers++;
      if (code === 0) throw new Error('kernel side blew up');
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(answers).toBe(2); // once with the stat, then once more with EIO
  });
});

// The handlers run on this process's event loop: everything touching the mount below must be
// asynchronous (a sync fs call would wait for an answer only this thread can give).
describe.skipIf(!fuseNativeStatus().ok || process.getuid?.() !== 0)('mountClip (real FUSE mount)', () => {
  let image: BuiltImage;
  let mount: ClipMount | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'clip-fuse-'));
  const mnt = join(dir, 'mnt');

  beforeAll(async () => {
    image = await buildImage(tars());
    const indexPath = join(dir, 'image.clip');
    writeFileSync(indexPath, image.indexBytes);
    mount = await mountClip(indexPath, mnt, { source: image.source, cacheDir: join(dir, 'cache') });
  });

  afterAll(async () => {
    await mount?.unmount();
    expect(mountsAt(mnt)).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows as fuse.clip, read-only, with suid and dev', () => {
    const [m] = mountsAt(mnt);
    expect(m?.fstype).toBe('fuse.clip');
    expect(m?.options).toContain('ro');
    expect(m?.options).not.toContain('nosuid');
    expect(listMounts().filter((x) => x.mountpoint === mnt)).toHaveLength(1);
  });

  it('stat, readdir, readlink and reads match the image', async () => {
    const at = (p: string): string => join(mnt, p);
    expect((await stat(at('bin/tool'))).mode).toBe(0o104755);
    expect((await stat(at('tmp'))).mode).toBe(0o41777);
    const st = await stat(at('home/user/secret'));
    expect([st.uid, st.gid]).toEqual([1000, 1000]);
    expect((await stat(at('data/hard'))).ino).toBe((await stat(at('data/big.bin'))).ino);
    expect((await stat(at('data/big.bin'))).nlink).toBe(2);
    expect((await lstat(at('dev/null'))).isCharacterDevice()).toBe(true);
    expect((await lstat(at('dev/null'))).rdev).toBe(makedev(1, 3));
    expect(await readlink(at('data/link'))).toBe('big.bin');
    expect(await readdir(at('data'))).toEqual(['big.bin', 'hard', 'link']);
    expect((await readFile(at('data/link'))).equals(big)).toBe(true);
    expect(await readFile(at('etc/passwd'), 'utf8')).toContain('root:x:0:0');
    await expect(stat(at('missing'))).rejects.toThrow(/ENOENT/);
    await expect(writeFile(at('etc/new'), 'x')).rejects.toThrow(/EROFS/);
  });

  it('getfattr sees xattrs with the exact size protocol (size query, then read)', async () => {
    const { stdout } = await execFileAsync('getfattr', ['-d', '-m', '-', '-e', 'hex', join(mnt, 'caps')], { encoding: 'utf8' });
    expect(stdout).toContain('security.capability=0x0100000200200000000000000000000000000000');
    expect(stdout).toContain('user.note=0x68656c6c6f');
  });

  it('counts reads and fetches', () => {
    const stats = mount?.stats();
    expect(stats?.fs.reads).toBeGreaterThan(0);
    expect(stats?.fetch.requests).toBeGreaterThan(0);
  });

  it('leaves what the kernel read in its page cache: a second read never reaches the handlers', async () => {
    const file = join(mnt, 'data', 'big.bin');
    expect((await readFile(file)).equals(big)).toBe(true);
    const reads = mount?.stats().fs.reads;
    expect((await readFile(file)).equals(big)).toBe(true);
    expect(mount?.stats().fs.reads).toBe(reads);
  });

  it('has the kernel read ahead 1 MiB on the mount (128 KiB is its FUSE default)', () => {
    const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mnt);
    const device = line?.split(' ')[2];
    expect(readFileSync(`/sys/class/bdi/${device}/read_ahead_kb`, 'utf8').trim()).toBe('1024');
  });

  it('records the reads it serves, files in the order of their first read', () => {
    const record = mount?.accessRecord();
    expect(record?.image).toBe(image.index.image.manifestDigest);
    const paths = record?.files.map((f) => f.path) ?? [];
    // data/link and data/hard name big.bin's inode; reads arrive under the name that was opened
    expect(paths.indexOf('/etc/passwd')).toBeGreaterThan(-1);
    const bigRead = record?.files.find((f) => f.path === '/data/link' || f.path === '/data/big.bin');
    expect(bigRead?.ranges).toEqual([[0, big.length]]);
    expect(record?.files.every((f, i, all) => i === 0 || (all[i - 1]?.first_ms ?? 0) <= f.first_ms)).toBe(true);
  });
});

/** The smallest input of issue 8 item 3, made by GNU tar: two names one byte apart, neither UTF-8, and a PAX entry. */
function nonUtf8NamesTar(work: string): Buffer {
  const src = join(work, 'names-src');
  const at = (rel: string): Buffer => Buffer.from(`${src}/${rel}`, 'latin1');
  for (const d of ['names', 'names2']) mkdirSync(at(d), { recursive: true });
  writeFileSync(at('names/caf\xe9.txt'), 'a');
  writeFileSync(at('names/caf\xe8.txt'), 'bb');
  writeFileSync(at('names/caf\xc3\xa9.txt'), 'utf8'); // café in UTF-8: a third, different name
  writeFileSync(at('names2/\xff\xfe.bin'), 'ccc');
  symlinkSync(Buffer.from('caf\xe9.txt', 'latin1'), at('names/link-\xe9'));
  return execFileSync('tar', ['-C', src, '--format=pax', '--sort=name', '-cf', '-', 'names', 'names2'], { env: { ...process.env, LC_ALL: 'C' } });
}

describe.skipIf(!fuseNativeStatus().ok || process.getuid?.() !== 0)('names that are not UTF-8 (real FUSE mount)', () => {
  let mount: ClipMount | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'clip-fuse-names-'));
  const mnt = join(dir, 'mnt');
  const at = (rel: string): Buffer => Buffer.from(`${mnt}/${rel}`, 'latin1');

  beforeAll(async () => {
    const image = await buildImage([nonUtf8NamesTar(dir)]);
    writeFileSync(join(dir, 'image.clip'), image.indexBytes);
    mount = await mountClip(join(dir, 'image.clip'), mnt, { source: image.source });
  });

  afterAll(async () => {
    await mount?.unmount();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists, stats, opens and reads every name byte for byte', async () => {
    const names = (await readdir(at('names'), { encoding: 'buffer' })).map((b) => b.toString('latin1'));
    expect(names).toEqual(['caf\xc3\xa9.txt', 'caf\xe8.txt', 'caf\xe9.txt', 'link-\xe9']);
    expect((await readdir(at('names2'), { encoding: 'buffer' })).map((b) => b.toString('latin1'))).toEqual(['\xff\xfe.bin']);
    expect((await readFile(at('names/caf\xe9.txt'))).toString()).toBe('a');
    expect((await readFile(at('names/caf\xe8.txt'))).toString()).toBe('bb');
    expect((await readFile(at('names/caf\xc3\xa9.txt'))).toString()).toBe('utf8');
    expect((await readFile(at('names2/\xff\xfe.bin'))).toString()).toBe('ccc');
    expect((await stat(at('names/caf\xe8.txt'))).size).toBe(2);
    expect((await readlink(at('names/link-\xe9'), { encoding: 'buffer' })).toString('latin1')).toBe('caf\xe9.txt');
    expect((await readFile(at('names/link-\xe9'))).toString()).toBe('a');
    await expect(stat(at('names/caf\xe7.txt'))).rejects.toThrow(/ENOENT/);
  });

  it('GNU tar of the mount gives the same names and bytes as the original archive', async () => {
    const { stdout } = await execFileAsync('tar', ['-C', mnt, '--quoting-style=literal', '--sort=name', '-cvf', '/dev/null', 'names', 'names2'], {
      encoding: 'buffer', env: { ...process.env, LC_ALL: 'C' },
    });
    expect(stdout.toString('latin1').trim().split('\n')).toEqual([
      'names/', 'names/caf\xc3\xa9.txt', 'names/caf\xe8.txt', 'names/caf\xe9.txt', 'names/link-\xe9', 'names2/', 'names2/\xff\xfe.bin',
    ]);
  });
});
