/**
 * One walk over a directory tree (a container's overlay upper dir, a volume's `_data`), the way
 * an archiver sees it: type, permission bits, owner, size, mtime/ctime with nanoseconds, inode,
 * link count and symlink target of every entry from one `find -printf` (C speed: ~100k entries
 * a second here), the two xattrs a Docker layer depends on from one `getfattr -R` run beside it
 * (`security.capability`, the only xattr `docker commit` records, and `trusted.overlay.opaque`),
 * and device numbers by lstat for the few device nodes (overlay whiteouts are char devices 0:0).
 *
 * Names are byte strings (@cryo/clip names.ts): find and getfattr print the bytes of a name, so
 * a name that is not UTF-8 is kept exactly.
 */
import { spawn } from 'node:child_process';
import { lstat } from 'node:fs/promises';
import { nameBytes, nameFromBytes } from '@cryo/clip';

export type EntryKind = 'file' | 'directory' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';

export interface TreeEntry {
  /** path below the scanned root, a byte string without leading or trailing '/'; '' is the root */
  path: string;
  kind: EntryKind;
  /** permission bits with setuid, setgid and sticky (0o7777) */
  perm: number;
  uid: number;
  gid: number;
  /** bytes (regular files; what lstat says for the others) */
  size: number;
  /** `seconds.fraction` as find prints them (exact: compared as text) */
  mtime: string;
  ctime: string;
  /** inode number, as text (64-bit inode numbers do not fit a double) */
  ino: string;
  nlink: number;
  /** symlink target (byte string), '' for the rest */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** security.capability and trusted.overlay.opaque, when set */
  xattrs: Map<string, Buffer>;
}

/** The xattrs a layer records or depends on, as getfattr's `-m` pattern. */
export const LAYER_XATTRS = /^(security\.capability|trusted\.overlay\.opaque)$/;
const XATTR_PATTERN = '^(security\\.capability|trusted\\.overlay\\.opaque)$';

const KINDS: Record<string, EntryKind> = { f: 'file', d: 'directory', l: 'symlink', c: 'chardev', b: 'blockdev', p: 'fifo', s: 'socket' };
const FIELDS = 11;
// type, inode, links, perms (octal), uid, gid, size, mtime, ctime, path, symlink target
const FIND_FORMAT = '%y\\0%i\\0%n\\0%m\\0%U\\0%G\\0%s\\0%T@\\0%C@\\0%P\\0%l\\0';

interface RunResult {
  stdout: Buffer;
  stderr: string;
  code: number | null;
}

function run(command: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8').trim(), code }));
  });
}

/** An entry vanished or appeared while it was read: normal while the sandbox runs, never while it is paused. */
function onlyVanished(stderr: string): boolean {
  return stderr.split('\n').every((line) => line === '' || /No such file or directory/.test(line));
}

export class ScanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScanError';
  }
}

/** find's records: NUL-separated fields, FIELDS per entry. */
export function parseFindOutput(out: Buffer): TreeEntry[] {
  const entries: TreeEntry[] = [];
  let pos = 0;
  const next = (): Buffer => {
    const end = out.indexOf(0, pos);
    if (end < 0) throw new ScanError('find output ends inside a record');
    const field = out.subarray(pos, end);
    pos = end + 1;
    return field;
  };
  while (pos < out.length) {
    const f: Buffer[] = [];
    for (let i = 0; i < FIELDS; i++) f.push(next());
    const text = (i: number): string => f[i]?.toString('latin1') ?? '';
    const kind = KINDS[text(0)];
    if (kind === undefined) throw new ScanError(`find reported an unknown file type '${text(0)}' for ${text(9)}`);
    entries.push({
      path: nameFromBytes(f[9] ?? Buffer.alloc(0)),
      kind,
      perm: Number.parseInt(text(3), 8) & 0o7777,
      uid: Number(text(4)),
      gid: Number(text(5)),
      size: Number(text(6)),
      mtime: text(7),
      ctime: text(8),
      ino: text(1),
      nlink: Number(text(2)),
      linkname: kind === 'symlink' ? nameFromBytes(f[10] ?? Buffer.alloc(0)) : '',
      devmajor: 0,
      devminor: 0,
      xattrs: new Map(),
    });
  }
  return entries;
}

/** getfattr's quoting: `\ooo` octal escapes for control characters and backslash; other bytes raw. */
function unquote(raw: Buffer): string {
  const s = raw.toString('latin1');
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/**
 * `getfattr -d -e hex` output: `# file: NAME` then `key=0xHEX` lines, a blank line between
 * files. Names are relative to `prefix` (the root as it was passed); the root itself is ''.
 */
export function parseGetfattrOutput(out: Buffer, prefix: string): Map<string, Map<string, Buffer>> {
  const byPath = new Map<string, Map<string, Buffer>>();
  let current: Map<string, Buffer> | undefined;
  let pos = 0;
  const head = Buffer.from('# file: ');
  while (pos < out.length) {
    let end = out.indexOf(0x0a, pos);
    if (end < 0) end = out.length;
    const line = out.subarray(pos, end);
    pos = end + 1;
    if (line.length === 0) {
      current = undefined;
    } else if (line.subarray(0, head.length).equals(head)) {
      const name = unquote(line.subarray(head.length));
      const rel = name === prefix ? '' : name.startsWith(`${prefix}/`) ? name.slice(prefix.length + 1) : undefined;
      if (rel === undefined) throw new ScanError(`getfattr reported ${name} outside ${prefix}`);
      current = new Map();
      byPath.set(rel, current);
    } else if (current !== undefined) {
      const text = line.toString('latin1');
      const eq = text.indexOf('=');
      if (eq < 0) continue;
      const value = text.slice(eq + 1);
      current.set(text.slice(0, eq), value.startsWith('0x') ? Buffer.from(value.slice(2), 'hex') : Buffer.from(value.replace(/^"|"$/g, ''), 'latin1'));
    }
  }
  return byPath;
}

function rdevParts(rdev: bigint): { major: number; minor: number } {
  // glibc's gnu_dev_major / gnu_dev_minor
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

export interface ScanOptions {
  /** The tree is frozen (its sandbox is paused): any read error is a failure, not a race. */
  frozen: boolean;
  /**
   * The previous scan of the same tree: when no entry is new and none changed its ctime (a
   * changed xattr changes it), the xattrs are taken from there and getfattr does not run.
   */
  previous?: Map<string, TreeEntry>;
  /** Entries to leave out (with what is below them: the caller says so for both). */
  skip?: (path: string) => boolean;
}

/**
 * Every entry under `root` (which must be a directory), keyed by path. While the sandbox runs, an
 * entry may vanish between the walk and its lstat: it is left out (the next scan sees the truth).
 */
export async function scanTree(root: string, opts: ScanOptions): Promise<Map<string, TreeEntry>> {
  const prefix = root.replace(/\/+$/, '');
  const walk = run('find', [prefix, '-printf', FIND_FORMAT]);
  const readXattrs = (): Promise<RunResult> => run('getfattr', ['-R', '-P', '-h', '-d', '-e', 'hex', '--absolute-names', '-m', XATTR_PATTERN, prefix]);
  // Without a previous scan both walks run at once; with one, getfattr only if something changed.
  const attrsEarly = opts.previous === undefined ? readXattrs() : undefined;
  const found = await walk;
  if (found.code !== 0 && (opts.frozen || !onlyVanished(found.stderr))) {
    throw new ScanError(`find ${prefix} failed: ${found.stderr || `exit ${found.code}`}`);
  }
  const entries = new Map<string, TreeEntry>();
  for (const entry of parseFindOutput(found.stdout)) if (opts.skip?.(entry.path) !== true) entries.set(entry.path, entry);
  const previous = opts.previous;
  const unchanged = previous !== undefined && [...entries.values()].every((e) => {
    const old = previous.get(e.path);
    return old !== undefined && old.ctime === e.ctime && old.ino === e.ino;
  });
  if (unchanged) {
    for (const e of entries.values()) e.xattrs = previous.get(e.path)?.xattrs ?? new Map();
  } else {
    const attrs = await (attrsEarly ?? readXattrs());
    if (attrs.code !== 0 && (opts.frozen || !onlyVanished(attrs.stderr))) {
      throw new ScanError(`getfattr -R ${prefix} failed: ${attrs.stderr || `exit ${attrs.code}`}`);
    }
    const xattrs = parseGetfattrOutput(attrs.stdout, nameFromBytes(Buffer.from(prefix)));
    for (const e of entries.values()) e.xattrs = xattrs.get(e.path) ?? new Map();
  }
  const root0 = entries.get('');
  if (root0 === undefined || root0.kind !== 'directory') throw new ScanError(`${prefix} is not a directory`);
  await Promise.all([...entries.values()].filter((e) => e.kind === 'chardev' || e.kind === 'blockdev').map(async (e) => {
    try {
      const st = await lstat(Buffer.concat([Buffer.from(`${prefix}/`), nameBytes(e.path)]), { bigint: true });
      const { major, minor } = rdevParts(st.rdev);
      e.devmajor = major;
      e.devminor = minor;
    } catch (err) {
      if (opts.frozen || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      entries.delete(e.path);
    }
  }));
  return entries;
}

/** Seconds since the epoch of a find time (`1796018930.1234567890`), in ms (for the racy check). */
export function timeMs(time: string): number {
  const [sec = '0', frac = ''] = time.split('.');
  return Number(sec) * 1000 + Number(`0.${frac || '0'}`) * 1000;
}
