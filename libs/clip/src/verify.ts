/**
 * verifyIndex: reads every layer once and checks everything the index claims:
 * the blob digest, every span (each inflated from its own checkpoint and
 * window, so the checkpoints themselves are proven), the diff_id, and that the
 * uncompressed stream is a well-formed tar.
 */
import { createHash } from 'node:crypto';
import { Decompress as ZstdDecompress } from 'fzstd';
import { ClipError } from './errors';
import type { ClipIndex } from './format/index-file';
import type { LayerInfo } from './format/types';
import { inflateFromCheckpoint } from './gzip/realign';
import type { LayerSource } from './source';
import { TarParser } from './tar/parser';

export interface VerifyProgress {
  layer: number;
  layers: number;
  bytesDone: number;
  bytesTotal: number;
}

export interface LayerVerifyResult {
  digest: string;
  spans: number;
  entries: number;
  uncompressedSize: number;
}

export interface VerifyReport {
  layers: LayerVerifyResult[];
  bytes: number;
}

export async function verifyIndex(
  index: ClipIndex,
  source: LayerSource,
  opts: { onProgress?: (p: VerifyProgress) => void } = {},
): Promise<VerifyReport> {
  const report: VerifyReport = { layers: [], bytes: 0 };
  const bytesTotal = index.imageSize;
  for (const [i, layer] of index.layers.entries()) {
    const v = new LayerVerifier(index, layer, i);
    for await (const chunk of await source.openStream(layer.digest)) {
      v.push(chunk);
      report.bytes += chunk.length;
      opts.onProgress?.({ layer: i, layers: index.layers.length, bytesDone: report.bytes, bytesTotal });
    }
    report.layers.push(v.end());
  }
  return report;
}

class LayerVerifier {
  private readonly blobHash = createHash('sha256');
  private readonly diffHash = createHash('sha256');
  private readonly tar: TarParser;
  private entries = 0;
  private size = 0;
  private uoff = 0;
  private span = 0;
  // gzip: compressed bytes from the current span's start
  private pending: Buffer[] = [];
  private pendingStart = 0; // blob offset of pending[0]
  // none / zstd: bytes of the current span
  private spanHash = createHash('sha256');
  private spanLen = 0;
  private readonly zstd: ZstdDecompress | undefined;

  constructor(
    private readonly index: ClipIndex,
    private readonly layer: LayerInfo,
    private readonly n: number,
  ) {
    this.tar = new TarParser(() => this.entries++);
    if (layer.compression === 'zstd') {
      this.zstd = new ZstdDecompress((c) => this.plain(Buffer.from(c.buffer, c.byteOffset, c.length)));
    }
  }

  push(chunk: Buffer): void {
    this.blobHash.update(chunk);
    this.size += chunk.length;
    if (this.layer.compression === 'gzip') {
      this.pending.push(chunk);
      this.gzipSpans(false);
    } else if (this.zstd) {
      try {
        this.zstd.push(chunk);
      } catch (err) {
        throw this.fail('LAYER_CORRUPT', `zstd: ${(err as Error).message}`);
      }
    } else {
      this.plain(chunk);
    }
  }

  end(): LayerVerifyResult {
    if (this.layer.compression === 'gzip') this.gzipSpans(true);
    if (this.zstd) this.zstd.push(new Uint8Array(0), true);
    if (this.layer.compression !== 'gzip') {
      if (this.spanLen > 0) this.closePlainSpan();
      // Spans of 0 bytes get no data to close them: an empty layer (a zero-byte tar, an empty
      // zstd frame) is indexed as one such span. Check them against the digest of nothing.
      while (this.layer.spans[this.span]?.ulen === 0) this.closePlainSpan();
    }
    const digest = `sha256:${this.blobHash.digest('hex')}`;
    if (digest !== this.layer.digest) throw this.fail('DIGEST_MISMATCH', `blob digest is ${digest}`);
    if (this.span !== this.layer.spans.length) {
      throw this.fail('LAYER_CORRUPT', `checked ${this.span} of ${this.layer.spans.length} spans: the layer is shorter than indexed`);
    }
    const diffId = `sha256:${this.diffHash.digest('hex')}`;
    if (diffId !== this.layer.diffId) throw this.fail('DIGEST_MISMATCH', `uncompressed digest is ${diffId}, index says ${this.layer.diffId}`);
    this.tar.end();
    return { digest, spans: this.span, entries: this.entries, uncompressedSize: this.uoff };
  }

  private fail(code: 'DIGEST_MISMATCH' | 'SPAN_CORRUPT' | 'LAYER_CORRUPT', msg: string): ClipError {
    return new ClipError(code, `layer ${this.n} (${this.layer.digest}): ${msg}`, { layer: this.layer.digest });
  }

  /** Inflate each span whose compressed bytes are complete from its own checkpoint. */
  private gzipSpans(final: boolean): void {
    for (;;) {
      const s = this.layer.spans[this.span];
      if (!s) return;
      const next = this.layer.spans[this.span + 1];
      const endExclusive = next ? next.coff + 1 : this.layer.size;
      if (!final && this.size < endExclusive) return;
      const buf = Buffer.concat(this.pending);
      const start = s.bits > 0 ? s.coff - 1 : s.coff;
      const input = buf.subarray(start - this.pendingStart, endExclusive - this.pendingStart);
      const out = inflateFromCheckpoint(input, s.bits, this.index.window(s)).subarray(0, s.ulen);
      this.checkSpan(out);
      // keep what the next span needs
      if (next) {
        const nextStart = next.bits > 0 ? next.coff - 1 : next.coff;
        this.pending = [buf.subarray(nextStart - this.pendingStart)];
        this.pendingStart = nextStart;
      }
      if (final && !next) return;
    }
  }

  private checkSpan(data: Buffer): void {
    const s = this.layer.spans[this.span];
    if (!s) throw this.fail('LAYER_CORRUPT', 'more data than the index has spans');
    if (data.length !== s.ulen || !createHash('sha256').update(data).digest().equals(s.sha256)) {
      throw this.fail('SPAN_CORRUPT', `span ${this.span} (bytes ${s.uoff}+${s.ulen}) does not match the index`);
    }
    this.diffHash.update(data);
    this.tar.push(data);
    this.uoff += data.length;
    this.span++;
  }

  /** none / zstd: the stream is split at the indexed span lengths */
  private plain(data: Buffer): void {
    let pos = 0;
    while (pos < data.length) {
      const s = this.layer.spans[this.span];
      if (!s) throw this.fail('LAYER_CORRUPT', 'more data than the index has spans');
      const n = Math.min(s.ulen - this.spanLen, data.length - pos);
      const piece = data.subarray(pos, pos + n);
      this.spanHash.update(piece);
      this.diffHash.update(piece);
      this.tar.push(piece);
      this.spanLen += n;
      pos += n;
      if (this.spanLen === s.ulen) this.closePlainSpan();
    }
  }

  private closePlainSpan(): void {
    const s = this.layer.spans[this.span];
    if (!s) return;
    if (this.spanLen !== s.ulen || !this.spanHash.digest().equals(s.sha256)) {
      throw this.fail('SPAN_CORRUPT', `span ${this.span} (bytes ${s.uoff}+${s.ulen}) does not match the index`);
    }
    this.uoff += this.spanLen;
    this.span++;
    this.spanHash = createHash('sha256');
    this.spanLen = 0;
  }
}
