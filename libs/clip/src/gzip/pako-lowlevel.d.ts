// Types for pako's low-level zlib port (not covered by @types/pako). Only what
// the gzip indexer uses: it needs Z_BLOCK and strm.data_type, which the
// high-level API hides.
declare module 'pako/lib/zlib/zstream.js' {
  class ZStream {
    input: Uint8Array | null;
    next_in: number;
    avail_in: number;
    total_in: number;
    output: Uint8Array | null;
    next_out: number;
    avail_out: number;
    total_out: number;
    msg: string;
    data_type: number;
  }
  export default ZStream;
}

declare module 'pako/lib/zlib/inflate.js' {
  import type ZStream from 'pako/lib/zlib/zstream.js';
  export function inflateInit2(strm: ZStream, windowBits: number): number;
  export function inflate(strm: ZStream, flush: number): number;
  export function inflateEnd(strm: ZStream): number;
  export function inflateReset(strm: ZStream): number;
  export function inflateSetDictionary(strm: ZStream, dictionary: Uint8Array): number;
  const _default: {
    inflateSetDictionary: typeof inflateSetDictionary;
    inflateInit2: typeof inflateInit2;
    inflate: typeof inflate;
    inflateEnd: typeof inflateEnd;
    inflateReset: typeof inflateReset;
  };
  export default _default;
}
