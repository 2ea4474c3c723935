import { execFileSync } from 'node:child_process';
import { chmodSync, linkSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TarEntry } from '@cryo/clip';
import { tarEntries } from '../../testing/tar';
import { layerStream, planLayer } from './layer-from-upper';
import { Precopy, type CapturedEntry } from './precopy';
import { parseFindOutput, parseGetfattrOutput, scanTree } from './tree-scan';

const root = mkdtempSync(join(tmpdir(), 'precopy-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of source) parts.push(b);
  return Buffer.concat(parts);
}

function contentOf(captured: CapturedEntry[], path: string): string {
  const e = captured.find((c) => c.layerPath === path);
  if (e?.content === undefined) throw new Error(`no content for ${path}`);
  return readFileSync(e.content, 'latin1');
}

describe('tree-scan parsers', () => {
  it('reads find records with names as bytes', () => {
    const rec = (fields: string[]): Buffer => Buffer.concat(fields.map((f) => Buffer.concat([Buffer.from(f, 'latin1'), Buffer.from([0])])));
    const out = Buffer.concat([
      rec(['d', '12', '3', '755', '0', '0', '4096', '1.5', '2.25', '', '']),
      rec(['l', '13', '1', '777', '1', '2', '3', '10.0', '11.0', 'caf\xe9', 'tgt\nx']),
      rec(['f', '14', '2', '4755', '0', '0', '9', '10.0', '11.0', 'a\nb', '']),
    ]);
    const [dir, link, file] = parseFindOutput(out);
    expect(dir).toMatchObject({ path: '', kind: 'directory', perm: 0o755, ino: '12', nlink: 3, mtime: '1.5', ctime: '2.25' });
    expect(link).toMatchObject({ path: 'caf\xe9', kind: 'symlink', linkname: 'tgt\nx', uid: 1, gid: 2 });
    expect(file).toMatchObject({ path: 'a\nb', kind: 'file', perm: 0o4755, size: 9, nlink: 2, linkname: '' });
  });

  it('reads getfattr dumps, unquoting octal escapes', () => {
    const dump = Buffer.from('# file: /r\ntrusted.overlay.opaque=0x79\n\n# file: /r/a\\012b\nsecurity.capability=0x0100\n\n# file: /r/caf\xe9\nuser.x="1"\n\n', 'latin1');
    const x = parseGetfattrOutput(dump, '/r');
    expect(x.get('')?.get('trusted.overlay.opaque')?.toString()).toBe('y');
    expect(x.get('a\nb')?.get('security.capability')).toEqual(Buffer.from([1, 0]));
    expect(x.get('caf\xe9')?.get('user.x')?.toString()).toBe('1');
  });
});

describe('Precopy passes', () => {
  let server: Server | undefined;
  afterAll(() => server?.close());

  it('copies while running, then only what changed: deletions, renames, new hard links, rewrites, chmods', async () => {
    const src = join(root, 'src');
    mkdirSync(join(src, 'dir', 'sub'), { recursive: true });
    writeFileSync(join(src, 'big'), Buffer.alloc(3 * 1024 * 1024, 7));
    writeFileSync(join(src, 'dir', 'a'), 'a-v1');
    writeFileSync(join(src, 'dir', 'gone'), 'bye');
    writeFileSync(join(src, 'dir', 'sub', 'moved'), 'moving');
    writeFileSync(join(src, 'linked'), 'shared');
    linkSync(join(src, 'linked'), join(src, 'dir', 'linked-too'));
    writeFileSync(Buffer.from(join(src, 'caf\xe9'), 'latin1'), 'latin1 name');
    symlinkSync('dir/a', join(src, 'sym'));
    execFileSync('mkfifo', [join(src, 'fifo')]);
    server = createServer();
    await new Promise<void>((resolve) => server?.listen(join(src, 'sock'), resolve));

    await new Promise((r) => setTimeout(r, 250)); // written a while before the snapshot: not racy
    const store = join(root, 'store');
    const pre = new Precopy([{ root: src, at: '', skip: [], opaque: false }], store);
    const first = await pre.pass(false);
    expect(first.bytes_copied).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    expect(first.entries).toBe(13);

    // Changes between the passes.
    unlinkSync(join(src, 'dir', 'gone'));
    renameSync(join(src, 'dir', 'sub', 'moved'), join(src, 'moved-here'));
    linkSync(join(src, 'dir', 'a'), join(src, 'a-hard'));
    writeFileSync(join(src, 'dir', 'a'), 'a-v2');
    chmodSync(join(src, 'linked'), 0o600);

    const last = await pre.pass(true);
    expect(last.paused).toBe(true);
    expect(last.bytes_copied).toBeLessThan(1024 * 1024); // the big file is not copied again
    const captured = pre.captured();
    const paths = captured.map((c) => c.layerPath).sort();
    expect(paths).toEqual(['', 'a-hard', 'big', 'caf\xe9', 'dir', 'dir/a', 'dir/linked-too', 'dir/sub', 'fifo', 'linked', 'moved-here', 'sock', 'sym'].sort());
    expect(contentOf(captured, 'dir/a')).toBe('a-v2');
    expect(contentOf(captured, 'a-hard')).toBe('a-v2');
    expect(contentOf(captured, 'moved-here')).toBe('moving');
    expect(contentOf(captured, 'caf\xe9')).toBe('latin1 name');
    expect(captured.find((c) => c.layerPath === 'linked')?.perm).toBe(0o600);

    const plan = planLayer(captured);
    expect(plan.socketsSkipped).toEqual(['sock']);
    const tar = await collect(layerStream(plan));
    expect(tar.length).toBe(plan.size);
    const entries = tarEntries(tar);
    const names = entries.map((e) => e.name);
    // Go's filepath.Walk order: each directory's names sorted bytewise, a directory before its entries.
    expect(names).toEqual(['a-hard', 'big', 'caf\xe9', 'dir/', 'dir/a', 'dir/linked-too', 'dir/sub/', 'fifo', 'linked', 'moved-here', 'sym']);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('a-hard')).toMatchObject({ type: 'file', size: 4 });
    expect(byName.get('dir/a')).toMatchObject({ type: 'hardlink', linkname: 'a-hard' });
    expect(byName.get('dir/linked-too')).toMatchObject({ type: 'file', size: 6 });
    expect(byName.get('linked')).toMatchObject({ type: 'hardlink', linkname: 'dir/linked-too', mode: 0o600 });
    expect(byName.get('sym')).toMatchObject({ type: 'symlink', linkname: 'dir/a' });
    expect(byName.get('fifo')?.type).toBe('fifo');
    const big = byName.get('big');
    expect(tar.subarray(big?.dataOffset ?? 0, (big?.dataOffset ?? 0) + (big?.size ?? 0)).equals(Buffer.alloc(3 * 1024 * 1024, 7))).toBe(true);
    await pre.dispose();
  });

  it('copies a file written just before a scan again in the next pass (coarse ctime), and not after that', async () => {
    const src = join(root, 'racy');
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'hot'), 'x');
    const pre = new Precopy([{ root: src, at: '', skip: [], opaque: false }], join(root, 'racy-store'));
    expect((await pre.pass(false)).files_copied).toBe(1);
    await new Promise((r) => setTimeout(r, 250));
    expect((await pre.pass(false)).files_copied).toBe(1); // racy: written within RACY_MS of the first scan
    expect((await pre.pass(true)).files_copied).toBe(0); // copied once it had settled: not racy any more
    await pre.dispose();
  });

  it.skipIf(process.getuid?.() !== 0)('sees an xattr set between the passes (its ctime moves), and keeps xattrs of untouched entries', async () => {
    const src = join(root, 'xattr');
    mkdirSync(join(src, 'd'), { recursive: true });
    writeFileSync(join(src, 'tool'), 'x');
    writeFileSync(join(src, 'other'), 'y');
    execFileSync('setfattr', ['-n', 'security.capability', '-v', '0x0100000200200000000000000000000000000000', join(src, 'other')]);
    const pre = new Precopy([{ root: src, at: '', skip: [], opaque: false }], join(root, 'xattr-store'));
    await pre.pass(false);
    expect(pre.captured().find((e) => e.layerPath === 'other')?.xattrs.has('security.capability')).toBe(true);
    await pre.pass(false); // nothing changed: xattrs come from the previous scan
    expect(pre.captured().find((e) => e.layerPath === 'other')?.xattrs.has('security.capability')).toBe(true);
    execFileSync('setfattr', ['-n', 'security.capability', '-v', '0x0100000200200000000000000000000000000000', join(src, 'tool')]);
    execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(src, 'd')]);
    const last = await pre.pass(true);
    expect(last.changed).toBe(2);
    const captured = pre.captured();
    expect(captured.find((e) => e.layerPath === 'tool')?.xattrs.has('security.capability')).toBe(true);
    expect(captured.find((e) => e.layerPath === 'd')?.xattrs.get('trusted.overlay.opaque')?.toString()).toBe('y');
    expect(captured.find((e) => e.layerPath === 'other')?.xattrs.has('security.capability')).toBe(true);
    await pre.dispose();
  });

  it('places a volume at its path, opaque, over what the writable layer holds there', async () => {
    const upper = join(root, 'upper-v');
    const volume = join(root, 'volume');
    mkdirSync(join(upper, 'data'), { recursive: true });
    mkdirSync(join(upper, 'root'), { recursive: true });
    writeFileSync(join(upper, 'data', 'hidden'), 'under the mount');
    writeFileSync(join(upper, 'root', 'r.txt'), 'r');
    mkdirSync(join(volume, 'nested'), { recursive: true });
    writeFileSync(join(volume, 'v.txt'), 'v');
    chmodSync(volume, 0o750);
    const pre = new Precopy([
      { root: upper, at: '', skip: ['data'], opaque: false },
      { root: volume, at: 'data', skip: [], opaque: true },
    ], join(root, 'volume-store'));
    await pre.pass(true);
    const plan = planLayer(pre.captured());
    const entries = tarEntries(await collect(layerStream(plan)));
    expect(entries.map((e) => [e.name, e.type, e.mode])).toEqual([
      ['data/', 'directory', 0o750],
      ['data/.wh..wh..opq', 'file', 0o750],
      ['data/nested/', 'directory', 0o755],
      ['data/v.txt', 'file', 0o644],
      ['root/', 'directory', 0o755],
      ['root/r.txt', 'file', 0o644],
    ]);
    expect(plan.opaqueDirs).toBe(1);
    await pre.dispose();
  });
});

// The kernel makes the whiteouts (shared-inode char devices 0:0) and opaque dirs.
describe.skipIf(process.getuid?.() !== 0)('Precopy over a real overlay upper dir', () => {
  const base = join(root, 'overlay');
  const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(base, d)) as [string, string, string, string];
  afterAll(() => {
    try {
      execFileSync('umount', [merged], { stdio: 'ignore' });
    } catch {
      // not mounted
    }
  });

  it('writes whiteouts (0600, never hard links), opaque markers (time 0), devices and security.capability as Docker does', async () => {
    for (const d of [lower, upper, work, merged, join(lower, 'd'), join(lower, 'e')]) mkdirSync(d, { recursive: true });
    for (const f of ['one', 'two', join('d', 'x'), join('e', 'y')]) writeFileSync(join(lower, f), f);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged]);
    try {
      unlinkSync(join(merged, 'one'));
      unlinkSync(join(merged, 'two'));
      unlinkSync(join(merged, 'e', 'y'));
      rmSync(join(merged, 'd'), { recursive: true });
      mkdirSync(join(merged, 'd'), { mode: 0o750 });
      writeFileSync(join(merged, 'd', 'z'), 'z');
      writeFileSync(join(merged, 'ping'), 'elf');
      execFileSync('setfattr', ['-n', 'security.capability', '-v', '0x0100000200200000000000000000000000000000', join(merged, 'ping')]);
      execFileSync('setfattr', ['-n', 'user.note', '-v', 'dropped', join(merged, 'ping')]);
      execFileSync('mknod', [join(merged, 'null'), 'c', '1', '3']);
    } finally {
      execFileSync('umount', [merged]);
    }
    const pre = new Precopy([{ root: upper, at: '', skip: [], opaque: false }], join(base, 'store'));
    await pre.pass(true);
    const plan = planLayer(pre.captured());
    const entries = tarEntries(await collect(layerStream(plan)));
    const view = entries.map((e) => [e.name, e.type, e.mode, e.linkname, e.devmajor, e.devminor]);
    // In the walk's order: by the names in the upper dir (`one` before `ping`), as Docker writes them.
    expect(view).toEqual([
      ['d/', 'directory', 0o750, '', 0, 0],
      ['d/.wh..wh..opq', 'file', 0o750, '', 0, 0],
      ['d/z', 'file', 0o644, '', 0, 0],
      ['e/', 'directory', 0o755, '', 0, 0],
      ['e/.wh.y', 'file', 0o600, '', 0, 0],
      ['null', 'chardev', 0o644, '', 1, 3],
      ['.wh.one', 'file', 0o600, '', 0, 0],
      ['ping', 'file', 0o644, '', 0, 0],
      ['.wh.two', 'file', 0o600, '', 0, 0],
    ]);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('d/.wh..wh..opq')?.mtime.sec).toBe(0);
    expect([...(byName.get('ping')?.xattrs.keys() ?? [])]).toEqual(['security.capability']);
    expect([...(byName.get('d/')?.xattrs.keys() ?? [])]).toEqual([]);
    expect([plan.whiteouts, plan.opaqueDirs]).toEqual([3, 1]);
    await pre.dispose();
  });

  it('scans a frozen tree strictly: a missing root is an error', async () => {
    await expect(scanTree(join(base, 'nope'), { frozen: true })).rejects.toThrow(/find .*nope.* failed/);
  });
});
