import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, symlinkSync, linkSync, chmodSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import type { TarEntry } from '@cryo/clip';
import { tarEntries } from '../../testing/tar';
import { afterAll, describe, expect, it } from 'vitest';
import { captureUpperDir, layerEntriesFor, writeLayer } from './upper-layer';

const execFileAsync = promisify(execFile);

function tarEntry(over: Partial<TarEntry>): TarEntry {
  return {
    name: './x', type: 'file', mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', size: 0, mtime: { sec: 1_700_000_000, nsec: 5 },
    linkname: '', devmajor: 0, devminor: 0, xattrs: new Map(), headerOffset: 0, dataOffset: 512, ...over,
  };
}

describe('layerEntriesFor (overlay -> OCI whiteouts)', () => {
  it('turns a whiteout char device 0:0 into an empty .wh. file', () => {
    expect(layerEntriesFor(tarEntry({ name: './etc/motd', type: 'chardev', mode: 0o0, uid: 0 }))).toEqual([
      expect.objectContaining({ name: 'etc/.wh.motd', type: 'file', mode: 0o600, size: 0 }),
    ]);
    expect(layerEntriesFor(tarEntry({ name: './top', type: 'chardev' }))[0]?.name).toBe('.wh.top');
  });

  it('keeps real char devices', () => {
    expect(layerEntriesFor(tarEntry({ name: './srv/null', type: 'chardev', devmajor: 1, devminor: 3 }))).toEqual([
      expect.objectContaining({ name: 'srv/null', type: 'chardev', devmajor: 1, devminor: 3 }),
    ]);
  });

  it('marks an opaque dir with .wh..wh..opq after its own entry, and drops overlay xattrs', () => {
    const xattrs = new Map([['trusted.overlay.opaque', Buffer.from('y')], ['user.keep', Buffer.from('1')]]);
    const out = layerEntriesFor(tarEntry({ name: './var/cache/', type: 'directory', mode: 0o2755, uid: 7, gid: 8, xattrs }));
    expect(out.map((e) => [e.name, e.type, e.mode, e.uid, e.gid])).toEqual([
      ['var/cache', 'directory', 0o2755, 7, 8],
      ['var/cache/.wh..wh..opq', 'file', 0o755, 7, 8],
    ]);
    expect([...(out[0]?.xattrs.keys() ?? [])]).toEqual(['user.keep']);
  });

  it('drops overlayfs bookkeeping xattrs, keeps security.capability, truncates times to seconds', () => {
    const xattrs = new Map([['trusted.overlay.origin', Buffer.from([0, 1])], ['security.capability', Buffer.from([1, 0, 0, 2])]]);
    const [e] = layerEntriesFor(tarEntry({ name: './usr/bin/ping', mode: 0o4755, size: 10, xattrs, dataOffset: 1536 }));
    expect([...(e?.xattrs.keys() ?? [])]).toEqual(['security.capability']);
    expect(e).toMatchObject({ name: 'usr/bin/ping', mode: 0o4755, mtime: { sec: 1_700_000_000, nsec: 0 }, size: 10, dataFrom: 1536 });
  });

  it('leaves out the root entry and what the runtime manages', () => {
    for (const name of ['./', './proc/', './dev/', './dev/shm/', './sys/', './etc/hosts', './etc/hostname', './etc/resolv.conf']) {
      expect(layerEntriesFor(tarEntry({ name, type: name.endsWith('/') ? 'directory' : 'file' })), name).toEqual([]);
    }
    expect(layerEntriesFor(tarEntry({ name: './etc/hosts.allow' }))).toHaveLength(1);
    expect(layerEntriesFor(tarEntry({ name: './device' }))).toHaveLength(1);
  });

  it('normalises hard link targets', () => {
    expect(layerEntriesFor(tarEntry({ name: './b', type: 'hardlink', linkname: './a' }))[0]?.linkname).toBe('a');
  });
});

// A real overlay: the kernel makes the whiteouts and opaque dirs, GNU tar captures them.
describe.skipIf(process.getuid?.() !== 0)('captureUpperDir + writeLayer on a real overlay', () => {
  const root = mkdtempSync(join(tmpdir(), 'upper-layer-'));
  const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(root, d)) as [string, string, string, string];

  afterAll(() => {
    try {
      execFileSync('umount', [merged], { stdio: 'ignore' });
    } catch {
      // not mounted
    }
    rmSync(root, { recursive: true, force: true });
  });

  it('converts the upper dir into an OCI layer with whiteouts', async () => {
    for (const d of [lower, upper, work, merged, join(lower, 'd'), join(lower, 'keep'), join(lower, 'etc')]) mkdirSync(d, { recursive: true });
    writeFileSync(join(lower, 'gone'), 'old');
    writeFileSync(join(lower, 'd', 'x'), 'x');
    writeFileSync(join(lower, 'keep', 'changed'), 'v1');
    writeFileSync(join(lower, 'etc', 'hosts'), 'image hosts');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work},redirect_dir=off,metacopy=off,index=off`, merged]);
    unlinkSync(join(merged, 'gone'));
    rmSync(join(merged, 'd'), { recursive: true });
    mkdirSync(join(merged, 'd'));
    writeFileSync(join(merged, 'd', 'z'), 'new z');
    writeFileSync(join(merged, 'keep', 'changed'), 'v2');
    writeFileSync(join(merged, 'new'), 'brand new');
    chmodSync(join(merged, 'new'), 0o4755);
    linkSync(join(merged, 'new'), join(merged, 'new-hard'));
    symlinkSync('new', join(merged, 'new-sym'));
    mkdirSync(join(merged, 'proc'));
    writeFileSync(join(merged, 'etc', 'hosts'), 'changed hosts');
    // names that are not UTF-8 (Latin-1 é and è): two files, kept byte for byte
    writeFileSync(Buffer.from(join(merged, 'caf\xe9.txt'), 'latin1'), 'e');
    writeFileSync(Buffer.from(join(merged, 'caf\xe8.txt'), 'latin1'), 'ee');
    execFileSync('umount', [merged]);

    const raw = join(root, 'upper.tar');
    await captureUpperDir(upper, raw);
    const layer = await writeLayer(raw, join(root, 'layer.tar.gz'));
    const gz = readFileSync(layer.path);
    const tar = gunzipSync(gz);
    expect(layer.digest).toBe(`sha256:${createHash('sha256').update(gz).digest('hex')}`);
    expect(layer.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    expect([layer.size, layer.uncompressedSize]).toEqual([gz.length, tar.length]);
    expect([layer.whiteouts, layer.opaqueDirs]).toEqual([1, 1]);

    const entries = tarEntries(tar);
    const byName = new Map(entries.map((e) => [e.name.replace(/\/$/, ''), e]));
    expect([...byName.keys()].sort()).toEqual(
      ['.wh.gone', 'caf\xe8.txt', 'caf\xe9.txt', 'd', 'd/.wh..wh..opq', 'd/z', 'etc', 'keep', 'keep/changed', 'new', 'new-hard', 'new-sym'].sort(),
    );
    expect(byName.get('caf\xe8.txt')).toMatchObject({ type: 'file', size: 2 });
    expect(byName.get('.wh.gone')).toMatchObject({ type: 'file', size: 0 });
    expect(byName.get('d')?.type).toBe('directory');
    expect(byName.get('new')).toMatchObject({ type: 'file', mode: 0o4755 });
    expect(byName.get('new-hard')).toMatchObject({ type: 'hardlink', linkname: 'new' });
    expect(byName.get('new-sym')).toMatchObject({ type: 'symlink', linkname: 'new' });
    for (const e of entries) expect([...e.xattrs.keys()].filter((k) => k.startsWith('trusted.overlay.')), e.name).toEqual([]);
    const z = byName.get('d/z');
    expect(tar.subarray(z?.dataOffset ?? 0, (z?.dataOffset ?? 0) + 5).toString()).toBe('new z');
    // GNU tar agrees on the listing of the gzip'd layer.
    const { stdout } = await execFileAsync('tar', ['--quoting-style=literal', '-tzf', layer.path], { encoding: 'buffer' });
    expect(stdout.toString('latin1').trim().split('\n').map((n) => n.replace(/\/$/, '')).sort()).toEqual([...byName.keys()].sort());
  });
});
