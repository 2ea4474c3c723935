/**
 * Merges the tar entries of an image's layers into one filesystem tree with
 * OCI layer semantics:
 * - `.wh.NAME` deletes NAME and `.wh..wh..opq` empties its directory, acting on
 *   lower layers only (they are applied before the entries of their own layer);
 * - a non-directory replacing a directory removes the old subtree; a directory
 *   over an existing directory only updates its metadata;
 * - parents without their own entry are synthesised (0755 root:root, time 0),
 *   and a non-directory in a parent position is replaced by such a directory;
 * - hard links share one inode; link counts are computed from the final tree.
 * Names are byte strings (../names.ts), compared and stored as bytes.
 */
import { ClipError } from '../errors';
import { displayName } from '../names';
import type { TarEntry } from '../tar/parser';

export type InodeKind = 'file' | 'directory' | 'symlink' | 'chardev' | 'blockdev' | 'fifo';

/** an inode keeps the entry's metadata; `perm` is the mode's permission bits (setuid/setgid/sticky included) */
export type Inode = Pick<TarEntry, 'uid' | 'gid' | 'size' | 'mtime' | 'atime' | 'ctime' | 'linkname' | 'devmajor' | 'devminor' | 'xattrs'> & {
  kind: InodeKind;
  perm: number;
  /** layer holding the file data (-1 if none) */
  layer: number;
  /** offset of the data in that layer's uncompressed stream */
  dataOffset: number;
};

export interface TreeNode {
  inode: Inode;
  children?: Map<string, TreeNode>;
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

export function splitPath(path: string, what = 'path'): string[] {
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw new ClipError('LAYER_CORRUPT', `${what} '${displayName(path)}' escapes the root`);
    parts.push(p);
  }
  return parts;
}

function synthesizedDir(): TreeNode {
  return {
    inode: {
      kind: 'directory',
      perm: 0o755,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: { sec: 0, nsec: 0 },
      linkname: '',
      devmajor: 0,
      devminor: 0,
      xattrs: new Map(),
      layer: -1,
      dataOffset: 0,
    },
    children: new Map(),
  };
}

function inodeFrom(e: TarEntry, layer: number): Inode {
  const kind: InodeKind = e.type === 'hardlink' ? 'file' : e.type;
  const inode: Inode = {
    kind,
    perm: e.mode & 0o7777,
    uid: e.uid,
    gid: e.gid,
    size: kind === 'file' ? e.size : kind === 'symlink' ? e.linkname.length : 0, // a byte string: one char per byte
    mtime: e.mtime,
    linkname: kind === 'symlink' ? e.linkname : '',
    devmajor: e.devmajor,
    devminor: e.devminor,
    xattrs: e.xattrs,
    layer: kind === 'file' && e.size > 0 ? layer : -1,
    dataOffset: kind === 'file' ? e.dataOffset : 0,
  };
  if (e.atime) inode.atime = e.atime;
  if (e.ctime) inode.ctime = e.ctime;
  return inode;
}

export class TreeBuilder {
  readonly root: TreeNode = synthesizedDir();

  /** Apply one layer's entries (in archive order). */
  applyLayer(entries: readonly TarEntry[], layer: number): void {
    // Whiteouts first: they only ever act on what lower layers put there.
    for (const e of entries) {
      const parts = splitPath(e.name);
      const base = parts[parts.length - 1];
      if (base === undefined || !base.startsWith(WHITEOUT)) continue;
      const dir = this.lookup(parts.slice(0, -1));
      if (!dir?.children) continue;
      if (base === OPAQUE) dir.children.clear();
      else if (!base.startsWith(`${WHITEOUT}${WHITEOUT}`)) dir.children.delete(base.slice(WHITEOUT.length));
    }
    for (const e of entries) {
      const parts = splitPath(e.name);
      const base = parts[parts.length - 1];
      if (base !== undefined && base.startsWith(WHITEOUT)) continue;
      this.applyEntry(e, parts, layer);
    }
  }

  lookup(parts: readonly string[]): TreeNode | undefined {
    let node: TreeNode | undefined = this.root;
    for (const p of parts) {
      node = node?.children?.get(p);
      if (!node) return undefined;
    }
    return node;
  }

  private parentDir(parts: readonly string[]): Map<string, TreeNode> {
    let node = this.root;
    for (const p of parts) {
      const children: Map<string, TreeNode> = node.children ?? new Map();
      let child = children.get(p);
      if (!child?.children) {
        child = synthesizedDir();
        children.set(p, child);
      }
      node = child;
    }
    return node.children ?? new Map();
  }

  private applyEntry(e: TarEntry, parts: string[], layer: number): void {
    if (parts.length === 0) {
      if (e.type === 'directory') this.root.inode = { ...inodeFrom(e, layer) };
      return;
    }
    const name = parts[parts.length - 1] ?? '';
    const siblings = this.parentDir(parts.slice(0, -1));
    const existing = siblings.get(name);
    if (e.type === 'directory') {
      const inode = inodeFrom(e, layer);
      if (existing?.children) existing.inode = inode;
      else siblings.set(name, { inode, children: new Map() });
      return;
    }
    if (e.type === 'hardlink') {
      const target = this.lookup(splitPath(e.linkname, 'hard link target'));
      if (!target) {
        throw new ClipError('LAYER_CORRUPT', `layer ${layer}: hard link '${displayName(e.name)}' points to missing '${displayName(e.linkname)}'`);
      }
      if (target.children) {
        throw new ClipError('LAYER_CORRUPT', `layer ${layer}: hard link '${displayName(e.name)}' points to directory '${displayName(e.linkname)}'`);
      }
      siblings.set(name, { inode: target.inode });
      return;
    }
    siblings.set(name, { inode: inodeFrom(e, layer) });
  }
}
