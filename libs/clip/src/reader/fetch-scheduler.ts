/**
 * What the reader fetches besides the spans a read is waiting on, and when. The span store
 * serves demand reads itself (adjacent missing spans in one request, long runs as parallel
 * requests); this scheduler adds the guesses, each asked of the store as `warm` (fetch, verify,
 * cache; no data returned):
 *
 * - readahead: the second sequential read of a file (within 256 KiB of where the last ended)
 *   fetches the next stretch of it, a window that doubles per sequential read up to
 *   `readaheadBytes`; a file of at least `largeFileBytes` (when set) is fetched whole (up to
 *   `largeFileMaxBytes` from the first read) on its first read, in parallel requests;
 * - prefetch: an access record's ranges (access-record.ts), in the order they were first read;
 * - background fill: every span of the image not cached yet, at most `backgroundBytesPerSec`
 *   compressed bytes per second, one request at a time, never while a demand read or any
 *   readahead or prefetch is waiting, nor within `backgroundQuietMs` of a demand read; into
 *   the disk cache only, and at most `backgroundMaxBytes` of it (the host cache's budget is
 *   shared: a fill past it would evict what programs read).
 *
 * Readahead goes before prefetch. Queued spans are taken in order, and each request grows to
 * the queued spans next to it (same layer, either side) up to `maxRequestBytes`, so a record of
 * many small files adjacent in the layer costs few requests. At most `concurrency` of these
 * requests are in flight; demand reads are never queued behind them.
 *
 * Spans are the span store's: whatever layout the index has (checkpoint spacing, the caches
 * behind the store) this module only asks for span numbers and byte counts.
 */
import type { ClipIndex, FileData } from '../format/index-file';
import { DEFAULT_MAX_REQUEST_BYTES, spanAt, type FetchReason, type SpanRequest, type SpanStore } from './span-store';

export interface FetchSchedulerOptions {
  /** readahead and prefetch requests in flight at once (default 8) */
  concurrency?: number;
  /** largest readahead window in uncompressed bytes (default 8 MiB; 0: no readahead) */
  readaheadBytes?: number;
  /** files at least this large are fetched whole on their first read (default 0: never; FUSE mounts use 4 MiB) */
  largeFileBytes?: number;
  /** ...up to this many bytes from the first read (default 64 MiB) */
  largeFileMaxBytes?: number;
  /** largest request the scheduler makes from queued spans, compressed bytes (default: the store's 4 MiB) */
  maxRequestBytes?: number;
  /** background fill rate cap in compressed bytes per second (default 0: no background fill) */
  backgroundBytesPerSec?: number;
  /** the background fill stops after this many compressed bytes (default: no limit) */
  backgroundMaxBytes?: number;
  /** the background fill waits until no demand read has been fetching for this long (default 1000 ms) */
  backgroundQuietMs?: number;
  /** whether fetched spans have a disk cache to go to (no cache: no background fill) */
  diskCache?: boolean;
  /** how many finished requests `requestLog` keeps (default 10,000) */
  requestLogSize?: number;
  log?: (level: 'info' | 'warn', message: string, fields: Record<string, unknown>) => void;
}

export interface ReasonStats {
  requests: number;
  /** compressed bytes */
  bytes: number;
}

export interface SchedulerStats {
  /** finished range requests and their compressed bytes, by why they were made */
  requests: Record<FetchReason, ReasonStats>;
  /** spans waiting in the readahead and prefetch queues */
  queued: number;
  background_fill: 'off' | 'running' | 'done';
}

/** A set of queued spans someone waits for (a prefetch): resolves when all were fetched or found cached. */
class Batch {
  pending = 0;
  private resolveDone: () => void = () => undefined;
  readonly done = new Promise<void>((resolve) => {
    this.resolveDone = resolve;
  });

  settleOne(): void {
    if (--this.pending === 0) this.resolveDone();
  }
}

interface Wanted {
  layer: number;
  span: number;
  reason: 'readahead' | 'prefetch';
  batches: Batch[];
}

interface FileState {
  /** where the last read ended (file offset) */
  next: number;
  /** sequential reads in a row */
  streak: number;
  /** readahead asked up to here (file offset) */
  ahead: number;
  window: number;
}

const SEQUENTIAL_SLACK = 256 * 1024;
const INITIAL_WINDOW = 1024 * 1024;
const MAX_TRACKED_FILES = 4096;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class FetchScheduler {
  private readonly queues: Record<'readahead' | 'prefetch', Wanted[]> = { readahead: [], prefetch: [] };
  /** queued spans by `layer#span`, for coalescing and to queue a span once */
  private readonly queued = new Map<string, Wanted>();
  private active = 0;
  private readonly files = new Map<number, FileState>();
  private readonly log: NonNullable<FetchSchedulerOptions['log']>;
  private readonly requests: SpanRequest[] = [];
  private readonly byReason: Record<FetchReason, ReasonStats> = {
    demand: { requests: 0, bytes: 0 }, readahead: { requests: 0, bytes: 0 }, prefetch: { requests: 0, bytes: 0 }, background: { requests: 0, bytes: 0 },
  };
  private background: 'off' | 'running' | 'done' = 'off';
  private stopped = false;
  private readonly concurrency: number;
  private readonly maxRequestBytes: number;

  constructor(
    private readonly store: SpanStore,
    private readonly index: ClipIndex,
    private readonly opts: FetchSchedulerOptions = {},
  ) {
    this.log = opts.log ?? (() => undefined);
    this.concurrency = Math.max(1, opts.concurrency ?? 8);
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  }

  /** The span store reports each finished request here (SpanStoreOptions.onRequest). */
  recordRequest(request: SpanRequest): void {
    const stats = this.byReason[request.reason];
    stats.requests++;
    stats.bytes += request.bytes;
    this.requests.push(request);
    if (this.requests.length > (this.opts.requestLogSize ?? 10_000)) this.requests.shift();
  }

  /** The last finished requests, oldest first (times are this process's performance.now()). */
  requestLog(): SpanRequest[] {
    return [...this.requests];
  }

  get stats(): SchedulerStats {
    const r = this.byReason;
    return {
      requests: { demand: { ...r.demand }, readahead: { ...r.readahead }, prefetch: { ...r.prefetch }, background: { ...r.background } },
      queued: this.queued.size,
      background_fill: this.background,
    };
  }

  /**
   * A program reads `length` bytes at `offset` of file `fileId` (whose bytes are `data`): queue
   * readahead for a sequential reader, the whole file for a large one on its first read. Never
   * waits and never throws.
   */
  noteRead(fileId: number, data: FileData, offset: number, length: number): void {
    if (this.stopped) return;
    let state = this.files.get(fileId);
    const first = state === undefined;
    if (state === undefined) {
      if (this.files.size >= MAX_TRACKED_FILES) this.files.clear();
      state = { next: -1, streak: 0, ahead: 0, window: INITIAL_WINDOW };
      this.files.set(fileId, state);
    }
    const sequential = state.next >= 0 && Math.abs(offset - state.next) <= SEQUENTIAL_SLACK;
    state.streak = sequential ? state.streak + 1 : 0;
    state.next = offset + length;
    const large = this.opts.largeFileBytes ?? 0;
    if (first && large > 0 && data.size >= large) {
      const until = Math.min(data.size, offset + (this.opts.largeFileMaxBytes ?? 64 * 1024 * 1024));
      this.want(data, offset, until, 'readahead');
      state.ahead = until;
      return;
    }
    const maxWindow = this.opts.readaheadBytes ?? 8 * 1024 * 1024;
    if (state.streak >= 1 && maxWindow > 0) {
      const from = Math.max(offset + length, state.ahead);
      const until = Math.min(data.size, offset + length + state.window);
      if (until > from) {
        this.want(data, from, until, 'readahead');
        state.ahead = until;
        state.window = Math.min(state.window * 2, maxWindow);
      }
    }
  }

  /**
   * Queue byte ranges of files for prefetch, in the order given; resolves when every span they
   * touch has been fetched or found cached (fetch failures are logged, not thrown: a demand read
   * of the same span will try again). Returns the number of distinct spans they touch.
   */
  async prefetch(ranges: ReadonlyArray<{ data: FileData; offset: number; length: number }>): Promise<number> {
    const batch = new Batch();
    batch.pending = 1; // released below, once everything is queued
    const spans = new Set<string>();
    // Queue all of it first, then start: requests then grow over every neighbour the record names.
    for (const { data, offset, length } of ranges) {
      const end = Math.min(data.size, offset + length);
      if (end > offset) for (const s of this.want(data, offset, end, 'prefetch', batch, false)) spans.add(this.key(data.layer, s));
    }
    this.pump();
    batch.settleOne();
    await batch.done;
    return spans.size;
  }

  /** Start filling the disk cache with the rest of the image (no-op when the rate is 0 or there is no disk cache). */
  startBackgroundFill(): void {
    const rate = this.opts.backgroundBytesPerSec ?? 0;
    if (rate <= 0 || this.background !== 'off' || this.stopped) return;
    if (this.opts.diskCache === false) {
      this.log('warn', 'background fill needs a disk cache; not filling', {});
      return;
    }
    this.background = 'running';
    void this.fill(rate).then(
      () => {
        if (this.background === 'running') this.background = 'done';
      },
      (err: unknown) => {
        this.background = 'done';
        this.log('warn', 'background fill stopped', { err: err instanceof Error ? err.message : String(err) });
      },
    );
  }

  /** Drop every queued span and stop the background fill (requests in flight finish). */
  stop(): void {
    this.stopped = true;
    for (const w of this.queued.values()) for (const b of w.batches) b.settleOne();
    this.queued.clear();
    this.queues.readahead.length = 0;
    this.queues.prefetch.length = 0;
  }

  /** Resolves once nothing is queued or in flight here (tests, benchmarks). */
  async idle(): Promise<void> {
    while (this.queued.size > 0 || this.active > 0) await sleep(5);
  }

  private key(layer: number, span: number): string {
    return `${layer}#${span}`;
  }

  /** Queue the spans under file bytes [from, until) (`start`: and start fetching); returns their range. */
  private want(data: FileData, from: number, until: number, reason: 'readahead' | 'prefetch', batch?: Batch, start = true): Iterable<number> {
    const layer = this.index.layers[data.layer];
    if (layer === undefined || until <= from) return [];
    const first = spanAt(layer, data.offset + from);
    const last = spanAt(layer, data.offset + until - 1);
    for (let s = first; s <= last; s++) {
      if (this.store.isPresent(data.layer, s)) continue;
      const k = this.key(data.layer, s);
      let w = this.queued.get(k);
      if (w === undefined) {
        w = { layer: data.layer, span: s, reason, batches: [] };
        this.queued.set(k, w);
        this.queues[reason].push(w);
      } else if (reason === 'readahead' && w.reason === 'prefetch') {
        w.reason = 'readahead'; // needed sooner than the record thought: move it up
        this.queues.readahead.push(w);
      }
      if (batch !== undefined) {
        batch.pending++;
        w.batches.push(batch);
      }
    }
    if (start) this.pump();
    return Array.from({ length: last - first + 1 }, (_, i) => first + i);
  }

  /** The next queued span to fetch, readahead first; entries taken by coalescing are skipped. */
  private next(): Wanted | undefined {
    for (const reason of ['readahead', 'prefetch'] as const) {
      const queue = this.queues[reason];
      while (queue.length > 0) {
        const w = queue.shift();
        if (w !== undefined && this.queued.get(this.key(w.layer, w.span)) === w && w.reason === reason) return w;
      }
    }
    return undefined;
  }

  private take(w: Wanted, done: Wanted[]): void {
    this.queued.delete(this.key(w.layer, w.span));
    done.push(w);
  }

  private pump(): void {
    while (!this.stopped && this.active < this.concurrency) {
      const head = this.next();
      if (head === undefined) return;
      const taken: Wanted[] = [];
      this.take(head, taken);
      if (this.store.isPresent(head.layer, head.span)) {
        for (const b of head.batches) b.settleOne();
        continue;
      }
      // Grow the request over queued neighbours, both ways, while it stays under maxRequestBytes.
      let a = head.span;
      let b = head.span;
      for (let grew = true; grew;) {
        grew = false;
        const after = this.queued.get(this.key(head.layer, b + 1));
        if (after !== undefined && this.store.compressedBytes(head.layer, a, b + 1) <= this.maxRequestBytes) {
          this.take(after, taken);
          b++;
          grew = true;
        }
        const before = a > 0 ? this.queued.get(this.key(head.layer, a - 1)) : undefined;
        if (before !== undefined && this.store.compressedBytes(head.layer, a - 1, b) <= this.maxRequestBytes) {
          this.take(before, taken);
          a--;
          grew = true;
        }
      }
      this.active++;
      this.store.warm(head.layer, a, b, { reason: head.reason }).catch((err: unknown) => {
        this.log('warn', `${head.reason} failed; reads will fetch on demand`, { layer: head.layer, spans: `${a}-${b}`, err: err instanceof Error ? err.message : String(err) });
      }).finally(() => {
        this.active--;
        for (const w of taken) for (const batch of w.batches) batch.settleOne();
        this.pump();
      });
    }
  }

  /** Waits while anything more urgent than the background fill is queued or fetching, or a program read a moment ago. */
  private async yieldToOthers(): Promise<void> {
    const quiet = this.opts.backgroundQuietMs ?? 1000;
    while (!this.stopped && (this.store.demandInFlight > 0 || this.queued.size > 0 || this.active > 0
      || performance.now() - this.store.lastDemandAt < quiet)) await sleep(20);
  }

  private async fill(bytesPerSec: number): Promise<void> {
    const started = performance.now();
    let free = performance.now();
    let bytes = 0;
    for (let layer = 0; layer < this.index.layers.length; layer++) {
      const spans = this.index.layers[layer]?.spans.length ?? 0;
      let s = 0;
      while (s < spans) {
        await this.yieldToOthers();
        if (this.stopped) return;
        // The next run of spans not cached yet, up to maxRequestBytes.
        while (s < spans && (this.store.isPresent(layer, s) || await this.store.onDisk(layer, s))) s++;
        if (s >= spans) break;
        let b = s;
        while (b + 1 < spans && this.store.compressedBytes(layer, s, b + 1) <= this.maxRequestBytes
          && !this.store.isPresent(layer, b + 1) && !await this.store.onDisk(layer, b + 1)) b++;
        const size = this.store.compressedBytes(layer, s, b);
        const max = this.opts.backgroundMaxBytes;
        if (max !== undefined && bytes + size > max) {
          this.log('info', 'background fill stopped at its share of the host cache budget', { bytes, max_bytes: max, ms: Math.round(performance.now() - started) });
          return;
        }
        // Rate cap: this request may start once the previous ones' share of time has passed.
        const wait = free - performance.now();
        if (wait > 0) await sleep(wait);
        free = Math.max(free, performance.now()) + (size / bytesPerSec) * 1000;
        await this.yieldToOthers();
        if (this.stopped) return;
        try {
          await this.store.warm(layer, s, b, { reason: 'background', remember: false, before: () => this.yieldToOthers() });
          bytes += size;
          s = b + 1;
        } catch (err) {
          // The registry is down or answered garbage: try these spans again later, reads first.
          this.log('warn', 'background fill request failed; retrying in 5 s', { layer, spans: `${s}-${b}`, err: err instanceof Error ? err.message : String(err) });
          await sleep(5000);
        }
      }
    }
    this.log('info', 'background fill done', { bytes, ms: Math.round(performance.now() - started) });
  }
}
