/**
 * Where layer bytes come from. The reader only needs these two operations;
 * the registry-backed implementation lives in registry-source.ts, and tests
 * or a cluster content cache can provide their own.
 */
export interface LayerSource {
  /** bytes [start, endInclusive] of the blob `digest` (one request) */
  readRange(digest: string, start: number, endInclusive: number): Promise<Buffer>;
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
