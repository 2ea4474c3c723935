/**
 * The OCI layer of a pre-copied container: the captured entries (precopy.ts) in the order and
 * form `docker commit` writes them, as a tar stream whose exact size is known before the first
 * byte (so it can be handed to `docker load` while it is still being made).
 *
 * Order and form follow moby's pkg/archive (TarWithOptions over the overlay2 upper dir, which is
 * what `docker commit` runs on overlay2): a depth-first walk with each directory's names sorted
 * bytewise (Go's filepath.Walk); the root itself left out; a non-directory with more than one
 * link becomes a hard link to the first name the walk met for its inode (overlay whiteouts share
 * an inode, and stay whiteouts); sockets skipped; only `security.capability` among xattrs; times
 * in whole seconds. Overlay whiteouts and opaque directories are converted by the one converter
 * both drivers use (lazy/upper-layer.ts).
 */
import { open } from 'node:fs/promises';
import { END_OF_ARCHIVE, displayName, encodeHeader, padding, type TarHeader } from '@cryo/clip';
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX, layerEntriesFor, type LayerEntry } from '../lazy/upper-layer';
import type { CapturedEntry } from './precopy';

const READ_CHUNK = 1024 * 1024;

/** A layer entry and, for a regular file, the file its bytes come from (from `contentOffset`, default 0). */
export type PlannedEntry = LayerEntry & { content?: string; contentOffset?: number };

export interface LayerPlan {
  entries: PlannedEntry[];
  /** bytes of the uncompressed layer tar, end-of-archive blocks included */
  size: number;
  whiteouts: number;
  opaqueDirs: number;
  /** sockets left out, as Docker leaves them out */
  socketsSkipped: string[];
}

interface Node {
  entry?: CapturedEntry;
  children: Map<string, Node>;
}

function treeOf(captured: CapturedEntry[]): Node {
  const root: Node = { children: new Map() };
  for (const entry of captured) {
    let node = root;
    if (entry.layerPath !== '') {
      for (const part of entry.layerPath.split('/')) {
        let child = node.children.get(part);
        if (child === undefined) {
          child = { children: new Map() };
          node.children.set(part, child);
        }
        node = child;
      }
    }
    node.entry = entry;
  }
  return root;
}

/** Go's filepath.Walk order: a directory, then its entries sorted bytewise (names are byte strings). */
function* walk(node: Node): Generator<CapturedEntry> {
  if (node.entry !== undefined) yield node.entry;
  for (const name of [...node.children.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const child = node.children.get(name);
    if (child !== undefined) yield* walk(child);
  }
}

function isWhiteout(e: CapturedEntry): boolean {
  return e.kind === 'chardev' && e.devmajor === 0 && e.devminor === 0;
}

function seconds(time: string): number {
  return Math.floor(Number(time));
}

/** Plan the layer of a captured tree: its entries in order, with their sizes. */
export function planLayer(captured: CapturedEntry[]): LayerPlan {
  const entries: PlannedEntry[] = [];
  const firstName = new Map<string, string>();
  const socketsSkipped: string[] = [];
  for (const e of walk(treeOf(captured))) {
    if (e.kind === 'socket') {
      socketsSkipped.push(e.layerPath);
      continue;
    }
    const header: TarHeader & { content?: string } = {
      name: e.layerPath,
      type: e.kind,
      mode: e.perm,
      uid: e.uid,
      gid: e.gid,
      uname: '',
      gname: '',
      size: e.kind === 'file' ? e.size : 0,
      mtime: { sec: seconds(e.mtime), nsec: 0 },
      linkname: e.linkname,
      devmajor: e.devmajor,
      devminor: e.devminor,
      xattrs: e.xattrs,
    };
    if (e.kind !== 'directory' && e.nlink > 1 && !isWhiteout(e)) {
      const key = `${e.source}:${e.ino}`;
      const first = firstName.get(key);
      if (first === undefined) {
        firstName.set(key, e.layerPath);
      } else {
        Object.assign(header, { type: 'hardlink', linkname: first, size: 0 });
      }
    }
    for (const out of layerEntriesFor(header, { skip: () => false })) {
      entries.push(out.type === 'file' && out.size > 0 && header.type === 'file' && e.content !== undefined ? { ...out, content: e.content } : out);
    }
  }
  return { ...measure(entries), socketsSkipped };
}

/** The exact tar size of `entries`, and their whiteouts and opaque markers. */
export function measure(entries: PlannedEntry[]): Omit<LayerPlan, 'socketsSkipped'> {
  let size = END_OF_ARCHIVE.length;
  let whiteouts = 0;
  let opaqueDirs = 0;
  for (const e of entries) {
    size += encodeHeader(e).length + (e.type === 'file' ? e.size + padding(e.size).length : 0);
    const base = e.name.slice(e.name.lastIndexOf('/') + 1);
    if (base === OPAQUE_WHITEOUT) opaqueDirs++;
    else if (base.startsWith(WHITEOUT_PREFIX)) whiteouts++;
  }
  return { entries, size, whiteouts, opaqueDirs };
}

/** The layer tar, read from the stored copies; exactly `plan.size` bytes. */
export async function* layerStream(plan: LayerPlan): AsyncGenerator<Buffer> {
  for (const entry of plan.entries) {
    yield encodeHeader(entry);
    if (entry.type !== 'file' || entry.size === 0) continue;
    if (entry.content === undefined) throw new Error(`no stored copy of ${displayName(entry.name)}`);
    const file = await open(entry.content, 'r');
    try {
      let left = entry.size;
      let at = entry.contentOffset ?? 0;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(left, READ_CHUNK));
        const { bytesRead } = await file.read(buf, 0, buf.length, at);
        at += bytesRead;
        if (bytesRead === 0) throw new Error(`the stored copy of ${displayName(entry.name)} is shorter than the ${entry.size} bytes scanned`);
        left -= bytesRead;
        yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      await file.close();
    }
    yield padding(entry.size);
  }
  yield END_OF_ARCHIVE;
}
