/**
 * Pre-copy of a running container's writable layer (and of the volumes cryo made for it), so the
 * sandbox is paused only for what changed during the copy, not for the whole diff:
 *
 *   pass 1 (running)   scan every source tree, copy the content of every regular file;
 *   pass 2.. (running) scan again, copy only files whose inode, size, mtime or ctime changed
 *                      since they were copied (plus "racy" ones, below);
 *   last pass (paused) the same, with the sandbox frozen: afterwards the copy is exactly the
 *                      tree at that instant.
 *
 * What is kept is the last scan (every entry's metadata: the walk is redone each pass, so
 * deletions, renames, new hard links, chmods and xattr changes are simply what the last scan
 * saw) plus a content store: one file per inode holding the bytes as of its last copy. Hard links
 * share an inode, so they share one stored copy.
 *
 * Change detection rests on ctime, which nothing but the kernel sets. Two traps, both handled:
 * - coarse timestamps: the kernel stamps ctime from a clock that ticks every few ms, so a write
 *   right after our lstat can leave ctime unchanged. A file whose ctime was within RACY_MS of the
 *   scan is "racy" (git's word) and copied again in the next pass, paused or not.
 * - writes through a shared mmap stamp ctime only when a clean page is first dirtied. Before a
 *   running delta pass the file system is synced (`sync -f`), which write-protects every mapped
 *   page, so any later mmap write faults and stamps ctime; and the racy window counts from that
 *   sync.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { nameBytes } from '@cryo/clip';
import { scanTree, timeMs, type TreeEntry } from './tree-scan';

/** A write this close (ms) before a scan may not have moved ctime yet: copy the file again next pass. */
export const RACY_MS = 100;
const COPY_CONCURRENCY = 4;

export interface CopySource {
  /** host path of the tree (the container's UpperDir, a volume's `_data`) */
  root: string;
  /** where the tree sits in the layer: '' for the writable layer, `data` for a volume at /data */
  at: string;
  /** paths inside this tree that are not captured (where another source is mounted over it) */
  skip: string[];
  /** the tree replaces what lower layers hold at `at` (a volume: its content is all there is) */
  opaque: boolean;
}

export interface PassStats {
  paused: boolean;
  ms: number;
  /** entries in the trees after the pass */
  entries: number;
  /** entries new, changed or gone since the previous pass (all of them for the first) */
  changed: number;
  files_copied: number;
  bytes_copied: number;
}

/** A captured entry: its metadata, its path in the layer, and (regular files) its stored content. */
export interface CapturedEntry extends TreeEntry {
  /** path in the layer (the source's `at` joined with the entry's path) */
  layerPath: string;
  /** which source it came from (inodes are per source) */
  source: number;
  /** the stored content (regular files) */
  content?: string;
}

interface StoredContent {
  file: string;
  size: number;
  mtime: string;
  ctime: string;
  racy: boolean;
}

function under(path: string, prefix: string): boolean {
  return prefix === '' || path === prefix || path.startsWith(`${prefix}/`);
}

function joinLayerPath(at: string, path: string): string {
  return at === '' ? path : path === '' ? at : `${at}/${path}`;
}

function syncFs(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sync', ['-f', path], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`sync -f ${path} exited with ${code}`))));
  });
}

async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  }));
}

export class Precopy {
  private readonly trees: Array<Map<string, TreeEntry>> = [];
  private readonly store = new Map<string, StoredContent>();
  private passes = 0;
  private generation = 0;

  /** `storeDir` must be empty or absent, and is the caller's to remove (dispose()). */
  constructor(private readonly sources: CopySource[], private readonly storeDir: string) {}

  /**
   * One pass over every source. `paused`: the sandbox is frozen, so nothing is racy and any
   * read error is a failure. A running pass after the first syncs the file system first (mmap).
   */
  async pass(paused: boolean): Promise<PassStats> {
    const started = performance.now();
    if (this.passes === 0) await mkdir(this.storeDir, { recursive: true });
    if (!paused && this.passes > 0) for (const root of new Set(this.sources.map((s) => s.root))) await syncFs(root);
    const scanStart = Date.now();
    const scanned = await Promise.all(this.sources.map(async (source, i) => {
      const previous = this.trees[i];
      const skip = (path: string): boolean => source.skip.some((s) => s !== '' && under(path, s));
      return scanTree(source.root, { frozen: paused, skip, ...(previous === undefined ? {} : { previous }) });
    }));
    let changed = 0;
    const toCopy: Array<{ key: string; source: number; entry: TreeEntry }> = [];
    const live = new Set<string>();
    scanned.forEach((tree, i) => {
      const before = this.trees[i];
      for (const entry of tree.values()) {
        const old = before?.get(entry.path);
        if (old === undefined || old.ctime !== entry.ctime || old.ino !== entry.ino || old.kind !== entry.kind) changed++;
        if (entry.kind !== 'file') continue;
        const key = `${i}:${entry.ino}`;
        if (live.has(key)) continue; // another name of an inode already handled
        live.add(key);
        const stored = this.store.get(key);
        const same = stored !== undefined && !stored.racy && stored.size === entry.size && stored.mtime === entry.mtime && stored.ctime === entry.ctime;
        if (!same) toCopy.push({ key, source: i, entry });
      }
      if (before !== undefined) for (const path of before.keys()) if (!tree.has(path)) changed++;
    });

    let bytes = 0;
    let files = 0;
    await eachLimited(toCopy, COPY_CONCURRENCY, async ({ key, source, entry }) => {
      const file = join(this.storeDir, `${source}-${entry.ino}-${++this.generation}`);
      const from = Buffer.concat([Buffer.from(`${this.sources[source]?.root ?? ''}/`), nameBytes(entry.path)]);
      try {
        await copyFile(from, file);
      } catch (err) {
        // Gone since the scan (running passes only): the next scan will not list it.
        if (paused || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        live.delete(key);
        return;
      }
      const old = this.store.get(key);
      if (old !== undefined) await rm(old.file, { force: true });
      this.store.set(key, { file, size: entry.size, mtime: entry.mtime, ctime: entry.ctime, racy: !paused && timeMs(entry.ctime) >= scanStart - RACY_MS });
      bytes += entry.size;
      files++;
    });
    for (const [key, stored] of [...this.store]) {
      if (live.has(key)) continue;
      this.store.delete(key);
      await rm(stored.file, { force: true });
    }
    this.trees.splice(0, this.trees.length, ...scanned);
    this.passes++;
    return {
      paused,
      ms: Math.round((performance.now() - started) * 10) / 10,
      entries: scanned.reduce((n, t) => n + t.size, 0),
      changed,
      files_copied: files,
      bytes_copied: bytes,
    };
  }

  /** Bytes a file's copy will need (regular files of the last scan, each inode once). */
  get bytesHeld(): number {
    let n = 0;
    for (const s of this.store.values()) n += s.size;
    return n;
  }

  /**
   * The captured trees as one list of entries in layer paths. A source at `at` contributes its
   * root as the directory `at` (flagged opaque when the source is), and hides whatever an earlier
   * source holds at or below `at`.
   */
  captured(): CapturedEntry[] {
    const byPath = new Map<string, CapturedEntry>();
    this.sources.forEach((source, i) => {
      const tree = this.trees[i];
      if (tree === undefined) throw new Error('captured() before the first pass');
      if (source.at !== '') for (const path of [...byPath.keys()]) if (under(path, source.at)) byPath.delete(path);
      for (const entry of tree.values()) {
        const layerPath = joinLayerPath(source.at, entry.path);
        const captured: CapturedEntry = { ...entry, layerPath, source: i };
        if (entry.path === '' && source.opaque) captured.xattrs = new Map([...entry.xattrs, ['trusted.overlay.opaque', Buffer.from('y')]]);
        if (entry.kind === 'file') {
          const stored = this.store.get(`${i}:${entry.ino}`);
          if (stored === undefined) throw new Error(`no copy of ${layerPath}`);
          captured.content = stored.file;
        }
        byPath.set(layerPath, captured);
      }
    });
    return [...byPath.values()];
  }

  async dispose(): Promise<void> {
    await rm(this.storeDir, { recursive: true, force: true });
  }
}
