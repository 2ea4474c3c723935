/**
 * Indexes one layer blob in a single streaming pass: digests of the compressed
 * and uncompressed bytes, the tar entries with their data offsets, and the
 * spans (checkpoint + sha256 of every `span` bytes of output).
 */
import { Decompress as ZstdDecompress } from 'fzstd';
import { ClipError } from '../errors';
import { GzipIndexer, type Checkpoint } from '../gzip/indexer';
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
  sha256: Buffer;
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
    const span: SpanRecord = { uoff: this.uoff, ulen: 0, coff, bits, window, sha256: Buffer.alloc(0) };
    this.cur = span;
    this.hasher.cut();
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
  private gzip: GzipIndexer | undefined;
  private zstd: ZstdDecompress | undefined;
  private compressedSize = 0;

  constructor(
    readonly compression: LayerCompression,
    private readonly span: number,
    opts: { pruneWindows?: boolean; hashOnWorker?: boolean } = {},
  ) {
    this.hasher = opts.hashOnWorker ? new WorkerHasher() : new InlineHasher();
    this.spans = new SpanRecorder(this.hasher);
    this.tar = new TarParser((e) => this.entries.push(e));
    const onData = (d: Buffer) => this.uncompressed(d);
    if (compression === 'gzip') {
      this.gzip = new GzipIndexer({
        span,
        pruneWindows: opts.pruneWindows ?? true,
        onData,
        onCheckpoint: (cp) => {
          const rec = this.spans.cut(cp.coff, cp.bits, cp.window);
          this.checkpoints.set(rec, cp);
        },
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
      if (cp) rec.window = cp.window; // windows are pruned after the cut
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
