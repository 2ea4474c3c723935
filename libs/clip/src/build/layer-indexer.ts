/**
 * Indexes one layer blob in a single streaming pass: digests of the compressed
 * and uncompressed bytes, the tar entries with their data offsets, and the
 * spans (checkpoint + sha256 of every `span` bytes of output).
 */
import { Decompress as ZstdDecompress } from 'fzstd';
import { ClipError } from '../errors';
import { GzipIndexer, type Checkpoint } from '../gzip/indexer';
import { CheckpointPlanner, DEFAULT_INDEX_BUDGET, DEFAULT_MIN_SPAN } from './checkpoint-plan';
import { InlineHasher, WorkerHasher, type LayerHasher } from './layer-hasher';
import { TarParser, type TarEntry } from '../tar/parser';

export type LayerCompression = 'gzip' | 'none' | 'zstd';

export interface SpanRecord {
  /** uncompressed offset and length */
  uoff: number;
  ulen: number;
  /** gzip: checkpoint; none: coff = uoff; zstd: 0 (read from the start) */
  coff: number;
  bits: number;
  /** raw (pruned) window, gzip only */
  window: Buffer;
  /** the window raw-deflated, when the indexer already did it (the writer deflates `window` otherwise) */
  windowDeflated?: Buffer;
  sha256: Buffer;
}

export interface LayerIndexerOptions {
  /** zero unreferenced window bytes (default true; off only to measure it) */
  pruneWindows?: boolean;
  /** digest on a worker thread (large layers) */
  hashOnWorker?: boolean;
  /** gzip: shortest span between checkpoints where files are small (default 64 KiB; `span` gives uniform spans) */
  minSpan?: number;
  /** gzip: share of the compressed layer the index may spend on it (default 0.01) */
  indexBudget?: number;
  /** size of the compressed layer (the manifest's), when known: the budget keeps a reserve for the rest */
  layerSize?: number;
}

export interface IndexedLayer {
  compression: LayerCompression;
  compressedSize: number;
  /** sha256:<hex> of the blob as fetched */
  digest: string;
  /** sha256:<hex> of the uncompressed tar stream */
  diffId: string;
  uncompressedSize: number;
  spans: SpanRecord[];
  entries: TarEntry[];
}

export function compressionOf(mediaType: string): LayerCompression {
  const mt = mediaType.toLowerCase();
  if (mt.endsWith('+gzip') || mt.endsWith('.tar.gzip') || mt.endsWith('tar.gzip')) return 'gzip';
  if (mt.endsWith('+zstd') || mt.endsWith('.tar.zstd')) return 'zstd';
  if (mt.endsWith('.tar') || mt === 'application/vnd.oci.image.layer.v1.tar' || mt.endsWith('.tar.foreign')) return 'none';
  throw new ClipError('UNSUPPORTED_MEDIA_TYPE', `unsupported layer media type '${mediaType}'`, { mediaType });
}

/** Uncompressed offsets of the spans, cut where the caller says; the hasher digests them. */
class SpanRecorder {
  readonly spans: SpanRecord[] = [];
  private cur: SpanRecord | undefined;
  private provisionalAt: number | undefined;
  uoff = 0;

  constructor(private readonly hasher: LayerHasher) {}

  cut(coff: number, bits: number, window: Buffer): SpanRecord {
    if (this.cur && this.cur.uoff === this.uoff) {
      // nothing was written since the last cut (empty gzip member): replace it
      this.cur.coff = coff;
      this.cur.bits = bits;
      this.cur.window = window;
      return this.cur;
    }
    this.close();
    return this.open(this.uoff, coff, bits, window, () => this.hasher.cut());
  }

  /** a provisional cut here: settled later by keepProvisional() or dropProvisional() */
  provisional(): void {
    this.provisionalAt = this.uoff;
    this.hasher.fork();
  }

  /** the provisional cut stands: the current span ends there and a new one starts */
  keepProvisional(coff: number, bits: number, window: Buffer): SpanRecord {
    const at = this.provisionalAt;
    this.provisionalAt = undefined;
    if (at === undefined || !this.cur) throw new ClipError('LAYER_CORRUPT', 'internal: no provisional cut to keep');
    this.cur.ulen = at - this.cur.uoff;
    this.cur = undefined;
    return this.open(at, coff, bits, window, () => this.hasher.keep());
  }

  dropProvisional(): void {
    this.provisionalAt = undefined;
    this.hasher.drop();
  }

  private open(uoff: number, coff: number, bits: number, window: Buffer, hash: () => void): SpanRecord {
    const span: SpanRecord = { uoff, ulen: 0, coff, bits, window, sha256: Buffer.alloc(0) };
    this.cur = span;
    hash();
    this.spans.push(span);
    return span;
  }

  write(data: Buffer): void {
    if (!this.cur) throw new ClipError('LAYER_CORRUPT', 'internal: data before the first span');
    this.hasher.data(data);
    this.uoff += data.length;
  }

  private close(): void {
    if (this.cur) this.cur.ulen = this.uoff - this.cur.uoff;
    this.cur = undefined;
  }

  /** spans with their digests; a trailing empty span (stream ending right after a cut) is dropped */
  finish(digests: Buffer[]): SpanRecord[] {
    this.close();
    if (digests.length !== this.spans.length) throw new ClipError('LAYER_CORRUPT', 'internal: span digest count mismatch');
    this.spans.forEach((s, i) => (s.sha256 = digests[i] ?? Buffer.alloc(0)));
    while (this.spans.length > 1 && this.spans[this.spans.length - 1]?.ulen === 0) this.spans.pop();
    return this.spans;
  }
}

export class LayerIndexer {
  private readonly hasher: LayerHasher;
  private readonly tar: TarParser;
  private readonly spans: SpanRecorder;
  private readonly entries: TarEntry[] = [];
  private readonly checkpoints = new Map<SpanRecord, Checkpoint>();
  /** gzip: where checkpoints go (checkpoint-plan.ts) */
  readonly planner: CheckpointPlanner | undefined;
  private gzip: GzipIndexer | undefined;
  private zstd: ZstdDecompress | undefined;
  private compressedSize = 0;

  constructor(
    readonly compression: LayerCompression,
    private readonly span: number,
    opts: LayerIndexerOptions = {},
  ) {
    this.hasher = opts.hashOnWorker ? new WorkerHasher() : new InlineHasher();
    this.spans = new SpanRecorder(this.hasher);
    this.tar = new TarParser((e) => this.entries.push(e));
    const onData = (d: Buffer) => this.uncompressed(d);
    if (compression === 'gzip') {
      const planner = new CheckpointPlanner(
        {
          maxSpan: span,
          minSpan: Math.min(span, opts.minSpan ?? DEFAULT_MIN_SPAN),
          budget: opts.indexBudget ?? DEFAULT_INDEX_BUDGET,
          ...(opts.layerSize === undefined ? {} : { layerSize: opts.layerSize }),
        },
        this.tar,
      );
      this.planner = planner;
      this.gzip = new GzipIndexer({
        span,
        pruneWindows: opts.pruneWindows ?? true,
        onData,
        cutAt: (uoff, sinceLast, coff) => planner.cutAt(uoff, sinceLast, coff),
        decide: (cp, needsWindow, windowBytes) => planner.decide(cp, needsWindow, windowBytes),
        onCheckpoint: (cp) => {
          planner.onCheckpoint(cp);
          if (cp.provisional) {
            this.spans.provisional();
            return;
          }
          this.checkpoints.set(this.spans.cut(cp.coff, cp.bits, cp.window), cp);
        },
        onSettled: (cp) => {
          planner.onSettled(cp);
          if (cp.provisional) this.checkpoints.set(this.spans.keepProvisional(cp.coff, cp.bits, cp.window), cp);
        },
        onDropped: () => this.spans.dropProvisional(),
      });
    } else {
      this.spans.cut(0, 0, Buffer.alloc(0));
      if (compression === 'zstd') {
        this.zstd = new ZstdDecompress((chunk) => this.fixedSpans(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)));
      }
    }
  }

  push(chunk: Buffer): void {
    this.compressedSize += chunk.length;
    this.hasher.blob(chunk);
    if (this.gzip) this.gzip.push(chunk);
    else if (this.zstd) this.pushZstd(chunk, false);
    else this.fixedSpans(chunk);
  }

  async end(): Promise<IndexedLayer> {
    if (this.gzip) this.gzip.end();
    if (this.zstd) this.pushZstd(new Uint8Array(0), true);
    this.tar.end();
    const hashes = await this.hasher.finish();
    const spans = this.spans.finish(hashes.spans);
    for (const rec of spans) {
      const cp = this.checkpoints.get(rec);
      if (!cp) continue;
      // bit offsets and windows are settled after the cut
      rec.bits = cp.bits;
      rec.window = cp.window;
      rec.windowDeflated = cp.windowDeflated;
    }
    return {
      compression: this.compression,
      compressedSize: this.compressedSize,
      digest: hashes.blob,
      diffId: hashes.diff,
      uncompressedSize: this.spans.uoff,
      spans,
      entries: this.entries,
    };
  }

  private pushZstd(chunk: Uint8Array, final: boolean): void {
    try {
      this.zstd?.push(chunk, final);
    } catch (err) {
      throw new ClipError('LAYER_CORRUPT', `corrupt zstd layer: ${(err as Error).message}`, undefined, { cause: err });
    }
  }

  /** uncompressed and zstd layers: spans at fixed multiples of `span` */
  private fixedSpans(data: Buffer): void {
    let pos = 0;
    while (pos < data.length) {
      const cur = this.spans.uoff;
      const spanStart = cur - (cur % this.span);
      if (cur === spanStart && cur > 0) {
        this.spans.cut(this.compression === 'none' ? cur : 0, 0, Buffer.alloc(0));
      }
      const n = Math.min(data.length - pos, spanStart + this.span - cur);
      this.uncompressed(data.subarray(pos, pos + n));
      pos += n;
    }
  }

  private uncompressed(data: Buffer): void {
    this.spans.write(data);
    this.tar.push(data);
  }
}
