/**
 * Filesystem view of a clip index, shaped for a FUSE binding: metadata comes
 * from the index alone; file contents are fetched lazily through the
 * SpanStore. The index is immutable, so path lookups (including misses) are
 * cached for the life of the reader.
 *
 * Paths, names, link targets and xattr names are byte strings (../names.ts):
 * exactly the bytes of the image's tar entries, which is what a FUSE binding
 * passing bytes needs. Text typed by a person goes through `nameFromText`.
 */
import { ClipError, fsError } from '../errors';
import { displayName } from '../names';
import { ClipIndex, type ClipStat } from '../format/index-file';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../format/types';
import type { AccessPack } from './access-pack';
import type { AccessRecord } from './access-record';
import { FetchScheduler, type FetchSchedulerOptions, type SchedulerStats } from './fetch-scheduler';
import { SpanStore, type FetchStats, type SpanRequest, type SpanStoreOptions } from './span-store';

export interface DirEntry {
  name: string;
  ino: number;
  /** st_mode of the entry (type and permission bits) */
  mode: number;
}

export type ClipReaderOptions = SpanStoreOptions & {
  /** most path lookups to remember (default 200k) */
  lookupCacheSize?: number;
  /** readahead, prefetch and background fill (fetch-scheduler.ts) */
  fetch?: FetchSchedulerOptions;
};

/** What a prefetch of an access record did. */
export interface PrefetchResult {
  /** files of the record found in this image (regular files) */
  files: number;
  /** files of the record that are not regular files here (changed or gone since it was recorded) */
  missing: number;
  /** distinct spans asked for (cached ones included) */
  spans: number;
  ms: number;
}

export class ClipReader {
  private readonly store: SpanStore;
  private readonly scheduler: FetchScheduler;
  private pack: AccessPack | undefined;
  private readonly lookups = new Map<string, number | ClipError>();
  private readonly lookupLimit: number;

  constructor(
    readonly index: ClipIndex,
    opts: ClipReaderOptions = {},
  ) {
    const onRequest = opts.onRequest;
    this.store = new SpanStore(index, {
      ...opts,
      onRequest: (request) => {
        this.scheduler.recordRequest(request);
        onRequest?.(request);
      },
    });
    this.scheduler = new FetchScheduler(this.store, index, {
      diskCache: opts.cacheDir !== undefined,
      ...(opts.maxRequestBytes === undefined ? {} : { maxRequestBytes: opts.maxRequestBytes }),
      ...opts.fetch,
    });
    this.lookupLimit = opts.lookupCacheSize ?? 200_000;
  }

  static async open(indexPath: string, opts: ClipReaderOptions = {}): Promise<ClipReader> {
    return new ClipReader(await ClipIndex.load(indexPath), opts);
  }

  /** bytes and requests fetched from the source so far */
  get stats(): FetchStats {
    return { ...this.store.stats };
  }

  /** requests and bytes by why they were made (demand, readahead, prefetch, background), queue, fill state */
  get fetchStats(): SchedulerStats {
    return this.scheduler.stats;
  }

  /** the last range requests made, oldest first, with their times (this process's performance.now()) and reasons */
  requestLog(): SpanRequest[] {
    return this.scheduler.requestLog();
  }

  /** lstat: a symlink in the last component is not followed */
  async stat(path: string): Promise<ClipStat> {
    return this.index.stat(this.lookup(path, false));
  }

  async readdir(path: string): Promise<string[]> {
    return this.index.children(this.dirId(path)).map((c) => c.name);
  }

  /** readdir with the type of each entry (no extra lookups; for readdirplus) */
  async readdirEntries(path: string): Promise<DirEntry[]> {
    return this.index.children(this.dirId(path)).map((c) => ({ name: c.name, ino: c.id + 1, mode: this.index.mode(c.id) }));
  }

  async readlink(path: string): Promise<string> {
    const id = this.lookup(path, false);
    if ((this.index.mode(id) & S_IFMT) !== S_IFLNK) throw fsError('EINVAL', path, 'not a symbolic link');
    return this.index.linkTarget(id);
  }

  /** Resolve symlinks inside the image (like realpath(3), relative to the image root). */
  async realpath(path: string): Promise<string> {
    return this.index.resolvePath(path, true).path;
  }

  async getxattr(path: string, name: string): Promise<Buffer> {
    const value = this.index.xattrs(this.lookup(path, false)).get(name);
    if (!value) throw fsError('ENODATA', path, `no attribute '${displayName(name)}'`);
    return value;
  }

  async listxattr(path: string): Promise<string[]> {
    return [...this.index.xattrs(this.lookup(path, false)).keys()];
  }

  /** Read `length` bytes at `offset` (symlinks followed, like open(2)+pread(2)). */
  async read(path: string, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw fsError('EINVAL', path, `bad offset/length ${offset}/${length}`);
    }
    const id = this.lookup(path, true);
    const mode = this.index.mode(id);
    if ((mode & S_IFMT) === S_IFDIR) throw fsError('EISDIR', path);
    if ((mode & S_IFMT) !== S_IFREG) throw fsError('EINVAL', path, 'not a regular file');
    const data = this.index.fileData(id);
    if (!data || offset >= data.size || length === 0) return Buffer.alloc(0);
    const n = Math.min(length, data.size - offset);
    const layer = this.index.layers[data.layer];
    if (this.pack !== undefined && layer !== undefined) {
      // Bytes a pack holds: no span fetch and no readahead (the pack has what the last run read).
      const packed = await this.pack.lookup(layer.diffId, data.offset + offset, n);
      if (packed !== undefined) return packed;
    }
    this.scheduler.noteRead(id, data, offset, n);
    const out = await this.store.read(data.layer, data.offset + offset, n);
    if (out.length !== n) throw new ClipError('EIO', `short read of '${path}': ${out.length} of ${n} bytes`);
    return out;
  }

  /**
   * Warm the caches with the whole contents of `paths` (missing paths and non-files are skipped),
   * through the fetch scheduler's prefetch queue: adjacent files share requests, `concurrency`
   * (the scheduler's, default 8) go out at once. Returns how many files were asked for.
   */
  async prefetch(paths: readonly string[]): Promise<number> {
    const ranges = paths.flatMap((path) => {
      const data = this.regularFileData(path);
      return data === undefined ? [] : [{ data, offset: 0, length: data.size }];
    });
    await this.scheduler.prefetch(ranges);
    return ranges.length;
  }

  /**
   * Fetch what an access record says a program read, in the order it first read it, into the
   * caches; resolves when all of it is fetched or cached. Reads do not wait for it: they go
   * straight to the registry for whatever is not there yet.
   */
  async prefetchRecord(record: AccessRecord): Promise<PrefetchResult> {
    const started = performance.now();
    let missing = 0;
    const ranges = [];
    for (const file of record.files) {
      const data = this.regularFileData(file.path);
      if (data === undefined) {
        missing++;
        continue;
      }
      const diffId = this.index.layers[data.layer]?.diffId ?? '';
      for (const [offset, length] of file.ranges) {
        // What the pack in use holds comes with it.
        if (this.pack?.covers(diffId, data.offset + offset, Math.min(length, data.size - offset)) === true) continue;
        ranges.push({ data, offset, length });
      }
    }
    const spans = await this.scheduler.prefetch(ranges);
    return { files: record.files.length - missing, missing, spans, ms: Math.round(performance.now() - started) };
  }

  /**
   * Serve reads of the ranges `pack` holds from it (waiting for those still on their way), and
   * leave them out of prefetchRecord. Call before prefetchRecord; start the pack's stream too.
   */
  usePack(pack: AccessPack): void {
    this.pack = pack;
  }

  /** Fetch the rest of the image into the disk cache at the configured rate (fetch.backgroundBytesPerSec; 0: no-op). */
  startBackgroundFill(): void {
    this.scheduler.startBackgroundFill();
  }

  /** Stop queued readahead, prefetch and the background fill (requests in flight finish). */
  stopFetching(): void {
    this.scheduler.stop();
  }

  /** Resolves once no readahead or prefetch is queued or in flight (tests, benchmarks). */
  fetchIdle(): Promise<void> {
    return this.scheduler.idle();
  }

  private regularFileData(path: string): ReturnType<ClipIndex['fileData']> {
    let id: number;
    try {
      id = this.lookup(path, true);
    } catch {
      return undefined;
    }
    return this.index.isRegular(id) ? this.index.fileData(id) : undefined;
  }

  async readFile(path: string): Promise<Buffer> {
    const st = this.index.stat(this.lookup(path, true));
    return this.read(path, 0, st.size);
  }

  private dirId(path: string): number {
    const id = this.lookup(path, true);
    if (!this.index.isDir(id)) throw fsError('ENOTDIR', path);
    return id;
  }

  private lookup(path: string, followLast: boolean): number {
    const key = `${followLast ? 'F' : 'L'}${path}`;
    const hit = this.lookups.get(key);
    if (hit !== undefined) {
      if (typeof hit === 'number') return hit;
      throw hit;
    }
    let result: number | ClipError;
    try {
      result = this.index.resolve(path, followLast);
    } catch (err) {
      if (!(err instanceof ClipError)) throw err;
      result = err;
    }
    if (this.lookups.size >= this.lookupLimit) this.lookups.clear();
    this.lookups.set(key, result);
    if (typeof result === 'number') return result;
    throw result;
  }
}
