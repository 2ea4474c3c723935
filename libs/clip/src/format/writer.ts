/**
 * Serialises a merged tree plus image and layer metadata into an index file. Names, link targets
 * and xattr names are byte strings and go into the string pool as their bytes.
 */
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import type { SpanRecord } from '../build/layer-indexer';
import type { Inode, TreeNode } from '../tree/merge';
import { ByteWriter } from './bytes';
import * as L from './layout';
import { nameBytes } from '../names';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, type BuildInfo, type ImageInfo, type LayerInfo } from './types';

/** a layer as the writer takes it: spans still carry their raw windows */
export type LayerToWrite = Omit<LayerInfo, 'spans'> & { spans: SpanRecord[] };

const KIND_BITS: Record<Inode['kind'], number> = {
  file: S_IFREG,
  directory: S_IFDIR,
  symlink: S_IFLNK,
  chardev: S_IFCHR,
  blockdev: S_IFBLK,
  fifo: S_IFIFO,
};

class StringPool {
  private readonly w = new ByteWriter();
  private readonly seen = new Map<string, number>();

  add(b: Buffer): [number, number] {
    if (b.length === 0) return [0, 0];
    const key = b.toString('latin1');
    let off = this.seen.get(key);
    if (off === undefined) {
      off = this.w.length;
      this.w.bytes(b);
      if (b.length <= 256) this.seen.set(key, off);
    }
    return [off, b.length];
  }

  finish(): Buffer {
    return this.w.finish();
  }
}

function writeImage(w: ByteWriter, image: ImageInfo): void {
  w.str(image.reference);
  w.str(image.registry);
  w.str(image.repository);
  w.str(image.manifestDigest);
  w.str(image.manifestMediaType);
  w.str(image.configDigest);
  w.str(image.os);
  w.str(image.architecture);
  w.optStr(image.variant);
  w.optStr(image.created);
  const c = image.config;
  w.strList(c.env);
  w.optStrList(c.cmd);
  w.optStrList(c.entrypoint);
  w.str(c.workingDir);
  w.str(c.user);
  const labels = Object.entries(c.labels);
  w.u32(labels.length);
  for (const [k, v] of labels) {
    w.str(k);
    w.str(v);
  }
  w.strList(c.exposedPorts);
  w.optStr(c.stopSignal);
}

export function writeIndex(input: { image: ImageInfo; build: BuildInfo; layers: LayerToWrite[]; root: TreeNode }): Buffer {
  const meta = new ByteWriter();
  const windows = new ByteWriter();
  meta.str('image');
  writeImage(meta, input.image);
  meta.f64(input.build.span);
  meta.str(input.build.createdAt);
  meta.str(input.build.tool);

  meta.u32(input.layers.length);
  for (const layer of input.layers) {
    meta.str(layer.digest);
    meta.str(layer.mediaType);
    meta.f64(layer.size);
    meta.str(layer.diffId);
    meta.str(layer.compression);
    meta.f64(layer.uncompressedSize);
    meta.u32(layer.spans.length);
    for (const s of layer.spans) {
      meta.f64(s.uoff);
      meta.f64(s.ulen);
      meta.f64(s.coff);
      meta.u8(s.bits);
      // level 6: level 9 is ~15x slower on the zero runs of pruned windows and no smaller
      const win = s.windowDeflated ?? (s.window.length > 0 ? zlib.deflateRawSync(s.window, { level: 6 }) : Buffer.alloc(0));
      meta.f64(windows.length);
      meta.u32(win.length);
      windows.bytes(win);
      meta.bytes(s.sha256);
    }
  }

  // Flatten the tree breadth-first: every directory's children are contiguous.
  const pool = new StringPool();
  const inodeIds = new Map<Inode, number>();
  const inodes: Inode[] = [];
  const names = new Map<Inode, number>(); // link counts of non-directories
  const dirChildren: Array<[number, number]> = []; // per inode: first dirent, count
  const dirents = new ByteWriter();
  let direntCount = 0;
  const idOf = (inode: Inode): number => {
    let id = inodeIds.get(inode);
    if (id === undefined) {
      id = inodes.length;
      inodeIds.set(inode, id);
      inodes.push(inode);
    }
    return id;
  };
  const subdirs = new Map<Inode, number>();
  const queue: TreeNode[] = [input.root];
  idOf(input.root.inode);
  for (let qi = 0; qi < queue.length; qi++) {
    const dir = queue[qi];
    if (!dir?.children) continue;
    const entries = [...dir.children.entries()].map(([name, node]) => ({ name: nameBytes(name), node }));
    entries.sort((a, b) => Buffer.compare(a.name, b.name));
    const dirId = idOf(dir.inode);
    dirChildren[dirId] = [direntCount, entries.length];
    let nsub = 0;
    for (const { name, node } of entries) {
      const [off, len] = pool.add(name);
      const id = idOf(node.inode);
      dirents.u32(off);
      dirents.u32(len);
      dirents.u32(id);
      direntCount++;
      if (node.children) {
        nsub++;
        queue.push(node);
      } else {
        names.set(node.inode, (names.get(node.inode) ?? 0) + 1);
      }
    }
    subdirs.set(dir.inode, nsub);
  }

  const table = Buffer.alloc(inodes.length * L.INODE_SIZE);
  const xattrs = new ByteWriter();
  let xattrCount = 0;
  inodes.forEach((inode, id) => {
    const o = id * L.INODE_SIZE;
    table.writeUInt32LE(KIND_BITS[inode.kind] | (inode.perm & 0o7777), o + L.I_MODE);
    table.writeUInt32LE(inode.uid, o + L.I_UID);
    table.writeUInt32LE(inode.gid, o + L.I_GID);
    const nlink = inode.kind === 'directory' ? 2 + (subdirs.get(inode) ?? 0) : (names.get(inode) ?? 1);
    table.writeUInt32LE(nlink, o + L.I_NLINK);
    table.writeDoubleLE(inode.size, o + L.I_SIZE);
    table.writeDoubleLE(inode.dataOffset, o + L.I_DATA);
    table.writeUInt16LE(inode.layer < 0 ? L.NO_LAYER : inode.layer, o + L.I_LAYER);
    table.writeUInt16LE((inode.atime ? 1 : 0) | (inode.ctime ? 2 : 0), o + L.I_FLAGS);
    table.writeUInt32LE(inode.devmajor, o + L.I_MAJOR);
    table.writeUInt32LE(inode.devminor, o + L.I_MINOR);
    for (const [at, t] of [
      [L.I_MTIME, inode.mtime],
      [L.I_ATIME, inode.atime],
      [L.I_CTIME, inode.ctime],
    ] as const) {
      if (!t) continue;
      table.writeDoubleLE(t.sec, o + at);
      table.writeUInt32LE(t.nsec, o + at + 8);
    }
    const [loff, llen] = pool.add(nameBytes(inode.linkname));
    table.writeUInt32LE(loff, o + L.I_LINK);
    table.writeUInt32LE(llen, o + L.I_LINK + 4);
    const [first, count] = dirChildren[id] ?? [0, 0];
    table.writeUInt32LE(first, o + L.I_CHILD);
    table.writeUInt32LE(count, o + L.I_CHILD + 4);
    const xs = [...inode.xattrs.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    table.writeUInt32LE(xattrCount, o + L.I_XATTR);
    table.writeUInt32LE(xs.length, o + L.I_XATTR + 4);
    for (const [k, v] of xs) {
      const [koff, klen] = pool.add(nameBytes(k));
      const [voff, vlen] = pool.add(v);
      xattrs.u32(koff);
      xattrs.u32(klen);
      xattrs.u32(voff);
      xattrs.u32(vlen);
      xattrCount++;
    }
  });

  meta.blob(pool.finish());
  meta.u32(inodes.length);
  meta.bytes(table);
  meta.u32(direntCount);
  meta.bytes(dirents.finish());
  meta.u32(xattrCount);
  meta.bytes(xattrs.finish());

  const rawMeta = meta.finish();
  const metaZ = zlib.deflateRawSync(rawMeta, { level: 6, memLevel: 9 });
  const win = windows.finish();
  const header = Buffer.alloc(L.HEADER_SIZE);
  L.MAGIC.copy(header, 0);
  header.writeUInt32LE(L.VERSION, 8);
  header.writeUInt32LE(L.HEADER_SIZE, 12);
  header.writeDoubleLE(metaZ.length, 16);
  header.writeDoubleLE(rawMeta.length, 24);
  header.writeDoubleLE(win.length, 32);
  createHash('sha256').update(metaZ).update(win).digest().copy(header, 40);
  return Buffer.concat([header, metaZ, win]);
}
