/**
 * Where layer bytes come from. The reader only needs these two operations;
 * the registry-backed implementation lives in registry-source.ts, and tests
 * or a cluster content cache can provide their own.
 */
export interface LayerSource {
  /**
   * bytes [start, endInclusive] of the blob `digest` (one request); `blobSize` (from the index)
   * lets a source check that an answer is what it claims to be
   */
  readRange(digest: string, start: number, endInclusive: number, blobSize?: number): Promise<Buffer>;
  /** the whole blob, from its first byte */
  openStream(digest: string): Promise<AsyncIterable<Buffer>>;
}

/** Serves blobs from memory (tests, benchmarks). */
export class MemoryLayerSource implements LayerSource {
  constructor(private readonly blobs: Map<string, Buffer>) {}

  private blob(digest: string): Buffer {
    const b = this.blobs.get(digest);
    if (!b) throw Object.assign(new Error(`blob ${digest} not found`), { code: 'BLOB_UNKNOWN' });
    return b;
  }

  async readRange(digest: string, start: number, endInclusive: number): Promise<Buffer> {
    return Buffer.from(this.blob(digest).subarray(start, endInclusive + 1));
  }

  async openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    const b = this.blob(digest);
    return (async function* () {
      for (let i = 0; i < b.length; i += 1 << 20) yield b.subarray(i, i + (1 << 20));
    })();
  }
}

/**
 * Tries sources in order (e.g. a zone cache, then the registry): an outage or miss of a cache
 * tier costs a retry, never a failed read. The span store walks `tiers` itself, so that bytes
 * of a tier that fail a span digest are fetched again from the next one.
 */
export class FallbackLayerSource implements LayerSource {
  constructor(
    readonly tiers: readonly LayerSource[],
    readonly onFallback?: (tier: number, err: unknown) => void,
  ) {
    if (tiers.length === 0) throw new Error('FallbackLayerSource needs at least one source');
  }

  readRange(digest: string, start: number, endInclusive: number, blobSize?: number): Promise<Buffer> {
    return this.first((s) => s.readRange(digest, start, endInclusive, blobSize));
  }

  openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    return this.first((s) => s.openStream(digest));
  }

  private async first<T>(op: (s: LayerSource) => Promise<T>): Promise<T> {
    let last: unknown;
    for (const [i, tier] of this.tiers.entries()) {
      try {
        return await op(tier);
      } catch (err) {
        last = err;
        if (i < this.tiers.length - 1) this.onFallback?.(i, err);
      }
    }
    throw last;
  }
}
