import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, linkSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeTar, type RawEntry } from '../testing/tar-writer';
import { nameFromText } from '../names';
import { TarParser, type TarEntry } from './parser';

function parse(buf: Buffer, chunk = buf.length): TarEntry[] {
  const out: TarEntry[] = [];
  const p = new TarParser((e) => out.push(e));
  for (let i = 0; i < buf.length; i += chunk) p.push(buf.subarray(i, i + chunk));
  p.end();
  return out;
}

function one(e: RawEntry): TarEntry {
  const [entry] = parse(writeTar([e]));
  if (!entry) throw new Error('no entry');
  return entry;
}

describe('TarParser on hand-made archives', () => {
  it('reports data offsets that point at the file bytes, for any chunking', () => {
    const tar = writeTar([
      { name: 'a.txt', data: 'hello' },
      { name: 'dir/', type: '5', mode: 0o755 },
      { name: 'dir/b.bin', data: Buffer.alloc(1500, 7), pax: { path: 'dir/b-renamed.bin' } },
      { name: 'c', data: 'x'.repeat(512) },
    ]);
    for (const chunk of [1, 7, 511, 512, 513, 100_000]) {
      const entries = parse(tar, chunk);
      expect(entries.map((e) => e.name)).toEqual(['a.txt', 'dir/', 'dir/b-renamed.bin', 'c']);
      for (const e of entries) {
        if (e.type !== 'file') continue;
        const data = tar.subarray(e.dataOffset, e.dataOffset + e.size);
        expect(data.length).toBe(e.size);
      }
      expect(tar.toString('utf8', entries[0]?.dataOffset, (entries[0]?.dataOffset ?? 0) + 5)).toBe('hello');
      expect(tar.subarray(entries[2]?.dataOffset ?? 0, (entries[2]?.dataOffset ?? 0) + 1500).every((b) => b === 7)).toBe(true);
    }
  });

  it('keeps setuid, setgid and sticky bits', () => {
    expect(one({ name: 'sudo', mode: 0o4755 }).mode).toBe(0o4755);
    expect(one({ name: 'wall', mode: 0o2755 }).mode).toBe(0o2755);
    expect(one({ name: 'tmp/', type: '5', mode: 0o1777 }).mode).toBe(0o1777);
  });

  it('applies PAX records: path, linkpath, size, times with nanoseconds, ids, names, xattrs', () => {
    const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0xff, 0x00]);
    const e = one({
      name: 'short',
      data: 'abc',
      pax: {
        path: 'very/long/' + 'x'.repeat(200),
        mtime: '1700000000.123456789',
        atime: '1600000000.5',
        ctime: '-1.25',
        uid: '3000000000',
        gid: '70000',
        uname: nameFromText('üser'), // its UTF-8 bytes
        'SCHILY.xattr.security.capability': cap,
        'SCHILY.xattr.user.note': 'hi=there',
        'LIBARCHIVE.xattr.user.b64': Buffer.from('binary\0value').toString('base64'),
      },
    });
    expect(e.name).toBe('very/long/' + 'x'.repeat(200));
    expect(e.mtime).toEqual({ sec: 1700000000, nsec: 123456789 });
    expect(e.atime).toEqual({ sec: 1600000000, nsec: 500000000 });
    expect(e.ctime).toEqual({ sec: -2, nsec: 750000000 });
    expect(e.uid).toBe(3000000000);
    expect(e.gid).toBe(70000);
    expect(e.uname).toBe(nameFromText('üser'));
    expect(e.xattrs.get('security.capability')).toEqual(cap);
    expect(e.xattrs.get('user.note')?.toString()).toBe('hi=there');
    expect(e.xattrs.get('user.b64')?.toString()).toBe('binary\0value');
    const l = one({ name: 'l', type: '2', linkname: 'short', pax: { linkpath: 'x/'.repeat(80) + 'target' } });
    expect(l.linkname).toBe('x/'.repeat(80) + 'target');
  });

  it('PAX size overrides the header size (files over 8 GiB)', () => {
    const tar = writeTar([{ name: 'big', data: 'abcdef', pax: { size: '6' } }]);
    expect(parse(tar)[0]?.size).toBe(6);
  });

  it('applies global PAX headers to later entries', () => {
    const g = writeTar([{ name: 'g', type: 'g', data: Buffer.from('19 uname=globalusr\n') }], { end: false });
    const rest = writeTar([{ name: 'a', uname: '' }, { name: 'b', pax: { uname: 'mine' } }]);
    const entries = parse(Buffer.concat([g, rest]));
    expect(entries.map((e) => e.uname)).toEqual(['globalusr', 'mine']);
  });

  it('reads GNU long names and long link targets', () => {
    const name = 'd/'.repeat(70) + 'file-with-a-long-name';
    const target = 't/'.repeat(70) + 'target';
    const entries = parse(
      writeTar([
        { name, gnuLong: true, gnuMagic: true, data: 'z' },
        { name: name + '.lnk', type: '2', linkname: target, gnuLong: true, gnuMagic: true },
      ]),
    );
    expect(entries[0]?.name).toBe(name);
    expect(entries[1]?.name).toBe(name + '.lnk');
    expect(entries[1]?.linkname).toBe(target);
  });

  it('joins the ustar prefix', () => {
    const name = 'p/'.repeat(60) + 'leaf';
    expect(one({ name, prefixAt: 119 }).name).toBe(name);
  });

  it('reads base-256 numbers', () => {
    const e = one({ name: 'b', uid: 2 ** 40, base256: true, data: 'xyz' });
    expect(e.uid).toBe(2 ** 40);
    expect(e.size).toBe(3);
  });

  it('reads every entry type', () => {
    const entries = parse(
      writeTar([
        { name: 'f', data: 'x' },
        { name: 'h', type: '1', linkname: 'f' },
        { name: 's', type: '2', linkname: '/f' },
        { name: 'null', type: '3', devmajor: 1, devminor: 3, mode: 0o666 },
        { name: 'loop0', type: '4', devmajor: 7, devminor: 0 },
        { name: 'd', type: '5' },
        { name: 'p', type: '6' },
        { name: 'c', type: '7', data: 'contig' },
        { name: 'v7dir/', type: '0' },
      ]),
    );
    expect(entries.map((e) => [e.name, e.type])).toEqual([
      ['f', 'file'],
      ['h', 'hardlink'],
      ['s', 'symlink'],
      ['null', 'chardev'],
      ['loop0', 'blockdev'],
      ['d', 'directory'],
      ['p', 'fifo'],
      ['c', 'file'],
      ['v7dir/', 'directory'],
    ]);
    expect(entries[3]).toMatchObject({ devmajor: 1, devminor: 3, mode: 0o666 });
    expect(entries[4]).toMatchObject({ devmajor: 7, devminor: 0 });
    expect(entries[1]?.linkname).toBe('f');
  });

  it('rejects corrupt headers, truncation and sparse files with clear errors', () => {
    const tar = writeTar([{ name: 'a', data: 'hello' }]);
    const bad = Buffer.from(tar);
    bad[10] = 0x41;
    expect(() => parse(bad)).toThrow(/checksum/);
    expect(() => parse(tar.subarray(0, 600))).toThrow(/truncated/);
    expect(() => parse(writeTar([{ name: 's', type: 'S' }]))).toThrow(/sparse/);
    expect(() => parse(Buffer.from('not a tar'.repeat(100)))).toThrow(/checksum|octal/);
  });
});

describe('TarParser on archives made by GNU tar', () => {
  const root = mkdtempSync(join(tmpdir(), 'clip-tar-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const src = join(root, 'src');
  mkdirSync(join(src, 'usr/bin'), { recursive: true });
  mkdirSync(join(src, 'tmp'));
  chmodSync(join(src, 'tmp'), 0o1777);
  writeFileSync(join(src, 'usr/bin/sudo'), 'setuid binary');
  chmodSync(join(src, 'usr/bin/sudo'), 0o4755);
  writeFileSync(join(src, 'usr/bin/ping'), Buffer.alloc(70_000, 1));
  execFileSync('setcap', ['cap_net_raw+ep', join(src, 'usr/bin/ping')]);
  const longDir = join(src, 'deep', 'a'.repeat(60), 'b'.repeat(60));
  mkdirSync(longDir, { recursive: true });
  writeFileSync(join(longDir, 'c'.repeat(90)), 'long');
  symlinkSync('../usr/bin/sudo', join(src, 'deep/link'));
  symlinkSync('x'.repeat(150), join(src, 'deep/longlink'));
  linkSync(join(src, 'usr/bin/sudo'), join(src, 'usr/bin/sudo-hard'));
  execFileSync('mkfifo', [join(src, 'fifo')]);
  execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
  utimesSync(join(src, 'usr/bin/sudo'), 1_600_000_000.25, 1_700_000_000.123456);

  for (const format of ['pax', 'gnu'] as const) {
    it(`matches lstat of the source tree (--format=${format})`, () => {
      const tar = execFileSync('tar', ['-C', src, `--format=${format}`, '--xattrs', '--xattrs-include=*', '-cf', '-', '.'], {
        maxBuffer: 1 << 28,
      });
      const entries = parse(tar, 4096);
      const byPath = new Map(entries.map((e) => [e.name.replace(/^\.\//, '').replace(/\/$/, ''), e]));
      for (const [path, e] of byPath) {
        if (path === '.' || path === '') continue;
        const st = lstatSync(join(src, path), { bigint: true });
        expect(e.mode, path).toBe(Number(st.mode) & 0o7777);
        expect(e.uid).toBe(Number(st.uid));
        expect(e.gid).toBe(Number(st.gid));
        expect(e.mtime.sec, path).toBe(Number(st.mtimeNs / 1_000_000_000n));
        if (format === 'pax') expect(e.mtime.nsec, path).toBe(Number(st.mtimeNs % 1_000_000_000n));
        if (e.type === 'file') {
          expect(tar.subarray(e.dataOffset, e.dataOffset + e.size).equals(readFileSync(join(src, path)))).toBe(true);
        }
      }
      const longName = `deep/${'a'.repeat(60)}/${'b'.repeat(60)}/${'c'.repeat(90)}`;
      expect(byPath.get(longName)?.type).toBe('file');
      expect(byPath.get('deep/longlink')?.linkname).toBe('x'.repeat(150));
      expect(byPath.get('deep/link')?.linkname).toBe('../usr/bin/sudo');
      const pair = [byPath.get('usr/bin/sudo'), byPath.get('usr/bin/sudo-hard')].map((e) => e?.type).sort();
      expect(pair).toEqual(['file', 'hardlink']); // which one comes first is readdir order
      expect(byPath.get('fifo')?.type).toBe('fifo');
      expect(byPath.get('null')).toMatchObject({ type: 'chardev', devmajor: 1, devminor: 3 });
      expect(byPath.get('tmp')?.mode).toBe(0o1777);
      if (format === 'pax') {
        expect(byPath.get('usr/bin/ping')?.xattrs.get('security.capability')?.length).toBeGreaterThan(0);
      }
    });
  }
});

// Names are bytes: Latin-1 é (0xe9) and è (0xe8) are two different names, neither is UTF-8,
// and both must come out exactly as GNU tar wrote them (as Docker's Go reader sees them).
describe('TarParser keeps names that are not UTF-8 byte for byte', () => {
  const root = mkdtempSync(join(tmpdir(), 'clip-tar-names-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const src = join(root, 'src');
  const at = (rel: string): Buffer => Buffer.from(`${src}/${rel}`, 'latin1'); // a byte-string path as fs wants it
  mkdirSync(at('names'), { recursive: true });
  mkdirSync(at('names2'));
  writeFileSync(at('names/caf\xe9.txt'), 'a');
  writeFileSync(at('names/caf\xe8.txt'), 'ab');
  writeFileSync(at('names2/\xff\xfe.bin'), 'xyz');
  const longDir = `long-\xe9-${'d'.repeat(120)}`;
  mkdirSync(at(longDir));
  writeFileSync(at(`${longDir}/f\xfc\xdf`), 'long');
  symlinkSync(Buffer.from('caf\xe9.txt', 'latin1'), at('names/link-\xe9'));
  linkSync(at('names/caf\xe8.txt'), at('names/hard-\xe8'));

  const expected = ['names/caf\xe9.txt', 'names/caf\xe8.txt', 'names2/\xff\xfe.bin', `${longDir}/f\xfc\xdf`, 'names/link-\xe9', 'names/hard-\xe8'];
  for (const format of ['pax', 'gnu', 'posix'] as const) {
    it(`--format=${format}`, () => {
      const tar = execFileSync('tar', ['-C', src, `--format=${format}`, '-cf', '-', '.'], { maxBuffer: 1 << 24, env: { ...process.env, LC_ALL: 'C' } });
      const entries = parse(tar, 700);
      const byName = new Map(entries.map((e) => [e.name.replace(/^\.\//, '').replace(/\/$/, ''), e]));
      expect([...byName.keys()]).toEqual(expect.arrayContaining(expected));
      const data = (name: string): string => {
        const e = byName.get(name);
        return tar.toString('latin1', e?.dataOffset, (e?.dataOffset ?? 0) + (e?.size ?? 0));
      };
      expect([data('names/caf\xe9.txt'), data('names2/\xff\xfe.bin')]).toEqual(['a', 'xyz']);
      expect(byName.get('names/link-\xe9')).toMatchObject({ type: 'symlink', linkname: 'caf\xe9.txt' });
      // GNU tar stores the second name of an inode it meets as a hard link to the first.
      const pair = ['names/caf\xe8.txt', 'names/hard-\xe8'];
      const file = pair.find((n) => byName.get(n)?.type === 'file') ?? '';
      const hard = pair.find((n) => byName.get(n)?.type === 'hardlink') ?? '';
      expect(data(file)).toBe('ab');
      expect(byName.get(hard)?.linkname).toBe(`./${file}`);
      // And GNU tar lists exactly these bytes.
      const listed = execFileSync('tar', ['--quoting-style=literal', '-tf', '-'], { input: tar, env: { ...process.env, LC_ALL: 'C' } }).toString('latin1').trim().split('\n');
      expect(listed.map((n) => n.replace(/^\.\//, '').replace(/\/$/, ''))).toEqual(entries.map((e) => e.name.replace(/^\.\//, '').replace(/\/$/, '')));
    });
  }

  it('PAX path and linkpath with hdrcharset=BINARY, a ustar prefix and GNU long names and links with raw bytes', () => {
    const entries = parse(
      writeTar([
        { name: 'x', data: 'p', pax: { hdrcharset: 'BINARY', path: Buffer.from('bin/\xff\xfe', 'latin1') } },
        { name: 'l', type: '2', pax: { linkpath: Buffer.from('t\xe9', 'latin1') } },
        { name: `${'p\xe9/'.repeat(40)}leaf\xe8`, prefixAt: 119 },
        { name: `${'g\xe9/'.repeat(50)}long\xe8`, gnuLong: true, gnuMagic: true, data: 'z' },
        { name: 'gl', type: '2', linkname: `${'k\xe8/'.repeat(50)}target`, gnuLong: true, gnuMagic: true },
      ]),
    );
    expect(entries.map((e) => e.name)).toEqual(['bin/\xff\xfe', 'l', `${'p\xe9/'.repeat(40)}leaf\xe8`, `${'g\xe9/'.repeat(50)}long\xe8`, 'gl']);
    expect(entries[1]?.linkname).toBe('t\xe9');
    expect(entries[4]?.linkname).toBe(`${'k\xe8/'.repeat(50)}target`);
  });

  it('keeps xattr names as bytes too (SCHILY and URL-encoded LIBARCHIVE keys)', () => {
    const [e] = parse(writeTar([{ name: 'f', pax: { 'SCHILY.xattr.user.\xe9': 'v1', 'LIBARCHIVE.xattr.user.%E8': Buffer.from('v2').toString('base64') } }]));
    expect([...(e?.xattrs.keys() ?? [])].sort()).toEqual(['user.\xe8', 'user.\xe9']);
  });
});
