import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { nameFromBytes } from '../names';
import { TarParser, type TarEntry } from '../tar/parser';
import { writeTar, type RawEntry } from '../testing/tar-writer';
import { decompressLayer, flattenLayers, readTarEntries, spoolLayer, type FlattenLayer } from './flatten';

const C_LOCALE = { ...process.env, LC_ALL: 'C' };
const work = mkdtempSync(join(tmpdir(), 'flatten-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function parse(tar: Buffer): TarEntry[] {
  const out: TarEntry[] = [];
  const parser = new TarParser((e) => out.push(e));
  parser.push(tar);
  parser.end();
  return out;
}

/** A layer held in memory. */
function memoryLayer(tar: Buffer): FlattenLayer {
  return {
    entries: parse(tar),
    async *read(offset, length) {
      yield tar.subarray(offset, offset + length);
    },
  };
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of gen) chunks.push(c);
  return Buffer.concat(chunks);
}

async function flatten(...tars: Buffer[]): Promise<Buffer> {
  return collect(flattenLayers(tars.map(memoryLayer)).tar());
}

/** GNU tar of `dir` as `docker import` takes it (`./` first; C locale: names go in as bytes). */
function gnuTar(dir: string, format: 'posix' | 'gnu' = 'posix'): Buffer {
  return execFileSync('tar', ['-C', dir, `--format=${format}`, '--numeric-owner', '--sort=name', '-cf', '-', '.'], { env: C_LOCALE, maxBuffer: 1 << 26 });
}

const file = (name: string, data: string, extra: Partial<RawEntry> = {}): RawEntry => ({ name, data, ...extra });

let dirs = 0;
function fresh(): string {
  const dir = join(work, `d${dirs++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * What GNU tar extracts from `tar`, one line per path (names as bytes): type, permission bits,
 * owner, and the content's sha256 or the link target; hard links as `=> first name`.
 */
function extracted(tar: Buffer): string[] {
  const dir = fresh();
  execFileSync('tar', ['-C', dir, '--numeric-owner', '--same-permissions', '-xf', '-'], { input: tar, env: C_LOCALE });
  const lines: string[] = [];
  const inodes = new Map<number, string>();
  const walk = (rel: Buffer[]): void => {
    const abs = Buffer.concat([Buffer.from(dir), ...rel.flatMap((r) => [Buffer.from('/'), r])]);
    for (const name of readdirSync(abs, { encoding: 'buffer' }).sort(Buffer.compare)) {
      const path = [...rel, name];
      const full = Buffer.concat([abs, Buffer.from('/'), name]);
      const st = lstatSync(full);
      const shown = nameFromBytes(Buffer.concat(path.flatMap((p, i) => (i === 0 ? [p] : [Buffer.from('/'), p]))));
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        lines.push(`${shown} dir ${mode} ${st.uid}:${st.gid}`);
        walk(path);
      } else if (st.isSymbolicLink()) {
        lines.push(`${shown} symlink -> ${nameFromBytes(readlinkSync(full, { encoding: 'buffer' }))}`);
      } else if (st.isFile()) {
        const first = inodes.get(st.ino);
        if (first !== undefined) {
          lines.push(`${shown} => ${first}`);
          continue;
        }
        if (st.nlink > 1) inodes.set(st.ino, shown);
        const data = readFileSync(full);
        lines.push(`${shown} file ${mode} ${st.uid}:${st.gid} ${data.length <= 16 ? JSON.stringify(data.toString('latin1')) : createHash('sha256').update(data).digest('hex').slice(0, 12)}`);
      } else {
        lines.push(`${shown} other ${mode}`);
      }
    }
  };
  walk([]);
  return lines;
}

describe('flattenLayers: layers made by GNU tar', () => {
  it('merges whiteouts, opaque dirs, replaced dirs and files, hard links and non-UTF-8 names like an OCI runtime', async () => {
    // layer 0: the base
    const l0 = fresh();
    mkdirSync(join(l0, 'etc'));
    writeFileSync(join(l0, 'etc', 'passwd'), 'root\n');
    writeFileSync(join(l0, 'etc', 'gone'), 'x');
    mkdirSync(join(l0, 'x', 'deep'), { recursive: true });
    writeFileSync(join(l0, 'x', 'deep', 'f'), 'pruned with x');
    writeFileSync(join(l0, 'y'), 'a file, later a dir');
    writeFileSync(join(l0, 'prog'), 'program');
    chmodSync(join(l0, 'prog'), 0o4755);
    linkSync(join(l0, 'prog'), join(l0, 'prog-alias'));
    symlinkSync('etc/passwd', join(l0, 'pw'));
    mkdirSync(join(l0, 'tmp'));
    chmodSync(join(l0, 'tmp'), 0o1777);
    writeFileSync(Buffer.from(`${l0}/caf\xe9.txt`, 'latin1'), 'latin-1 name');
    writeFileSync(join(l0, 'big'), Buffer.alloc(300_000, 7));
    // layer 1: deletes, an opaque etc, a file where the dir x was, a hard link made in this layer
    const l1 = fresh();
    mkdirSync(join(l1, 'etc'));
    writeFileSync(join(l1, 'etc', '.wh..wh..opq'), '');
    writeFileSync(join(l1, 'etc', 'passwd'), 'root\nuser\n');
    writeFileSync(join(l1, 'x'), 'x is a file now');
    writeFileSync(join(l1, '.wh.y'), '');
    writeFileSync(join(l1, '.wh.prog'), '');
    writeFileSync(Buffer.from(`${l1}/caf\xe8.txt`, 'latin1'), 'another byte');
    writeFileSync(join(l1, 'new'), 'made in layer 1');
    linkSync(join(l1, 'new'), join(l1, 'new-link'));
    // layer 2: y comes back as a directory; a whiteout of its own layer's entry does nothing
    const l2 = fresh();
    mkdirSync(join(l2, 'y'));
    writeFileSync(join(l2, 'y', 'inside'), 'in the new dir');
    writeFileSync(join(l2, 'kept'), 'own layer');
    writeFileSync(join(l2, '.wh.kept'), '');
    writeFileSync(join(l2, '.wh.big'), '');

    for (const format of ['posix', 'gnu'] as const) {
      const out = await flatten(gnuTar(l0, format), gnuTar(l1, format), gnuTar(l2, format));
      const lines = extracted(out);
      expect(lines.filter((l) => !/ dir /.test(l))).toEqual([
        'caf\xe8.txt file 644 0:0 "another byte"',
        'caf\xe9.txt file 644 0:0 "latin-1 name"',
        'etc/passwd file 644 0:0 "root\\nuser\\n"',
        'kept file 644 0:0 "own layer"',
        'new file 644 0:0 "made in layer 1"',
        'new-link => new',
        'prog-alias file 4755 0:0 "program"',
        'pw symlink -> etc/passwd',
        'x file 644 0:0 "x is a file now"',
        'y/inside file 644 0:0 "in the new dir"',
      ]);
      expect(lines).toContain('tmp dir 1777 0:0');
      expect(lines).toContain('y dir 755 0:0');
      expect(lines.some((l) => l.startsWith('x/') || l.startsWith('big') || l.startsWith('etc/gone') || l.startsWith('prog '))).toBe(false);
      // A bottom layer needs no whiteouts: none are written.
      expect(parse(out).filter((e) => e.name.includes('.wh.'))).toEqual([]);
    }
  });

  it('writes the same bytes for the same layers (a stable diff_id)', async () => {
    const a = fresh();
    for (const n of ['b', 'a', 'c']) writeFileSync(join(a, n), n);
    const b = fresh();
    writeFileSync(join(b, '.wh.a'), '');
    const tars = [gnuTar(a), gnuTar(b)];
    expect((await flatten(...tars)).equals(await flatten(...tars))).toBe(true);
    expect(parse(await flatten(...tars)).map((e) => e.name)).toEqual(['./', 'b', 'c']);
  });
});

describe('flattenLayers: edge cases', () => {
  it('a hard link outlives the name it linked to, carrying the data', async () => {
    const out = await flatten(
      writeTar([file('bin/prog', 'program', { mode: 0o755 }), { name: 'bin/alias', type: '1', linkname: 'bin/prog' }, { name: 'bin/alias2', type: '1', linkname: 'bin/prog' }]),
      writeTar([{ name: 'bin/.wh.prog' }]),
    );
    const entries = parse(out);
    expect(entries.map((e) => [e.name, e.type, e.linkname, e.size])).toEqual([
      ['bin/', 'directory', '', 0],
      ['bin/alias', 'file', '', 7],
      ['bin/alias2', 'hardlink', 'bin/alias', 0],
    ]);
    expect(extracted(out)).toEqual(['bin dir 755 0:0', 'bin/alias file 755 0:0 "program"', 'bin/alias2 => bin/alias']);
  });

  it('an opaque marker empties the lower dir whether it comes before or after its own entries', async () => {
    for (const markerFirst of [true, false]) {
      const own = [file('d/new', 'n'), file('d/sub/deep', 'deep')];
      const marker: RawEntry = { name: 'd/.wh..wh..opq' };
      const out = await flatten(
        writeTar([file('d/old', 'o'), file('d/sub/lower', 'l'), file('e', 'e')]),
        writeTar(markerFirst ? [marker, ...own] : [...own, marker]),
      );
      expect(parse(out).map((e) => e.name)).toEqual(['d/', 'd/new', 'd/sub/', 'd/sub/deep', 'e']);
    }
  });

  it('a file replacing a directory prunes the subtree; a directory over a directory keeps its children and takes the new metadata', async () => {
    const out = await flatten(
      writeTar([{ name: 'x/', type: '5', mode: 0o700 }, file('x/child', 'c'), { name: 'y/', type: '5' }, file('y/keep', 'k')]),
      writeTar([file('x', 'now a file'), { name: 'y/', type: '5', mode: 0o750, uid: 5 }]),
    );
    expect(parse(out).map((e) => [e.name, e.type, e.mode.toString(8), e.uid])).toEqual([
      ['x', 'file', '644', 0],
      ['y/', 'directory', '750', 5],
      ['y/keep', 'file', '644', 0],
    ]);
  });

  it('keeps non-UTF-8 names (PAX and ustar), devices, FIFOs, xattrs, big ids and the root entry', async () => {
    const out = await flatten(
      writeTar([
        { name: './', type: '5', mode: 0o755 },
        file('names/caf\xe9.txt', '1'),
        { name: 'x', data: '333', pax: { path: Buffer.from('names2/\xff\xfe.bin', 'latin1') } },
        { name: 'dev/tty', type: '3', devmajor: 4, devminor: 1, mode: 0o620 },
        { name: 'run/fifo', type: '6', mode: 0o600 },
        { name: 'cap', data: 'x', pax: { 'SCHILY.xattr.security.capability': Buffer.from([1, 0, 0, 2]) } },
        { name: 'big-uid', data: 'u', uid: 3_000_000, base256: true },
      ]),
      writeTar([file('names/caf\xe8.txt', '22')]),
    );
    const entries = parse(out);
    expect(entries.map((e) => e.name)).toEqual(['./', 'big-uid', 'cap', 'dev/', 'dev/tty', 'names/', 'names/caf\xe8.txt', 'names/caf\xe9.txt', 'names2/', 'names2/\xff\xfe.bin', 'run/', 'run/fifo']);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('dev/tty')).toMatchObject({ type: 'chardev', devmajor: 4, devminor: 1, mode: 0o620 });
    expect(byName.get('run/fifo')).toMatchObject({ type: 'fifo', mode: 0o600 });
    expect(byName.get('cap')?.xattrs.get('security.capability')).toEqual(Buffer.from([1, 0, 0, 2]));
    expect(byName.get('big-uid')?.uid).toBe(3_000_000);
    // GNU tar reads the names back byte for byte.
    const listed = nameFromBytes(execFileSync('tar', ['--quoting-style=literal', '-tf', '-'], { input: out, env: C_LOCALE })).trim().split('\n');
    expect(listed).toContain('names2/\xff\xfe.bin');
    expect(listed).toContain('names/caf\xe9.txt');
  });

  it('stats say what was written', () => {
    const flat = flattenLayers([
      memoryLayer(writeTar([file('a', 'aaa'), { name: 'b', type: '1', linkname: 'a' }, file('c', 'cc')])),
      memoryLayer(writeTar([{ name: '.wh.c' }])),
    ]);
    expect(flat.stats).toEqual({ layers: 2, entries: 2, files: 1, hardlinks: 1, dataBytes: 3, tarBytes: 512 + 512 + 512 + 1024 });
  });

  it('knows the size of the tar before it is read (PAX headers, data, padding and end blocks included)', async () => {
    const layers = [
      memoryLayer(writeTar([{ name: './', type: '5' }, file('a', 'x'.repeat(513)), { name: 'b', type: '1', linkname: 'a' }, file(`${'long/'.repeat(30)}f`, 'y')])),
      memoryLayer(writeTar([{ name: 'x', data: 'z', pax: { path: Buffer.from('caf\xe9', 'latin1'), 'SCHILY.xattr.user.k': 'v' } }])),
    ];
    const flat = flattenLayers(layers);
    expect((await collect(flat.tar())).length).toBe(flat.stats.tarBytes);
  });

  it('refuses a hard link to nothing and a path escaping the root', () => {
    expect(() => flattenLayers([memoryLayer(writeTar([{ name: 'h', type: '1', linkname: 'missing' }]))])).toThrow(/missing/);
    expect(() => flattenLayers([memoryLayer(writeTar([file('../etc/passwd', 'x')]))])).toThrow(/escapes the root/);
  });
});

describe('spoolLayer and decompressLayer', () => {
  it('spools a gzip layer to a file, checks its diff_id, and reads file data back from it', async () => {
    const tar = writeTar([file('a', 'hello'), file('b', 'world!')]);
    const diffId = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
    // Two gzip members, as pigz --independent writes.
    const blob = Buffer.concat([gzipSync(tar.subarray(0, 700)), gzipSync(tar.subarray(700))]);
    const spooled = await spoolLayer(decompressLayer([blob], 'gzip'), join(work, 'spool.tar'), diffId);
    expect(spooled).toMatchObject({ diffId, size: tar.length });
    const out = await collect(flattenLayers([spooled.layer]).tar());
    await spooled.layer.close();
    expect(extracted(out)).toEqual(['a file 644 0:0 "hello"', 'b file 644 0:0 "world!"']);
    await expect(spoolLayer([tar], join(work, 'spool2.tar'), `sha256:${'0'.repeat(64)}`)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });

  it('names a corrupt gzip stream, and passes on the error of the source', async () => {
    await expect(readTarEntries(decompressLayer([Buffer.from('not gzip at all')], 'gzip'))).rejects.toMatchObject({ code: 'GZIP_CORRUPT' });
    async function* failing(): AsyncGenerator<Buffer> {
      yield gzipSync(Buffer.alloc(10)).subarray(0, 10);
      throw new Error('registry went away');
    }
    await expect(readTarEntries(decompressLayer(failing(), 'gzip'))).rejects.toThrow('registry went away');
  });

  it('reads zstd and plain layers', async () => {
    const tar = writeTar([file('z', 'zstd data')]);
    const zst = execFileSync('zstd', ['-q', '-c'], { input: tar });
    expect((await readTarEntries(decompressLayer([zst], 'zstd'))).map((e) => e.name)).toEqual(['z']);
    expect((await readTarEntries(decompressLayer([tar], 'none'))).map((e) => e.name)).toEqual(['z']);
  });
});
