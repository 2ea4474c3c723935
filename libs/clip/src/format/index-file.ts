/**
 * Read side of the index file. Loading inflates the metadata once and keeps
 * the inode, dirent and xattr tables as flat buffers: nothing is decoded per
 * file until it is looked up, so opening a 50k-file index takes milliseconds.
 *
 * Paths, names and link targets in and out are byte strings (../names.ts).
 */
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import type { LayerCompression } from '../build/layer-indexer';
import { ClipError, fsError } from '../errors';
import type { TarTime } from '../tar/parser';
import { ByteReader } from './bytes';
import * as L from './layout';
import { isByteString, nameBytes, nameFromText } from '../names';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type BuildInfo, type ImageInfo, type LayerInfo, type SpanInfo } from './types';

export interface ClipStat {
  /** inode number (1 = root) */
  ino: number;
  /** st_mode: type bits | permission bits (setuid/setgid/sticky kept) */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdevMajor: number;
  rdevMinor: number;
  size: number;
  /** 512-byte blocks */
  blocks: number;
  mtime: TarTime;
  /** mtime when the archive did not carry an atime */
  atime: TarTime;
  ctime: TarTime;
}

export interface FileData {
  layer: number;
  offset: number;
  size: number;
}

function readImage(r: ByteReader): ImageInfo {
  const image: ImageInfo = {
    reference: r.str(),
    registry: r.str(),
    repository: r.str(),
    manifestDigest: r.str(),
    manifestMediaType: r.str(),
    configDigest: r.str(),
    os: r.str(),
    architecture: r.str(),
    config: { env: [], cmd: null, entrypoint: null, workingDir: '', user: '', labels: {}, exposedPorts: [] },
  };
  const variant = r.optStr();
  if (variant !== undefined) image.variant = variant;
  const created = r.optStr();
  if (created !== undefined) image.created = created;
  image.config.env = r.strList();
  image.config.cmd = r.optStrList();
  image.config.entrypoint = r.optStrList();
  image.config.workingDir = r.str();
  image.config.user = r.str();
  const nlabels = r.u32();
  for (let i = 0; i < nlabels; i++) {
    const k = r.str();
    image.config.labels[k] = r.str();
  }
  image.config.exposedPorts = r.strList();
  const stop = r.optStr();
  if (stop !== undefined) image.config.stopSignal = stop;
  return image;
}

export class ClipIndex {
  readonly image: ImageInfo;
  readonly build: BuildInfo;
  readonly layers: LayerInfo[];
  /** size of the index file in bytes */
  readonly fileSize: number;
  /** version of the file format (2: names stored as bytes; 1: names stored as UTF-8, see layout.ts) */
  readonly formatVersion: number;
  readonly inodeCount: number;
  private readonly pool: Buffer;
  private readonly inodes: Buffer;
  private readonly dirents: Buffer;
  private readonly xattrTable: Buffer;
  private readonly windows: Buffer;

  private constructor(file: Buffer, what: string) {
    if (file.length < L.HEADER_SIZE || !file.subarray(0, 8).equals(L.MAGIC)) {
      throw new ClipError('INDEX_CORRUPT', `${what} is not a clip index (bad magic)`);
    }
    const version = file.readUInt32LE(8);
    if (!L.READABLE_VERSIONS.includes(version)) {
      throw new ClipError(
        'INDEX_VERSION',
        `${what}: clip index version ${version} is not supported (this build reads versions ${L.READABLE_VERSIONS.join(' and ')}); ` +
          'rebuild the index with this build (cryo clip index)',
      );
    }
    this.formatVersion = version;
    const headerLen = file.readUInt32LE(12);
    const metaLen = file.readDoubleLE(16);
    const rawLen = file.readDoubleLE(24);
    const winLen = file.readDoubleLE(32);
    if (headerLen !== L.HEADER_SIZE || file.length !== headerLen + metaLen + winLen) {
      throw new ClipError(
        'INDEX_CORRUPT',
        `${what}: clip index is truncated or has trailing bytes (${file.length} bytes, header says ${headerLen + metaLen + winLen})`,
      );
    }
    const body = file.subarray(headerLen);
    const sum = createHash('sha256').update(body).digest();
    if (!sum.equals(file.subarray(40, 72))) throw new ClipError('INDEX_CORRUPT', `${what}: clip index checksum mismatch (corrupt file)`);
    let raw: Buffer;
    try {
      raw = zlib.inflateRawSync(body.subarray(0, metaLen));
    } catch (err) {
      throw new ClipError('INDEX_CORRUPT', `${what}: clip index metadata does not inflate`, undefined, { cause: err });
    }
    if (raw.length !== rawLen) throw new ClipError('INDEX_CORRUPT', `${what}: clip index metadata has the wrong length`);
    this.windows = body.subarray(metaLen);
    this.fileSize = file.length;

    const r = new ByteReader(raw, what);
    if (r.str() !== 'image') throw new ClipError('INDEX_CORRUPT', `${what}: clip index metadata is malformed`);
    this.image = readImage(r);
    this.build = { span: r.f64(), createdAt: r.str(), tool: r.str() };
    const nlayers = r.u32();
    this.layers = [];
    for (let i = 0; i < nlayers; i++) {
      const layer: LayerInfo = {
        digest: r.str(),
        mediaType: r.str(),
        size: r.f64(),
        diffId: r.str(),
        compression: r.str() as LayerCompression,
        uncompressedSize: r.f64(),
        spans: [],
      };
      const nspans = r.u32();
      for (let s = 0; s < nspans; s++) {
        const span: SpanInfo = {
          uoff: r.f64(),
          ulen: r.f64(),
          coff: r.f64(),
          bits: r.u8(),
          windowOffset: r.f64(),
          windowLength: r.u32(),
          sha256: r.bytes(32),
        };
        layer.spans.push(span);
      }
      this.layers.push(layer);
    }
    this.pool = r.blob();
    this.inodeCount = r.u32();
    this.inodes = r.bytes(this.inodeCount * L.INODE_SIZE);
    const ndirents = r.u32();
    this.dirents = r.bytes(ndirents * L.DIRENT_SIZE);
    const nx = r.u32();
    this.xattrTable = r.bytes(nx * L.XATTR_SIZE);
    if (this.inodeCount === 0) throw new ClipError('INDEX_CORRUPT', `${what}: clip index has no root directory`);
  }

  static fromBuffer(file: Buffer, what = 'index'): ClipIndex {
    return new ClipIndex(file, what);
  }

  static async load(path: string): Promise<ClipIndex> {
    const { readFile } = await import('node:fs/promises');
    let buf: Buffer;
    try {
      buf = await readFile(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ClipError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot read clip index '${path}': ${(err as Error).message}`);
    }
    return new ClipIndex(buf, path);
  }

  /** total compressed size of the image's layers */
  get imageSize(): number {
    return this.layers.reduce((n, l) => n + l.size, 0);
  }

  /** inflated checkpoint window of a span */
  window(span: SpanInfo): Buffer {
    if (span.windowLength === 0) return Buffer.alloc(0);
    return zlib.inflateRawSync(this.windows.subarray(span.windowOffset, span.windowOffset + span.windowLength));
  }

  // ---- tree access by inode id (0 = root) ----

  mode(id: number): number {
    return this.inodes.readUInt32LE(id * L.INODE_SIZE + L.I_MODE);
  }

  isDir(id: number): boolean {
    return (this.mode(id) & S_IFMT) === S_IFDIR;
  }

  private checkId(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.inodeCount) {
      throw new ClipError('INDEX_CORRUPT', `inode ${id} out of range`);
    }
    return id * L.INODE_SIZE;
  }

  private time(o: number, at: number): TarTime {
    return { sec: this.inodes.readDoubleLE(o + at), nsec: this.inodes.readUInt32LE(o + at + 8) };
  }

  stat(id: number): ClipStat {
    const o = this.checkId(id);
    const t = this.inodes;
    const flags = t.readUInt16LE(o + L.I_FLAGS);
    const mtime = this.time(o, L.I_MTIME);
    const size = t.readDoubleLE(o + L.I_SIZE);
    return {
      ino: id + 1,
      mode: t.readUInt32LE(o + L.I_MODE),
      nlink: t.readUInt32LE(o + L.I_NLINK),
      uid: t.readUInt32LE(o + L.I_UID),
      gid: t.readUInt32LE(o + L.I_GID),
      rdevMajor: t.readUInt32LE(o + L.I_MAJOR),
      rdevMinor: t.readUInt32LE(o + L.I_MINOR),
      size,
      blocks: Math.ceil(size / 512),
      mtime,
      atime: flags & 1 ? this.time(o, L.I_ATIME) : mtime,
      ctime: flags & 2 ? this.time(o, L.I_CTIME) : mtime,
    };
  }

  linkTarget(id: number): string {
    const o = this.checkId(id);
    const off = this.inodes.readUInt32LE(o + L.I_LINK);
    const len = this.inodes.readUInt32LE(o + L.I_LINK + 4);
    return this.pool.toString('latin1', off, off + len);
  }

  fileData(id: number): FileData | undefined {
    const o = this.checkId(id);
    const layer = this.inodes.readUInt16LE(o + L.I_LAYER);
    if (layer === L.NO_LAYER) return undefined;
    return { layer, offset: this.inodes.readDoubleLE(o + L.I_DATA), size: this.inodes.readDoubleLE(o + L.I_SIZE) };
  }

  private childRange(id: number): [number, number] {
    const o = this.checkId(id);
    return [this.inodes.readUInt32LE(o + L.I_CHILD), this.inodes.readUInt32LE(o + L.I_CHILD + 4)];
  }

  private direntName(i: number): Buffer {
    const o = i * L.DIRENT_SIZE;
    const off = this.dirents.readUInt32LE(o);
    return this.pool.subarray(off, off + this.dirents.readUInt32LE(o + 4));
  }

  /** children of a directory in name order: O(children) */
  children(id: number): Array<{ name: string; id: number }> {
    const [first, count] = this.childRange(id);
    const out: Array<{ name: string; id: number }> = [];
    for (let i = first; i < first + count; i++) {
      out.push({ name: this.direntName(i).toString('latin1'), id: this.dirents.readUInt32LE(i * L.DIRENT_SIZE + 8) });
    }
    return out;
  }

  /** binary search among a directory's children */
  child(id: number, name: Buffer): number | undefined {
    let [lo, count] = this.childRange(id);
    let hi = lo + count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = Buffer.compare(this.direntName(mid), name);
      if (c === 0) return this.dirents.readUInt32LE(mid * L.DIRENT_SIZE + 8);
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  xattrs(id: number): Map<string, Buffer> {
    const o = this.checkId(id);
    const first = this.inodes.readUInt32LE(o + L.I_XATTR);
    const count = this.inodes.readUInt32LE(o + L.I_XATTR + 4);
    const out = new Map<string, Buffer>();
    for (let i = first; i < first + count; i++) {
      const x = i * L.XATTR_SIZE;
      const koff = this.xattrTable.readUInt32LE(x);
      const voff = this.xattrTable.readUInt32LE(x + 8);
      out.set(
        this.pool.toString('latin1', koff, koff + this.xattrTable.readUInt32LE(x + 4)),
        Buffer.from(this.pool.subarray(voff, voff + this.xattrTable.readUInt32LE(x + 12))),
      );
    }
    return out;
  }

  /**
   * Resolve a path to an inode without following symlinks in the last
   * component (lstat semantics). Symlinks in the middle are followed inside the
   * image root, so `cat /bin/sh` works on usr-merged images.
   */
  resolve(path: string, followLast = false): number {
    return this.resolvePath(path, followLast).id;
  }

  /** resolve, also returning the canonical path (symlinks in it resolved) */
  resolvePath(path: string, followLast = false): { id: number; path: string } {
    if (!isByteString(path)) {
      throw fsError('EINVAL', nameFromText(path), 'a path must be a byte string (convert text with nameFromText)');
    }
    const todo = path.split('/').filter((p) => p !== '' && p !== '.');
    const ids = [0]; // inode ids from the root to the current directory
    const names: string[] = [];
    let hops = 0;
    while (todo.length > 0) {
      const part = todo.shift() ?? '';
      const cur = ids[ids.length - 1] ?? 0;
      if (part === '..') {
        if (ids.length > 1) {
          ids.pop();
          names.pop();
        }
        continue;
      }
      if (!this.isDir(cur)) throw fsError('ENOTDIR', path);
      const next = this.child(cur, nameBytes(part));
      if (next === undefined) throw fsError('ENOENT', path);
      if ((this.mode(next) & S_IFMT) === S_IFLNK && (todo.length > 0 || followLast)) {
        if (++hops > 40) throw fsError('ELOOP', path);
        const target = this.linkTarget(next);
        if (target.startsWith('/')) {
          ids.length = 1;
          names.length = 0;
        }
        todo.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
        continue;
      }
      ids.push(next);
      names.push(part);
    }
    return { id: ids[ids.length - 1] ?? 0, path: `/${names.join('/')}` };
  }

  isRegular(id: number): boolean {
    return (this.mode(id) & S_IFMT) === S_IFREG;
  }
}
