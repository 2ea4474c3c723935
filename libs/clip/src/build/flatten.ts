/**
 * Flattening (squashing) an image: its layers, bottom first, merged into the one tar layer that
 * unpacks to the same filesystem. The merge is the clip index's (../tree/merge.ts, OCI layer
 * semantics): whiteouts act on lower layers only, `.wh..wh..opq` empties the directory below,
 * a non-directory replacing a directory prunes its subtree, hard links share one inode. The
 * result is a bottom layer, so it holds no whiteouts and no opaque markers: what a lower layer
 * put there and an upper one deleted is simply not in it.
 *
 * The merged tar is written in tree order (a directory before its children, names sorted by
 * bytes), so the same layers always give the same bytes and the same diff_id. A file's data is
 * read from the layer that last wrote it (`FlattenLayer.read`), so each layer's uncompressed tar
 * must be readable at random offsets: spooled to a file (`spoolLayer`, `FileRegionLayer`).
 * Names are byte strings (../names.ts) end to end. Entries are written the way Go's archive/tar
 * writes Docker layers (../tar/writer.ts): times in whole seconds, no atime/ctime, PAX records
 * for long or non-ASCII names and for xattrs; user and group names are left out (Docker and
 * GNU tar as root then use the numeric ids, which the merge keeps).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { once } from 'node:events';
import { Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { ClipError } from '../errors';
import { displayName } from '../names';
import type { TarHeader } from '../tar/header';
import { TarParser, type TarEntry } from '../tar/parser';
import { END_OF_ARCHIVE, encodeHeader, padding } from '../tar/writer';
import { TreeBuilder, splitPath, type Inode, type TreeNode } from '../tree/merge';
import type { LayerCompression } from './layer-indexer';

/** One layer to flatten: its tar entries and random access to its uncompressed tar stream. */
export interface FlattenLayer {
  /** the layer's entries in archive order, `dataOffset` counted from the start of its tar */
  readonly entries: readonly TarEntry[];
  /** `length` bytes of the layer's tar from `offset` (fewer only if the tar ends: an error) */
  read(offset: number, length: number): AsyncIterable<Buffer>;
}

/** What a flattened tar holds. */
export interface FlattenStats {
  /** layers merged */
  layers: number;
  /** tar entries written (directories, files, links, devices) */
  entries: number;
  /** regular files written with their data (hard links to them not counted) */
  files: number;
  hardlinks: number;
  /** bytes of file data written */
  dataBytes: number;
  /** bytes of the whole tar (headers, data, padding, end blocks): known before it is read */
  tarBytes: number;
}

export interface FlattenedTar {
  stats: FlattenStats;
  /** the merged tar, ending with the end-of-archive blocks; read it once */
  tar(): AsyncGenerator<Buffer>;
}

const READ_CHUNK = 1 << 20;

/** Bytes in order: a stream, a generator, or (in tests) an array of buffers. */
export type ByteSource = AsyncIterable<Buffer> | Iterable<Buffer>;

function headerFor(name: string, inode: Inode): TarHeader {
  return {
    name,
    type: inode.kind,
    mode: inode.perm,
    uid: inode.uid,
    gid: inode.gid,
    uname: '',
    gname: '',
    size: inode.kind === 'file' ? inode.size : 0,
    mtime: inode.mtime,
    linkname: inode.kind === 'symlink' ? inode.linkname : '',
    devmajor: inode.devmajor,
    devminor: inode.devminor,
    xattrs: inode.xattrs,
  };
}

function hardlinkHeader(name: string, inode: Inode, target: string): Buffer {
  return encodeHeader({ ...headerFor(name, inode), type: 'hardlink', size: 0, linkname: target });
}

function sortedChildren(node: TreeNode): Array<[string, TreeNode]> {
  // Byte strings: comparing code units compares bytes.
  return [...(node.children ?? new Map<string, TreeNode>())].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Merge `layers` (bottom first) into one tar. The tree is built at once (metadata only, in
 * memory); file data is streamed from the layers while the tar is read. Throws a ClipError
 * (LAYER_CORRUPT) for a path escaping the root or a hard link to nothing.
 */
export function flattenLayers(layers: readonly FlattenLayer[]): FlattenedTar {
  const tree = new TreeBuilder();
  let rootEntry = false;
  layers.forEach((layer, i) => {
    tree.applyLayer(layer.entries, i);
    if (layer.entries.some((e) => e.type === 'directory' && splitPath(e.name).length === 0)) rootEntry = true;
  });

  // Walk once to count (the same walk as tar()), so the caller knows what it gets, and how many bytes, before reading it.
  const stats: FlattenStats = { layers: layers.length, entries: 0, files: 0, hardlinks: 0, dataBytes: 0, tarBytes: END_OF_ARCHIVE.length };
  const firstNames = new Map<Inode, string>();
  const count = (node: TreeNode, prefix: string): void => {
    for (const [name, child] of sortedChildren(node)) {
      const path = `${prefix}${name}`;
      stats.entries++;
      const first = child.children === undefined ? firstNames.get(child.inode) : undefined;
      if (first !== undefined) {
        stats.hardlinks++;
        stats.tarBytes += hardlinkHeader(path, child.inode, first).length;
        continue;
      }
      firstNames.set(child.inode, path);
      stats.tarBytes += encodeHeader(headerFor(path, child.inode)).length;
      if (child.inode.kind === 'file') {
        stats.files++;
        stats.dataBytes += child.inode.size;
        stats.tarBytes += child.inode.size + padding(child.inode.size).length;
      }
      if (child.children !== undefined) count(child, `${path}/`);
    }
  };
  count(tree.root, '');
  if (rootEntry) {
    stats.entries++;
    stats.tarBytes += encodeHeader(headerFor('.', tree.root.inode)).length;
  }

  async function* data(inode: Inode, name: string): AsyncGenerator<Buffer> {
    const layer = layers[inode.layer];
    if (layer === undefined) throw new ClipError('LAYER_CORRUPT', `flatten: no layer ${inode.layer} holds the data of '${displayName(name)}'`);
    let left = inode.size;
    for await (const chunk of layer.read(inode.dataOffset, inode.size)) {
      const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
      left -= part.length;
      yield part;
      if (left === 0) break;
    }
    if (left > 0) throw new ClipError('LAYER_CORRUPT', `flatten: layer ${inode.layer} ends inside the data of '${displayName(name)}'`);
    yield padding(inode.size);
  }

  async function* walk(node: TreeNode, prefix: string, firstName: Map<Inode, string>): AsyncGenerator<Buffer> {
    for (const [name, child] of sortedChildren(node)) {
      const path = `${prefix}${name}`;
      const first = child.children === undefined ? firstName.get(child.inode) : undefined;
      if (first !== undefined) {
        yield hardlinkHeader(path, child.inode, first);
        continue;
      }
      firstName.set(child.inode, path);
      yield encodeHeader(headerFor(path, child.inode));
      if (child.inode.kind === 'file' && child.inode.size > 0) yield* data(child.inode, path);
      if (child.children !== undefined) yield* walk(child, `${path}/`, firstName);
    }
  }

  return {
    stats,
    async *tar() {
      if (rootEntry) yield encodeHeader(headerFor('.', tree.root.inode));
      yield* walk(tree.root, '', new Map());
      yield END_OF_ARCHIVE;
    },
  };
}

/** A layer's tar stored in a file, from byte `start` on: reads go straight to the file. */
export class FileRegionLayer implements FlattenLayer {
  private handle: Promise<FileHandle> | undefined;

  constructor(
    readonly path: string,
    readonly start: number,
    readonly size: number,
    readonly entries: readonly TarEntry[],
  ) {}

  async *read(offset: number, length: number): AsyncGenerator<Buffer> {
    if (offset < 0 || offset + length > this.size) {
      throw new ClipError('LAYER_CORRUPT', `flatten: bytes ${offset}..${offset + length} are outside the ${this.size}-byte layer tar in ${this.path}`);
    }
    this.handle ??= open(this.path, 'r');
    const file = await this.handle;
    let pos = this.start + offset;
    let left = length;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(left, READ_CHUNK));
      const { bytesRead } = await file.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) throw new ClipError('LAYER_CORRUPT', `flatten: ${this.path} ends at byte ${pos}, inside a layer`);
      yield buf.subarray(0, bytesRead);
      pos += bytesRead;
      left -= bytesRead;
    }
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    if (handle !== undefined) await (await handle).close();
  }
}

/** The entries of a tar stream, with their offsets. */
export async function readTarEntries(source: ByteSource): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const parser = new TarParser((e) => entries.push(e));
  for await (const chunk of source) parser.push(chunk);
  parser.end();
  return entries;
}

/** The uncompressed tar of a layer blob (gzip, possibly several members; zstd; or plain). */
export async function* decompressLayer(blob: ByteSource, compression: LayerCompression): AsyncGenerator<Buffer> {
  if (compression === 'none') {
    yield* blob;
    return;
  }
  if (compression === 'gzip') {
    const gunzip = createGunzip();
    // pipeline hands an error of the source (a registry read) to gunzip, and so to the reader.
    pipeline(Readable.from(blob), gunzip, () => undefined);
    try {
      for await (const chunk of gunzip) yield chunk as Buffer;
    } catch (err) {
      const zlibCode = typeof err === 'object' && err !== null && 'code' in err && String(err.code).startsWith('Z_');
      if (!zlibCode) throw err;
      throw new ClipError('GZIP_CORRUPT', `flatten: the layer is not valid gzip: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
    }
    return;
  }
  const out: Buffer[] = [];
  const zstd = new ZstdDecompress((chunk) => out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)));
  for await (const chunk of blob) {
    zstd.push(chunk);
    yield* out.splice(0);
  }
  zstd.push(new Uint8Array(0), true);
  yield* out.splice(0);
}

/** What one pass over a layer's tar learns: its entries, its diff_id and its size. */
export interface ScannedLayer {
  entries: TarEntry[];
  /** sha256 of the uncompressed tar (the config's diff_id) */
  diffId: string;
  size: number;
}

/**
 * Parse and hash a layer's uncompressed tar in one pass. With `expectDiffId`, a tar whose sha256
 * differs is refused (DIGEST_MISMATCH): the registry or the engine gave other bytes than the
 * image's config promises.
 */
export async function scanLayer(tar: ByteSource, expectDiffId?: string): Promise<ScannedLayer> {
  const entries: TarEntry[] = [];
  const parser = new TarParser((e) => entries.push(e));
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of tar) {
    hash.update(chunk);
    parser.push(chunk);
    size += chunk.length;
  }
  parser.end();
  const diffId = `sha256:${hash.digest('hex')}`;
  if (expectDiffId !== undefined && diffId !== expectDiffId) {
    throw new ClipError('DIGEST_MISMATCH', `flatten: the layer's uncompressed tar has digest ${diffId}, its image config says ${expectDiffId}`);
  }
  return { entries, diffId, size };
}

/** A layer spooled to a file by `spoolLayer`. */
export interface SpooledLayer {
  layer: FileRegionLayer;
  diffId: string;
  size: number;
}

/** `scanLayer`, writing the tar to `path` on the way so that `layer` can read it back. */
export async function spoolLayer(tar: ByteSource, path: string, expectDiffId?: string): Promise<SpooledLayer> {
  const out = createWriteStream(path);
  const failed = new Promise<never>((_, reject) => out.once('error', reject));
  failed.catch(() => undefined);
  async function* tee(): AsyncGenerator<Buffer> {
    for await (const chunk of tar) {
      if (!out.write(chunk)) await Promise.race([once(out, 'drain'), failed]);
      yield chunk;
    }
  }
  try {
    const scanned = await scanLayer(tee(), expectDiffId);
    out.end();
    await Promise.race([once(out, 'finish'), failed]);
    return { layer: new FileRegionLayer(path, 0, scanned.size, scanned.entries), diffId: scanned.diffId, size: scanned.size };
  } finally {
    out.destroy();
  }
}
