/**
 * The read-only filesystem a FUSE mount serves from a ClipReader. Metadata comes from the index
 * alone and is cached for the life of the mount (the index is immutable: attributes, directory
 * listings and misses never change); file contents go through the reader's lazy range reads and
 * the host-wide span cache.
 *
 * Every handler answers: an exception inside one would kill the mount process and leave the
 * mount stale, so each runs under `answer`, which turns any failure into an errno.
 *
 * Paths, names, link targets and xattr names are byte strings (../names.ts), as clip's FUSE
 * addon passes them and as the index stores them: no conversion on the way.
 */
import { isClipError } from '../errors';
import { displayName } from '../names';
import type { ClipStat } from '../format/index-file';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../format/types';
import type { AccessRecorder } from '../reader/access-record';
import type { ClipReader } from '../reader/clip-reader';
import type { FuseOperations, FuseStat, FuseStatfs } from './native';

/** Linux errno values the handlers answer with (negated on the wire). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EACCES: 13,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EROFS: 30,
  ERANGE: 34,
  ELOOP: 40,
  ENODATA: 61,
  ETIMEDOUT: 110,
} as const;

const ERRNO_BY_NAME: Readonly<Record<string, number>> = Errno;

/** How long metadata may be cached, by the kernel and here: the index never changes. */
export const METADATA_TTL_SECS = 86_400;

export interface ClipFsStats {
  getattr: number;
  getattrCached: number;
  readdir: number;
  readdirCached: number;
  reads: number;
  bytesRead: number;
  /** handler failures answered with EIO (registry down, corrupt span...) */
  ioErrors: number;
}

export type ClipFsLog = (level: 'info' | 'warn' | 'error', message: string, fields: Record<string, unknown>) => void;

export interface ClipFsOptions {
  /** most paths whose attributes are remembered (default 200k); the kernel caches too */
  attrCacheSize?: number;
  /** most directory listings remembered (default 20k) */
  dirCacheSize?: number;
  /** notes every read served (an access record of what the programs on this mount read) */
  recorder?: AccessRecorder;
  log?: ClipFsLog;
}

/** st_rdev as glibc's makedev packs it (what FUSE hands to the kernel's new_decode_dev). */
export function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

function millis(t: { sec: number; nsec: number }): number {
  const ms = t.sec * 1000 + Math.floor(t.nsec / 1e6);
  // fuse-native packs times as unsigned 64-bit milliseconds; times before 1970 become 0.
  return ms > 0 ? ms : 0;
}

/** What a directory's st_size shows on ext4 and xfs (and so under Docker's overlay2). */
const DIR_SIZE = 4096;

export function toFuseStat(st: ClipStat): FuseStat {
  const dir = (st.mode & S_IFMT) === S_IFDIR;
  return {
    // Linux ignores a symlink's permission bits and always shows 0777 (tar headers may say 0644).
    mode: (st.mode & S_IFMT) === S_IFLNK ? S_IFLNK | 0o777 : st.mode,
    uid: st.uid,
    gid: st.gid,
    size: dir ? DIR_SIZE : st.size,
    dev: 0,
    nlink: st.nlink,
    ino: st.ino,
    rdev: makedev(st.rdevMajor, st.rdevMinor),
    blksize: 4096,
    blocks: dir ? DIR_SIZE / 512 : st.blocks,
    atime: millis(st.atime),
    mtime: millis(st.mtime),
    ctime: millis(st.ctime),
  };
}

/** The errno (positive) a failure maps to: the reader's fs codes 1:1, anything else EIO. */
export function errnoOf(err: unknown): number {
  if (isClipError(err)) {
    const n = err.errno;
    if (n !== undefined) return n;
    return Errno.EIO;
  }
  // our own answers carry a positive `errno` (Node's system errors carry a negative one)
  if (typeof err === 'object' && err !== null && 'errno' in err && typeof err.errno === 'number' && err.errno > 0) return err.errno;
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') {
    return ERRNO_BY_NAME[err.code] ?? Errno.EIO;
  }
  return Errno.EIO;
}

/** Remembers up to `limit` entries; when full it starts over (cheap, and hits stay hot in the kernel). */
class BoundedCache<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly limit: number) {}
  get(key: string): V | undefined {
    return this.map.get(key);
  }
  set(key: string, value: V): void {
    if (this.map.size >= this.limit) this.map.clear();
    this.map.set(key, value);
  }
  get size(): number {
    return this.map.size;
  }
}

interface Listing {
  names: string[];
  stats: FuseStat[];
}

/** xattrs overlayfs keeps for itself: never show the lower layer's (they would confuse it). */
const HIDDEN_XATTR = /^trusted\.overlay\./;

export class ClipFilesystem {
  readonly stats: ClipFsStats = { getattr: 0, getattrCached: 0, readdir: 0, readdirCached: 0, reads: 0, bytesRead: 0, ioErrors: 0 };
  private readonly attrs: BoundedCache<FuseStat | number>;
  private readonly dirs: BoundedCache<Listing | number>;
  private readonly log: ClipFsLog;
  private readonly recorder: AccessRecorder | undefined;

  constructor(
    readonly reader: ClipReader,
    opts: ClipFsOptions = {},
  ) {
    this.attrs = new BoundedCache(opts.attrCacheSize ?? 200_000);
    this.dirs = new BoundedCache(opts.dirCacheSize ?? 20_000);
    this.log = opts.log ?? (() => undefined);
    this.recorder = opts.recorder;
  }

  /** lstat of `path` from the cache or the index; a miss (ENOENT...) is cached as its errno. */
  async stat(path: string): Promise<FuseStat> {
    this.stats.getattr++;
    return this.cached(this.attrs, path, () => this.stats.getattrCached++, async () => toFuseStat(await this.reader.stat(path)));
  }

  async list(path: string): Promise<Listing> {
    this.stats.readdir++;
    return this.cached(this.dirs, path, () => this.stats.readdirCached++, async () => {
      const self = await this.stat(path);
      const parent = path === '/' ? self : await this.stat(path.slice(0, path.lastIndexOf('/')) || '/');
      const entries = await this.reader.readdirEntries(path);
      // Only st_ino and the type bits of st_mode reach the kernel from a readdir.
      const entryStat = (ino: number, mode: number): FuseStat => ({ ...self, ino, mode, nlink: 1, size: 0, blocks: 0 });
      return {
        names: ['.', '..', ...entries.map((e) => e.name)],
        stats: [entryStat(self.ino, self.mode), entryStat(parent.ino, parent.mode), ...entries.map((e) => entryStat(e.ino, e.mode))],
      };
    });
  }

  /** Answers from `cache`, or computes and remembers; failures other than EIO are remembered as their errno. */
  private async cached<V>(cache: BoundedCache<V | number>, key: string, onHit: () => void, compute: () => Promise<V>): Promise<V> {
    const hit = cache.get(key);
    if (hit !== undefined) {
      onHit();
      if (typeof hit === 'number') throw Object.assign(new Error(`errno ${hit}: ${key}`), { errno: hit });
      return hit;
    }
    try {
      const value = await compute();
      cache.set(key, value);
      return value;
    } catch (err) {
      const errno = errnoOf(err);
      if (errno !== Errno.EIO) cache.set(key, errno);
      throw err;
    }
  }

  /** Runs a handler body and answers the kernel exactly once, whatever happens. */
  private answer<T>(op: string, path: string, body: () => Promise<T>, reply: (value: T) => void, fail: (errno: number) => void): void {
    let settled = false;
    const failWith = (err: unknown): void => {
      if (settled) return;
      settled = true;
      const errno = errnoOf(err);
      if (errno === Errno.EIO) {
        this.stats.ioErrors++;
        this.log('error', `${op} failed`, { path: displayName(path), err: err instanceof Error ? err.message : String(err) });
      }
      try {
        fail(-errno);
      } catch (replyErr) {
        this.log('error', `${op}: answering the kernel failed`, { path: displayName(path), err: String(replyErr) });
      }
    };
    let promise: Promise<T>;
    try {
      promise = body();
    } catch (err) {
      failWith(err);
      return;
    }
    promise.then(
      (value) => {
        if (settled) return;
        try {
          reply(value);
          settled = true;
        } catch (err) {
          failWith(err);
        }
      },
      failWith,
    );
  }

  statfs(): FuseStatfs {
    const index = this.reader.index;
    const blocks = Math.ceil(index.layers.reduce((n, l) => n + l.uncompressedSize, 0) / 4096);
    return { bsize: 4096, frsize: 4096, blocks, bfree: 0, bavail: 0, files: index.inodeCount, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 };
  }

  /** fuse-native handlers; each answers once, never throws. */
  operations(): FuseOperations {
    return {
      init: (cb) => cb(0),
      statfs: (path, cb) => this.answer('statfs', path, async () => this.statfs(), (s) => cb(0, s), (e) => cb(e)),
      getattr: (path, cb) => this.answer('getattr', path, () => this.stat(path), (st) => cb(0, st), (e) => cb(e)),
      fgetattr: (path, _fd, cb) => this.answer('fgetattr', path, () => this.stat(path), (st) => cb(0, st), (e) => cb(e)),
      readdir: (path, cb) => this.answer('readdir', path, () => this.list(path), (l) => cb(0, l.names, l.stats), (e) => cb(e)),
      readlink: (path, cb) => this.answer('readlink', path, () => this.reader.readlink(path), (t) => cb(0, t), (e) => cb(e)),
      open: (path, flags, cb) => this.answer('open', path, async () => {
        // O_WRONLY / O_RDWR: the mount is read-only (the kernel refuses first with -o ro).
        if ((flags & 3) !== 0) throw Object.assign(new Error('read-only'), { errno: Errno.EROFS });
        const st = await this.stat(path);
        if ((st.mode & S_IFMT) === S_IFDIR) throw Object.assign(new Error('is a directory'), { errno: Errno.EISDIR });
        return 0;
      }, (fd) => cb(0, fd), (e) => cb(e)),
      opendir: (path, _flags, cb) => this.answer('opendir', path, async () => {
        const st = await this.stat(path);
        if ((st.mode & S_IFMT) !== S_IFDIR) throw Object.assign(new Error('not a directory'), { errno: Errno.ENOTDIR });
        return 0;
      }, (fd) => cb(0, fd), (e) => cb(e)),
      release: (_path, _fd, cb) => cb(0),
      releasedir: (_path, _fd, cb) => cb(0),
      read: (path, _fd, buf, len, pos, cb) => this.answer('read', path, async () => {
        const st = await this.stat(path);
        if ((st.mode & S_IFMT) !== S_IFREG) throw Object.assign(new Error('not a regular file'), { errno: Errno.EINVAL });
        if (pos >= st.size || len === 0) return 0;
        this.recorder?.note(path, pos, Math.min(len, buf.length, st.size - pos));
        const data = await this.reader.read(path, pos, Math.min(len, buf.length));
        data.copy(buf, 0, 0, data.length);
        this.stats.reads++;
        this.stats.bytesRead += data.length;
        return data.length;
      }, (n) => cb(n), (e) => cb(e)),
      getxattr: (path, name, _position, cb) => this.answer('getxattr', path, async () => {
        if (HIDDEN_XATTR.test(name)) throw Object.assign(new Error('no attribute'), { errno: Errno.ENODATA });
        return this.reader.getxattr(path, name);
      }, (v) => cb(0, v), (e) => cb(e)),
      listxattr: (path, cb) => this.answer('listxattr', path, async () => {
        return (await this.reader.listxattr(path)).filter((n) => !HIDDEN_XATTR.test(n));
      }, (names) => cb(0, names), (e) => cb(e)),
    };
  }
}
