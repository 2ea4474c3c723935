/**
 * Serves uncompressed byte ranges of layers, span by span:
 * memory LRU -> host disk cache -> range requests to the source for the
 * missing spans: adjacent missing spans go in one request, inflated from the
 * first span's checkpoint, and a long run is cut into requests of at most
 * `maxRequestBytes` compressed bytes that go out in parallel. Every span is
 * checked against its sha256 before it is used or cached; concurrent reads of
 * one span share one fetch. `warm` fetches spans without reading them (the
 * fetch scheduler's readahead, prefetch and background fill go through it).
 */
import { createHash, webcrypto } from 'node:crypto';
import { Decompress as ZstdDecompress } from 'fzstd';
import { ClipError } from '../errors';
import type { ClipIndex } from '../format/index-file';
import type { LayerInfo, SpanInfo } from '../format/types';
import { inflateFromCheckpointAsync } from '../gzip/realign';
import { FallbackLayerSource, type LayerSource } from '../source';
import { SpanDiskCache } from './disk-cache';

export interface FetchStats {
  /** range or stream requests made to the source (registry) */
  requests: number;
  /** compressed bytes received from the source */
  bytes: number;
  /** spans inflated and verified from source bytes */
  spansFetched: number;
  /** spans served from the disk cache */
  diskHits: number;
  /** spans served from memory */
  memoryHits: number;
  /** uncompressed bytes of the spans served from the disk cache and from memory */
  diskHitBytes: number;
  memoryHitBytes: number;
  /** seconds spent inflating (gzip: from checkpoints on the thread pool, elapsed) or decompressing (zstd: on this thread) source bytes */
  inflateSeconds: number;
  /** reads a tier of a FallbackLayerSource failed (unreachable, cold, or bytes failing their digest) and the next tier served */
  fallbacks: number;
}

/** Why spans are fetched: a read waiting on them, or one of the fetch scheduler's guesses. */
export type FetchReason = 'demand' | 'readahead' | 'prefetch' | 'background';

/** One range request to the source, as `onRequest` reports it. */
export interface SpanRequest {
  /** performance.now() of this process when the request went out (ms) */
  at: number;
  /** how long it took, inflate and verification included (ms) */
  ms: number;
  layer: number;
  /** spans first..last of the layer */
  first: number;
  last: number;
  /** compressed bytes received */
  bytes: number;
  reason: FetchReason;
}

export interface SpanStoreOptions {
  source?: LayerSource;
  /** host-wide disk cache directory (optional) */
  cacheDir?: string;
  /** bytes of verified spans kept in memory (default 64 MiB) */
  memoryBytes?: number;
  /** how long to wait for another process fetching the same span (default 10 s) */
  lockWaitMs?: number;
  /**
   * Largest single range request, in compressed bytes (default 4 MiB): a longer run of missing
   * spans goes out as several requests at once. zstd layers are read as one stream regardless.
   */
  maxRequestBytes?: number;
  /** told about every range request once it is done (a request log) */
  onRequest?: (request: SpanRequest) => void;
}

/** Default `maxRequestBytes`: a few spans per request, several requests in flight. */
export const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024;

export class SpanStore {
  readonly stats: FetchStats = emptyFetchStats();
  private readonly disk: SpanDiskCache | undefined;
  private readonly memory = new Map<string, Buffer>();
  private memoryUsed = 0;
  private readonly memoryLimit: number;
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private demandFetches = 0;
  private lastDemand = -Infinity;

  constructor(
    private readonly index: ClipIndex,
    private readonly opts: SpanStoreOptions,
  ) {
    this.disk = opts.cacheDir ? new SpanDiskCache(opts.cacheDir) : undefined;
    this.memoryLimit = opts.memoryBytes ?? 64 * 1024 * 1024;
  }

  /** range requests for reads that wait on them, in flight now (the background fill yields to these) */
  get demandInFlight(): number {
    return this.demandFetches;
  }

  /** performance.now() when the last demand request started or ended (-Infinity: none yet) */
  get lastDemandAt(): number {
    return this.demandFetches > 0 ? performance.now() : this.lastDemand;
  }

  /** bytes [offset, offset+length) of layer `layerIndex`'s uncompressed stream */
  async read(layerIndex: number, offset: number, length: number): Promise<Buffer> {
    const layer = this.layer(layerIndex);
    if (length <= 0) return Buffer.alloc(0);
    const end = Math.min(offset + length, layer.uncompressedSize);
    const first = spanAt(layer, offset);
    const last = spanAt(layer, end - 1);
    const parts = await this.spans(layerIndex, first, last, 'demand', true);
    const firstSpan = layer.spans[first];
    if (!firstSpan) throw new ClipError('INDEX_CORRUPT', 'span out of range');
    const joined = parts.length === 1 && parts[0] ? parts[0] : Buffer.concat(parts);
    return joined.subarray(offset - firstSpan.uoff, end - firstSpan.uoff);
  }

  /**
   * Make spans first..last of a layer present (memory, disk cache, or a fetch in flight) without
   * reading them: spans already present cost nothing (the disk cache is only stat'ed). With
   * `remember: false` fetched spans go to the disk cache only, not the memory LRU (a background
   * fill must not push out what programs read); `before` is awaited right before the requests go
   * out (the background fill waits for reads there). Resolves when they are fetched and verified.
   */
  async warm(layerIndex: number, first: number, last: number, opts: { reason: FetchReason; remember?: boolean; before?: () => Promise<void> }): Promise<void> {
    const layer = this.layer(layerIndex);
    const missing: number[] = [];
    for (let s = Math.max(0, first); s <= Math.min(last, layer.spans.length - 1); s++) {
      if (this.isPresent(layerIndex, s)) continue;
      const span = layer.spans[s];
      if (span !== undefined && this.disk !== undefined && await this.disk.has(layer.diffId, span)) continue;
      missing.push(s);
    }
    const runs: Array<Promise<Buffer[]>> = [];
    for (let i = 0; i < missing.length;) {
      let j = i;
      while (j + 1 < missing.length && missing[j + 1] === (missing[j] ?? 0) + 1) j++;
      runs.push(this.spans(layerIndex, missing[i] ?? 0, missing[j] ?? 0, opts.reason, opts.remember ?? true, opts.before));
      i = j + 1;
    }
    await Promise.all(runs);
  }

  /** Whether span `s` of a layer is in the disk cache (stat only; false without one). */
  async onDisk(layerIndex: number, s: number): Promise<boolean> {
    const layer = this.layer(layerIndex);
    const span = layer.spans[s];
    return span !== undefined && this.disk !== undefined && this.disk.has(layer.diffId, span);
  }

  /** Whether span `s` of a layer is in memory or being fetched (no I/O). */
  isPresent(layerIndex: number, s: number): boolean {
    const key = this.key(this.layer(layerIndex), s);
    return this.memory.has(key) || this.inflight.has(key);
  }

  /** Bytes a request for spans a..b of a layer transfers (gzip: from a's checkpoint to b+1's, as fetchAndVerify asks). */
  compressedBytes(layerIndex: number, a: number, b: number): number {
    const layer = this.layer(layerIndex);
    const first = layer.spans[a];
    const last = layer.spans[b];
    if (first === undefined || last === undefined) return 0;
    if (layer.compression !== 'gzip') return last.uoff + last.ulen - first.uoff;
    const { start, end } = gzipRequestRange(layer, a, b);
    return end - start + 1;
  }

  private layer(i: number): LayerInfo {
    const layer = this.index.layers[i];
    if (!layer) throw new ClipError('INDEX_CORRUPT', `layer ${i} not in the index`);
    return layer;
  }

  private key(layer: LayerInfo, s: number): string {
    return `${layer.diffId}#${s}`;
  }

  private async spans(layerIndex: number, first: number, last: number, reason: FetchReason, remember: boolean, before?: () => Promise<void>): Promise<Buffer[]> {
    const layer = this.layer(layerIndex);
    const results: Array<Promise<Buffer> | Buffer | undefined> = [];
    const claims: Array<() => Promise<void>> = [];
    /** spans this call holds in `inflight` before their fetch starts, by index in `results` */
    const reserved = new Map<number, Reserved>();
    try {
      return await this.spansReserved(layerIndex, layer, first, last, reason, remember, results, claims, reserved, before);
    } finally {
      for (const [i, slot] of reserved) {
        slot.reject(new ClipError('EIO', 'internal: span claimed but not fetched'));
        const k = this.key(layer, first + i);
        if (this.inflight.get(k) === slot.promise) this.inflight.delete(k);
      }
    }
  }

  private async spansReserved(
    layerIndex: number, layer: LayerInfo, first: number, last: number, reason: FetchReason, remember: boolean,
    results: Array<Promise<Buffer> | Buffer | undefined>, claims: Array<() => Promise<void>>, reserved: Map<number, Reserved>,
    before: (() => Promise<void>) | undefined,
  ): Promise<Buffer[]> {
    for (let s = first; s <= last; s++) {
      const k = this.key(layer, s);
      const mem = this.memory.get(k);
      if (mem) {
        this.memory.delete(k); // LRU: move to the end
        this.memory.set(k, mem);
        this.stats.memoryHits++;
        this.stats.memoryHitBytes += mem.length;
        results.push(mem);
        continue;
      }
      results.push(this.inflight.get(k));
    }
    if (this.disk) {
      await Promise.all(
        results.map(async (r, i) => {
          if (r !== undefined) return;
          const span = layer.spans[first + i];
          const disk = this.disk;
          if (!span || !disk) return;
          const data = await disk.get(layer.diffId, span);
          if (data) {
            this.stats.diskHits++;
            this.stats.diskHitBytes += data.length;
            this.remember(this.key(layer, first + i), data);
            results[i] = data;
          }
        }),
      );
      // Someone may have started fetching while we looked at the disk.
      for (let i = 0; i < results.length; i++) results[i] ??= this.inflight.get(this.key(layer, first + i));
      // Claim the rest across processes (another process fetching one: wait for its cache file).
      // Each span is ours in this process from before the claim's first await: a concurrent read
      // of it (readahead, prefetch, the kernel's parallel reads) joins instead of finding the
      // claim taken and waiting for a file that this very process writes.
      for (let i = 0; i < results.length; i++) {
        const span = layer.spans[first + i];
        if (results[i] !== undefined || !span) continue;
        const k = this.key(layer, first + i);
        const joined = this.inflight.get(k);
        if (joined) {
          results[i] = joined;
          continue;
        }
        const slot = reserve();
        this.inflight.set(k, slot.promise);
        reserved.set(i, slot);
        const release = await this.disk.claim(layer.diffId, span);
        if (release) {
          claims.push(release);
        } else {
          reserved.delete(i);
          if (this.inflight.get(k) === slot.promise) this.inflight.delete(k);
          const other = this.waitForOtherProcess(layerIndex, first + i);
          slot.resolve(other);
          results[i] = other;
        }
      }
    }
    if (before !== undefined && results.some((r) => r === undefined)) await before();
    // Missing spans: one fetch per contiguous run, cut into requests of at most maxRequestBytes.
    let runStart = -1;
    for (let i = 0; i <= results.length; i++) {
      const missing = i < results.length && results[i] === undefined;
      if (missing && runStart < 0) runStart = i;
      if (!missing && runStart >= 0) {
        for (const [a, b] of this.requestsFor(layerIndex, first + runStart, first + i - 1)) {
          const fetched = this.fetchRun(layerIndex, a, b, reason, remember);
          for (let s = a; s <= b; s++) {
            const p = fetched[s - a];
            results[s - first] = p;
            if (p !== undefined) reserved.get(s - first)?.resolve(p);
            reserved.delete(s - first);
          }
        }
        runStart = -1;
      }
    }
    try {
      return await Promise.all(results.map((r) => r ?? Promise.reject(new ClipError('EIO', 'internal: span not scheduled'))));
    } finally {
      await Promise.all(claims.map((release) => release()));
    }
  }

  private waitForOtherProcess(layerIndex: number, s: number): Promise<Buffer> {
    const layer = this.layer(layerIndex);
    const span = layer.spans[s];
    const disk = this.disk;
    const key = this.key(layer, s);
    const p = (async () => {
      const deadline = Date.now() + (this.opts.lockWaitMs ?? 10_000);
      while (span && disk && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        const data = await disk.get(layer.diffId, span);
        if (data) {
          this.stats.diskHits++;
          this.stats.diskHitBytes += data.length;
          this.remember(key, data);
          return data;
        }
        // Claim released and still no file: the fetch failed, or the span was evicted already.
        if (!(await disk.claimed(layer.diffId, span))) break;
      }
      const [fetched] = this.fetchRun(layerIndex, s, s, 'demand', true); // the other process died or is slow
      if (!fetched) throw new ClipError('EIO', 'internal: span not scheduled');
      return fetched;
    })();
    this.inflight.set(key, p);
    p.catch(() => undefined).finally(() => {
      if (this.inflight.get(key) === p) this.inflight.delete(key);
    });
    return p;
  }

  /** Spans a..b cut into runs of at most maxRequestBytes compressed (at least one span each; zstd: one run). */
  private requestsFor(layerIndex: number, a: number, b: number): Array<[number, number]> {
    const layer = this.layer(layerIndex);
    if (layer.compression === 'zstd') return [[a, b]];
    const limit = this.opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    const out: Array<[number, number]> = [];
    let start = a;
    for (let s = a; s <= b; s++) {
      if (s > start && this.compressedBytes(layerIndex, start, s) > limit) {
        out.push([start, s - 1]);
        start = s;
      }
    }
    out.push([start, b]);
    return out;
  }

  /** Start one fetch for spans a..b; every span gets its own shared promise. */
  private fetchRun(layerIndex: number, a: number, b: number, reason: FetchReason, remember: boolean): Array<Promise<Buffer>> {
    const layer = this.layer(layerIndex);
    const started = performance.now();
    const bytesBefore = this.stats.bytes;
    if (reason === 'demand') {
      this.demandFetches++;
      this.lastDemand = started;
    }
    const run = this.fetchAndVerify(layer, a, b, remember);
    void run.then(() => {
      // concurrent fetches add to stats.bytes at once: report this request's own size (zstd: what arrived meanwhile)
      this.opts.onRequest?.({ at: started, ms: performance.now() - started, layer: layerIndex, first: a, last: b,
        bytes: layer.compression === 'zstd' ? this.stats.bytes - bytesBefore : this.compressedBytes(layerIndex, a, b), reason });
    }, () => undefined).finally(() => {
      if (reason === 'demand') {
        this.demandFetches--;
        this.lastDemand = performance.now();
      }
    });
    const out: Array<Promise<Buffer>> = [];
    for (let s = a; s <= b; s++) {
      const k = this.key(layer, s);
      const p = run.then((bufs) => {
        const buf = bufs[s - a];
        if (!buf) throw new ClipError('EIO', `internal: span ${s} missing from fetch`);
        return buf;
      });
      p.catch(() => undefined).finally(() => this.inflight.delete(k));
      this.inflight.set(k, p);
      out.push(p);
    }
    return out;
  }

  /**
   * Spans a..b from the source, verified. With tiers (FallbackLayerSource: a zone cache, then the
   * registry) each is tried in turn, and bytes that fail their span digest count as that tier
   * failing: a corrupt cache never serves wrong data, nor fails a read the registry can serve.
   */
  private async fetchAndVerify(layer: LayerInfo, a: number, b: number, remember: boolean): Promise<Buffer[]> {
    const source = this.opts.source;
    if (!source) {
      throw new ClipError('EIO', `layer ${layer.digest} is not cached and no source (registry) is configured`);
    }
    if (!(source instanceof FallbackLayerSource)) return this.fetchAndVerifyFrom(source, layer, a, b, remember);
    for (const [i, tier] of source.tiers.entries()) {
      try {
        return await this.fetchAndVerifyFrom(tier, layer, a, b, remember);
      } catch (err) {
        if (i === source.tiers.length - 1) throw err;
        this.stats.fallbacks++;
        source.onFallback?.(i, err);
      }
    }
    throw new ClipError('EIO', 'internal: no tier to read from');
  }

  private async fetchAndVerifyFrom(source: LayerSource, layer: LayerInfo, a: number, b: number, remember: boolean): Promise<Buffer[]> {
    const spans = layer.spans.slice(a, b + 1);
    if (layer.compression === 'zstd') {
      const wanted = await this.fetchZstd(source, layer, a, b, remember);
      this.stats.spansFetched += wanted.length;
      return wanted;
    }
    let pieces: Buffer[];
    {
      const firstSpan = spans[0];
      const lastSpan = spans[spans.length - 1];
      if (!firstSpan || !lastSpan) throw new ClipError('INDEX_CORRUPT', 'empty span run');
      let out: Buffer;
      if (layer.compression === 'gzip') {
        const { start, end } = gzipRequestRange(layer, a, b);
        const compressed = await this.fetchRange(source, layer, start, end);
        out = await this.inflateRun(layer, a, b, compressed, start);
      } else {
        out = await this.fetchRange(source, layer, firstSpan.uoff, lastSpan.uoff + lastSpan.ulen - 1);
      }
      pieces = [];
      let pos = 0;
      for (const s of spans) {
        pieces.push(out.subarray(pos, pos + s.ulen));
        pos += s.ulen;
      }
    }
    // Hashed on the thread pool, all at once; a mismatch fails the run before anything is kept.
    await Promise.all(spans.map((span, i) => verifySpanAsync(layer, a + i, span, pieces[i])));
    const verified: Buffer[] = [];
    for (let i = 0; i < spans.length; i++) {
      const span = spans[i];
      const data = pieces[i];
      if (!span || !data) throw new ClipError('EIO', 'internal: span count mismatch');
      this.stats.spansFetched++;
      const copy = Buffer.from(data); // detach from the larger inflate buffer
      if (remember) this.remember(this.key(layer, a + i), copy);
      if (this.disk) await this.disk.put(layer.diffId, span, copy);
      verified.push(copy);
    }
    return verified;
  }

  /**
   * Inflate spans a..b from one fetched buffer. Usually one inflate from span
   * a's checkpoint covers them all; a multi-member gzip stops at a member's
   * end, and inflation resumes from the next span's own checkpoint.
   */
  private async inflateRun(layer: LayerInfo, a: number, b: number, compressed: Buffer, base: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let s = a;
    while (s <= b) {
      const span = layer.spans[s];
      if (!span) break;
      const from = (span.bits > 0 ? span.coff - 1 : span.coff) - base;
      // Off the event loop: a mount keeps answering reads while this inflates.
      const inflateStarted = performance.now();
      const out = await inflateFromCheckpointAsync(compressed.subarray(from), span.bits, this.index.window(span));
      this.stats.inflateSeconds += (performance.now() - inflateStarted) / 1000;
      let used = 0;
      const first = s;
      while (s <= b) {
        const cur = layer.spans[s];
        if (!cur || used + cur.ulen > out.length) break;
        used += cur.ulen;
        s++;
      }
      parts.push(out.subarray(0, used));
      if (s === first) break; // not even one span: let verification report it
    }
    return parts.length === 1 && parts[0] ? parts[0] : Buffer.concat(parts);
  }

  private async fetchRange(source: LayerSource, layer: LayerInfo, start: number, end: number): Promise<Buffer> {
    this.stats.requests++;
    let buf: Buffer;
    try {
      buf = await source.readRange(layer.digest, start, end, layer.size);
    } catch (err) {
      if (err instanceof ClipError) throw err;
      throw new ClipError('EIO', `reading ${layer.digest} bytes ${start}-${end}: ${(err as Error).message}`, undefined, {
        cause: err,
      });
    }
    this.stats.bytes += buf.length;
    // Every range asked for lies inside the blob: anything else is the source's fault, and
    // inflating it would only fail later with a less useful message.
    if (buf.length !== end - start + 1) {
      throw new ClipError('EIO', `reading ${layer.digest} bytes ${start}-${end}: the source answered ${buf.length} bytes instead of ${end - start + 1}`);
    }
    return buf;
  }

  /**
   * zstd has no checkpoints: decompress from the start. Every span passed on
   * the way is verified and cached, so the cost is paid once per host.
   */
  private async fetchZstd(source: LayerSource, layer: LayerInfo, a: number, b: number, remember: boolean): Promise<Buffer[]> {
    this.stats.requests++;
    const stream = await source.openStream(layer.digest);
    const wanted: Buffer[] = [];
    let cur: Buffer[] = [];
    let curLen = 0;
    let s = 0;
    const completed: Array<{ index: number; data: Buffer }> = [];
    const dec = new ZstdDecompress((chunk) => {
      let pos = 0;
      const data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      while (pos < data.length) {
        const span = layer.spans[s];
        if (!span) throw new ClipError('LAYER_CORRUPT', `${layer.digest}: more data than the index says`);
        const n = Math.min(span.ulen - curLen, data.length - pos);
        cur.push(Buffer.from(data.subarray(pos, pos + n)));
        curLen += n;
        pos += n;
        if (curLen === span.ulen) {
          completed.push({ index: s, data: Buffer.concat(cur) });
          cur = [];
          curLen = 0;
          s++;
        }
      }
    });
    const drain = async (): Promise<void> => {
      for (const { index, data } of completed.splice(0)) {
        const span = layer.spans[index];
        if (!span) continue;
        verifySpan(layer, index, span, data);
        if (index >= a && index <= b) wanted.push(data);
        if (remember) this.remember(this.key(layer, index), data);
        if (this.disk) await this.disk.put(layer.diffId, span, data);
      }
    };
    try {
      for await (const chunk of stream) {
        this.stats.bytes += chunk.length;
        const inflateStarted = performance.now();
        dec.push(chunk);
        this.stats.inflateSeconds += (performance.now() - inflateStarted) / 1000;
        await drain();
        if (s > b && !this.disk) break; // without a disk cache, stop once we have what we need
      }
      if (s <= b) dec.push(new Uint8Array(0), true);
      await drain();
    } catch (err) {
      if (err instanceof ClipError) throw err;
      throw new ClipError('LAYER_CORRUPT', `${layer.digest}: zstd: ${(err as Error).message}`, undefined, { cause: err });
    }
    if (wanted.length !== b - a + 1) throw new ClipError('LAYER_CORRUPT', `${layer.digest}: zstd stream ended early`);
    return wanted;
  }

  private remember(key: string, data: Buffer): void {
    if (data.length > this.memoryLimit) return;
    const old = this.memory.get(key);
    if (old) {
      this.memory.delete(key);
      this.memoryUsed -= old.length;
    }
    this.memory.set(key, data);
    this.memoryUsed += data.length;
    for (const [k, v] of this.memory) {
      if (this.memoryUsed <= this.memoryLimit) break;
      this.memory.delete(k);
      this.memoryUsed -= v.length;
    }
  }
}

/** All counters at zero (a new store, or the base of a delta). */
export function emptyFetchStats(): FetchStats {
  return { requests: 0, bytes: 0, spansFetched: 0, diskHits: 0, memoryHits: 0, diskHitBytes: 0, memoryHitBytes: 0, inflateSeconds: 0, fallbacks: 0 };
}

/** A promise to be settled later by whoever holds it (a span claimed before its fetch starts). */
interface Reserved {
  promise: Promise<Buffer>;
  resolve: (value: Promise<Buffer> | Buffer) => void;
  reject: (err: Error) => void;
}

function reserve(): Reserved {
  let resolve: Reserved['resolve'] = () => undefined;
  let reject: Reserved['reject'] = () => undefined;
  const promise = new Promise<Buffer>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/** The compressed bytes [start, end] (inclusive) that hold spans a..b of a gzip layer: from a's checkpoint (and the byte with its leftover bits) through b+1's. */
function gzipRequestRange(layer: LayerInfo, a: number, b: number): { start: number; end: number } {
  const first = layer.spans[a];
  if (first === undefined) throw new ClipError('INDEX_CORRUPT', `span ${a} out of range`);
  const next = layer.spans[b + 1];
  return { start: first.bits > 0 ? first.coff - 1 : first.coff, end: Math.min(next ? next.coff : layer.size - 1, layer.size - 1) };
}

export function spanAt(layer: LayerInfo, offset: number): number {
  let lo = 0;
  let hi = layer.spans.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    const s = layer.spans[mid];
    if (s && s.uoff <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function verifySpan(layer: LayerInfo, index: number, span: SpanInfo, data: Buffer): void {
  if (data.length !== span.ulen || !createHash('sha256').update(data).digest().equals(span.sha256)) throw spanCorrupt(layer, index, span);
}

/** verifySpan with the hash computed on the thread pool (WebCrypto), leaving the event loop free. */
async function verifySpanAsync(layer: LayerInfo, index: number, span: SpanInfo, data: Buffer | undefined): Promise<void> {
  if (data === undefined || data.length !== span.ulen) throw spanCorrupt(layer, index, span);
  const digest = Buffer.from(await webcrypto.subtle.digest('SHA-256', data));
  if (!digest.equals(span.sha256)) throw spanCorrupt(layer, index, span);
}

function spanCorrupt(layer: LayerInfo, index: number, span: SpanInfo): ClipError {
  return new ClipError(
    'SPAN_CORRUPT',
    `layer ${layer.digest} span ${index} (bytes ${span.uoff}+${span.ulen}) failed verification: the registry served corrupt data`,
    { layer: layer.digest, span: index },
  );
}
