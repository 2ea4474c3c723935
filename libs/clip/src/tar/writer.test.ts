import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nameFromBytes, nameFromText } from '../names';
import type { TarHeader } from './header';
import { TarParser, type TarEntry } from './parser';
import { END_OF_ARCHIVE, encodeHeader, padding } from './writer';

function parse(tar: Buffer): TarEntry[] {
  const out: TarEntry[] = [];
  const p = new TarParser((e) => out.push(e));
  p.push(tar);
  p.end();
  return out;
}

/** Lines of a command's stdout as byte strings (no UTF-8 decoding on the way). */
function byteLines(out: Buffer): string[] {
  return nameFromBytes(out).replace(/\n$/, '').split('\n');
}

const base: TarHeader = {
  name: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', size: 0, mtime: { sec: 1_700_000_000, nsec: 0 },
  linkname: '', devmajor: 0, devminor: 0, xattrs: new Map(),
};
const entries: TarHeader[] = [
  { ...base, name: 'dir', type: 'directory', mode: 0o1777 },
  { ...base, name: 'dir/setuid', mode: 0o4755, size: 3, uid: 1000, gid: 1000 },
  { ...base, name: `${'deep/'.repeat(30)}file` },
  { ...base, name: `${'x'.repeat(150)}` },
  { ...base, name: nameFromText('ünïcode-näme') },
  { ...base, name: 'caf\xe9.txt', size: 3 }, // Latin-1 é: not UTF-8
  { ...base, name: 'caf\xe8.txt', size: 3 },
  { ...base, name: '\xff\xfe.bin' },
  { ...base, name: 'link', type: 'symlink', linkname: `/${'t'.repeat(120)}` },
  { ...base, name: 'link-to-latin1', type: 'symlink', linkname: 'caf\xe9.txt' },
  { ...base, name: 'hard', type: 'hardlink', linkname: 'dir/setuid' },
  { ...base, name: 'bigid', uid: 3_000_000, gid: 70_000 },
  { ...base, name: 'named', uname: 'app', gname: nameFromText('grüppe') },
  { ...base, name: 'cap', xattrs: new Map([['security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex')]]) },
  { ...base, name: 'tty', type: 'chardev', mode: 0o620, devmajor: 4, devminor: 1 },
  { ...base, name: 'fifo', type: 'fifo' },
];
const tar = Buffer.concat([
  ...entries.flatMap((e) => (e.size > 0 ? [encodeHeader(e), Buffer.from('abc'), padding(3)] : [encodeHeader(e)])),
  END_OF_ARCHIVE,
]);

describe('encodeHeader', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tar-writer-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("round-trips through clip's tar parser, names byte for byte", () => {
    const parsed = parse(tar);
    expect(parsed.map((e) => e.name.replace(/\/$/, ''))).toEqual(entries.map((e) => e.name));
    expect(parsed.map((e) => e.type)).toEqual(entries.map((e) => e.type));
    expect(parsed[0]?.mode).toBe(0o1777);
    expect(parsed[1]).toMatchObject({ mode: 0o4755, uid: 1000, gid: 1000, size: 3 });
    expect(tar.subarray(parsed[1]?.dataOffset ?? 0, (parsed[1]?.dataOffset ?? 0) + 3).toString()).toBe('abc');
    expect(parsed[8]?.linkname).toBe(entries[8]?.linkname);
    expect(parsed[9]?.linkname).toBe('caf\xe9.txt');
    expect(parsed[11]).toMatchObject({ uid: 3_000_000, gid: 70_000 });
    expect(parsed[12]).toMatchObject({ uname: 'app', gname: nameFromText('grüppe') });
    expect(parsed[13]?.xattrs.get('security.capability')?.toString('hex')).toBe('0100000200200000000000000000000000000000');
    expect(parsed[14]).toMatchObject({ devmajor: 4, devminor: 1 });
  });

  it('writes a name that is not UTF-8 raw into the PAX path record (as Go and GNU tar do)', () => {
    const header = encodeHeader({ ...base, name: 'names/caf\xe9.txt' });
    expect(header.includes(Buffer.from([0x20, ...Buffer.from('path=names/caf'), 0xe9, ...Buffer.from('.txt\n')]))).toBe(true);
    expect(header.includes(Buffer.from('hdrcharset'))).toBe(false);
  });

  it('refuses a text string where bytes are expected', () => {
    expect(() => encodeHeader({ ...base, name: 'euro-€' })).toThrow(/not a byte string/);
  });

  it('is read the same by GNU tar: listing, modes, owners, and names extracted as the same bytes', () => {
    writeFileSync(join(dir, 't.tar'), tar);
    const names = byteLines(execFileSync('tar', ['--quoting-style=literal', '-tf', join(dir, 't.tar')], { env: { ...process.env, LC_ALL: 'C' } }));
    expect(names.map((n) => n.replace(/\/$/, ''))).toEqual(entries.map((e) => e.name));
    const verbose = execFileSync('tar', ['--numeric-owner', '-tvf', join(dir, 't.tar')], { encoding: 'utf8' });
    expect(verbose).toMatch(/^-rwsr-xr-x 1000\/1000\s+3 .* dir\/setuid$/m);
    expect(verbose).toMatch(/^drwxrwxrwt 0\/0 .* dir\/$/m);
    expect(verbose).toMatch(/3000000\/70000 .* bigid$/m);
    const out = join(dir, 'x');
    execFileSync('mkdir', [out]);
    execFileSync('tar', ['-C', out, '-xf', join(dir, 't.tar')], { env: { ...process.env, LC_ALL: 'C' } });
    const onDisk = readdirSync(out, { encoding: 'buffer' }).map(nameFromBytes).sort();
    expect(onDisk).toEqual(expect.arrayContaining(['caf\xe9.txt', 'caf\xe8.txt', '\xff\xfe.bin', nameFromText('ünïcode-näme')]));
    expect(readFileSync(Buffer.from(join(out, 'caf\xe9.txt'), 'latin1')).toString()).toBe('abc');
  });
});
