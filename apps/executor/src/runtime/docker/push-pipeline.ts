/**
 * One pass over an uncompressed layer tar that does everything a push needs, while it is read:
 * - compresses it on every core (gzip-pool.ts: one gzip member per span of output),
 * - streams the compressed bytes to the registry as they come (one PATCH, libs/oci
 *   BlobUploadSession.openStream),
 * - hashes both (digest and diff_id),
 * - hands the uncompressed bytes to a local sink (the local engine's `docker load`),
 * - and builds the layer's clip index: a member start is a checkpoint with an empty window, so
 *   the spans are the members (offset, length, sha256 from the worker), and the tar entries
 *   come from clip's own parser over the same bytes. The result is exactly what clip's
 *   LayerIndexer computes from the finished blob with uniform spans (`minSpan` = `span`;
 *   push-pipeline.test.ts checks that), for free. It has no extra checkpoints where files are
 *   small, as LayerIndexer's default placement by file size would add (libs/clip checkpoint-plan.ts).
 */
import { createHash } from 'node:crypto';
import { DEFAULT_SPAN, TarParser, type IndexedLayer, type SpanRecord, type TarEntry } from '@cryo/clip';
import { MEMBER_HEADER_BYTES, type CompressedChunk, type GzipPool } from './gzip-pool';

/** Where compressed bytes go, in order (libs/oci's BlobStreamWriter); `write` waits while it is behind. */
export interface ChunkUpload {
  write(chunk: Buffer): Promise<void>;
}

export interface LayerSinks {
  /** where the compressed blob goes (the registry); none: compress and index only */
  upload?: ChunkUpload;
  /** the uncompressed tar, in order; awaited (backpressure) */
  raw?: (chunk: Buffer) => Promise<void>;
  /** uncompressed bytes done so far */
  progress?: (bytesDone: number) => void;
}

export interface CompressOptions {
  /** uncompressed bytes per gzip member and clip span (default clip's 1 MiB) */
  span?: number;
  /** the uncompressed size the source promised: a different length is an error */
  expectedSize?: number;
}

export interface CompressedLayer {
  /** sha256 of the gzip blob */
  digest: string;
  /** sha256 of the uncompressed tar */
  diffId: string;
  size: number;
  uncompressedSize: number;
  members: number;
  /** members stored rather than compressed (incompressible data) */
  storedMembers: number;
  /** the layer's clip index part (entries and spans), as LayerIndexer computes it with uniform spans */
  indexed: IndexedLayer;
}

/** Regroup a stream into buffers of exactly `size` bytes (the last one may be shorter). */
export async function* spans(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let buf = Buffer.allocUnsafe(size);
  let fill = 0;
  for await (const piece of source) {
    let pos = 0;
    while (pos < piece.length) {
      const n = Math.min(size - fill, piece.length - pos);
      piece.copy(buf, fill, pos, pos + n);
      fill += n;
      pos += n;
      if (fill === size) {
        yield buf;
        buf = Buffer.allocUnsafe(size);
        fill = 0;
      }
    }
  }
  if (fill > 0) yield buf.subarray(0, fill);
}

export async function compressLayer(source: AsyncIterable<Buffer>, pool: GzipPool, sinks: LayerSinks, opts: CompressOptions = {}): Promise<CompressedLayer> {
  const span = opts.span ?? DEFAULT_SPAN;
  const diffHash = createHash('sha256');
  const blobHash = createHash('sha256');
  const entries: TarEntry[] = [];
  const parser = new TarParser((e) => entries.push(e));
  const spanRecords: SpanRecord[] = [];
  const inFlight: Array<{ chunk: Promise<CompressedChunk>; length: number }> = [];
  const maxInFlight = pool.size * 2;
  let uoff = 0;
  let coff = 0;
  let stored = 0;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let uploading: Promise<void> = Promise.resolve();

  const flushUpload = async (): Promise<void> => {
    const upload = sinks.upload;
    if (upload === undefined || batchBytes === 0) return;
    const body = Buffer.concat(batch, batchBytes);
    batch = [];
    batchBytes = 0;
    await uploading; // one PATCH at a time, in order; compression goes on meanwhile
    uploading = upload.write(body);
    uploading.catch(() => undefined); // awaited before the next PATCH or at the end

  };

  const settleOldest = async (): Promise<void> => {
    const head = inFlight.shift();
    if (head === undefined) return;
    const done = await head.chunk;
    if (done.level === 0) stored++;
    spanRecords.push({ uoff, ulen: head.length, coff: coff + MEMBER_HEADER_BYTES, bits: 0, window: Buffer.alloc(0), sha256: done.sha256 });
    uoff += head.length;
    coff += done.gzip.length;
    blobHash.update(done.gzip);
    await sinks.upload?.write(done.gzip);
    sinks.progress?.(uoff);
  };

  let read = 0;
  try {
    for await (const chunk of spans(source, span)) {
      read += chunk.length;
      diffHash.update(chunk);
      parser.push(chunk);
      if (sinks.raw !== undefined) await sinks.raw(chunk);
      inFlight.push({ chunk: pool.compress(chunk), length: chunk.length });
      if (inFlight.length >= maxInFlight) await settleOldest();
    }
    while (inFlight.length > 0) await settleOldest();
  } catch (err) {
    // Do not leave rejections of chunks nobody awaits any more.
    for (const pending of inFlight) pending.chunk.catch(() => undefined);
    throw err;
  }
  parser.end();
  if (opts.expectedSize !== undefined && read !== opts.expectedSize) {
    throw new Error(`the layer tar has ${read} bytes, ${opts.expectedSize} were planned`);
  }
  const digest = `sha256:${blobHash.digest('hex')}`;
  const diffId = `sha256:${diffHash.digest('hex')}`;
  return {
    digest,
    diffId,
    size: coff,
    uncompressedSize: uoff,
    members: spanRecords.length,
    storedMembers: stored,
    indexed: { compression: 'gzip', compressedSize: coff, digest, diffId, uncompressedSize: uoff, spans: spanRecords, entries },
  };
}
