import { describe, expect, it } from 'vitest';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG } from '../format/types';
import { buildImage } from '../testing/fixtures';
import { writeTar, type RawEntry } from '../testing/tar-writer';

async function merged(...layers: RawEntry[][]) {
  const img = await buildImage(
    layers.map((l) => writeTar(l)),
    'none',
  );
  return img.reader();
}

describe('layer merge', () => {
  it('whiteouts delete entries of lower layers only', async () => {
    const r = await merged(
      [{ name: 'etc/', type: '5' }, { name: 'etc/a', data: 'A' }, { name: 'etc/b', data: 'B' }, { name: 'etc/sub/x', data: 'x' }],
      // same layer re-adds a after whiting it out (marker after the entry, as some writers do)
      [{ name: 'etc/a', data: 'A2' }, { name: 'etc/.wh.a' }, { name: 'etc/.wh.b' }, { name: 'etc/.wh.sub' }],
    );
    expect(await r.readdir('/etc')).toEqual(['a']);
    expect((await r.readFile('/etc/a')).toString()).toBe('A2');
  });

  it('opaque markers empty the lower directory but keep entries of their own layer, in any order', async () => {
    for (const markerFirst of [true, false]) {
      const own: RawEntry[] = [{ name: 'd/new', data: 'n' }, { name: 'd/sub/deep', data: 'deep' }];
      const marker: RawEntry = { name: 'd/.wh..wh..opq' };
      const r = await merged(
        [{ name: 'd/old', data: 'o' }, { name: 'd/sub/lower', data: 'l' }, { name: 'e', data: 'e' }],
        markerFirst ? [marker, ...own] : [...own, marker],
      );
      expect(await r.readdir('/d')).toEqual(['new', 'sub']);
      expect(await r.readdir('/d/sub')).toEqual(['deep']);
      expect(await r.readdir('/')).toEqual(['d', 'e']);
    }
  });

  it('a non-directory replacing a directory removes the subtree; a directory over a directory keeps children', async () => {
    const r = await merged(
      [{ name: 'x/', type: '5', mode: 0o700 }, { name: 'x/child', data: 'c' }, { name: 'y/', type: '5' }, { name: 'y/keep', data: 'k' }],
      [{ name: 'x', data: 'now a file' }, { name: 'y/', type: '5', mode: 0o750, uid: 5 }],
    );
    expect((await r.readFile('/x')).toString()).toBe('now a file');
    await expect(r.stat('/x/child')).rejects.toMatchObject({ code: 'ENOTDIR' });
    expect(await r.readdir('/y')).toEqual(['keep']);
    const y = await r.stat('/y');
    expect(y.mode).toBe(S_IFDIR | 0o750);
    expect(y.uid).toBe(5);
  });

  it('synthesises missing parents, replacing a non-directory parent', async () => {
    const r = await merged([{ name: 'a/b/c/file', data: 'f' }, { name: 'p', data: 'plain' }], [{ name: 'p/q', data: 'q' }]);
    const st = await r.stat('/a/b');
    expect(st.mode).toBe(S_IFDIR | 0o755);
    expect(st.mtime).toEqual({ sec: 0, nsec: 0 });
    expect(await r.readdir('/p')).toEqual(['q']);
    expect((await r.stat('/')).nlink).toBe(4); // '.', '..', a, p
  });

  it('hard links share one inode with the real link count, also after a later layer replaces one name', async () => {
    const r = await merged(
      [
        { name: 'bin/prog', data: 'program', mode: 0o4755, uid: 0 },
        { name: 'bin/alias1', type: '1', linkname: 'bin/prog' },
        { name: 'bin/alias2', type: '1', linkname: './bin/prog' },
      ],
      [{ name: 'bin/alias2', data: 'replaced' }],
    );
    const p = await r.stat('/bin/prog');
    const a1 = await r.stat('/bin/alias1');
    const a2 = await r.stat('/bin/alias2');
    expect(a1.ino).toBe(p.ino);
    expect(p.nlink).toBe(2);
    expect(a2.ino).not.toBe(p.ino);
    expect(a2.nlink).toBe(1);
    expect(p.mode).toBe(S_IFREG | 0o4755);
    expect((await r.readFile('/bin/alias1')).toString()).toBe('program');
  });

  it('keeps devices, FIFOs, symlinks, owners, times and xattrs', async () => {
    const r = await merged([
      { name: 'dev/null', type: '3', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: '4', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
      { name: 'run/fifo', type: '6', mode: 0o600, uid: 1000, gid: 1000 },
      { name: 'tmp/', type: '5', mode: 0o1777 },
      { name: 'lnk', type: '2', linkname: 'dev/null' },
      {
        name: 'cap',
        data: 'x',
        pax: { mtime: '1700000000.5', 'SCHILY.xattr.security.capability': Buffer.from([1, 0, 0, 2]) },
      },
    ]);
    const dnull = await r.stat('/dev/null');
    expect(dnull.mode).toBe(S_IFCHR | 0o666);
    expect([dnull.rdevMajor, dnull.rdevMinor]).toEqual([1, 3]);
    expect((await r.stat('/dev/sda')).mode & S_IFMT).toBe(S_IFBLK);
    const fifo = await r.stat('/run/fifo');
    expect(fifo.mode).toBe(S_IFIFO | 0o600);
    expect([fifo.uid, fifo.gid]).toEqual([1000, 1000]);
    expect((await r.stat('/tmp')).mode).toBe(S_IFDIR | 0o1777);
    const l = await r.stat('/lnk');
    expect(l.mode & S_IFMT).toBe(S_IFLNK);
    expect(l.size).toBe('dev/null'.length);
    const cap = await r.stat('/cap');
    expect(cap.mtime).toEqual({ sec: 1700000000, nsec: 500000000 });
    expect(await r.listxattr('/cap')).toEqual(['security.capability']);
    expect(await r.getxattr('/cap', 'security.capability')).toEqual(Buffer.from([1, 0, 0, 2]));
    await expect(r.getxattr('/cap', 'user.none')).rejects.toMatchObject({ code: 'ENODATA' });
  });

  it('rejects paths escaping the root and dangling hard links', async () => {
    await expect(merged([{ name: '../etc/passwd', data: 'x' }])).rejects.toMatchObject({ code: 'LAYER_CORRUPT' });
    await expect(merged([{ name: 'h', type: '1', linkname: 'missing' }])).rejects.toThrow(/missing/);
  });
});
