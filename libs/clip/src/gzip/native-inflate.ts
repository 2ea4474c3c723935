/**
 * Raw inflate with Node's own (native) zlib, driven one `inflate()` call at a time.
 *
 * Node's public zlib API hides what an indexer needs: it cannot stop at a deflate block boundary
 * and it never says how much input a call consumed. Underneath, every zlib stream object holds a
 * native handle whose `writeSync(flush, in, inOff, inLen, out, outOff, outLen)` runs exactly one
 * zlib `inflate(strm, flush)` and leaves `avail_out` and `avail_in` in `_writeState` — the same
 * calls Node's own `zlib.inflateRawSync` makes (lib/zlib.js, processChunkSync). With
 * `Z_BLOCK` zlib returns at the end of every deflate block (zlib.h), which is where checkpoints
 * can be taken. These are Node internals (stable since Node 10, checked on Node 20): the
 * constructor checks their shape and `native-inflate.test.ts` fails loudly if they change.
 *
 * What `writeSync` does not report is `strm.data_type` (the unused bits of the last byte): the
 * indexer steps zlib through clip's own addon instead (zlib-native.ts). This one serves resumes
 * (realign.ts) and the bit-offset search kept as a test reference (boundary.ts).
 */
import zlib from 'node:zlib';
import { ClipError } from '../errors';

interface ZlibHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number, code?: string) => void;
  close(): void;
}

interface ZlibInternals {
  _handle?: ZlibHandle | null;
  _writeState?: Uint32Array;
}

export const Z_NO_FLUSH = zlib.constants.Z_NO_FLUSH;
export const Z_SYNC_FLUSH = zlib.constants.Z_SYNC_FLUSH;
export const Z_BLOCK = zlib.constants.Z_BLOCK;

export interface InflateStep {
  /** input bytes consumed and output bytes produced by this call */
  consumed: number;
  produced: number;
  /** input left unconsumed (from inOff + consumed) */
  availIn: number;
  /** room left in the output buffer */
  availOut: number;
  /** zlib's message when the data is corrupt (the stream is closed then) */
  error?: string;
}

/** One raw-deflate stream (no zlib or gzip wrapper), optionally primed with a dictionary. */
export class RawInflater {
  private readonly handle: ZlibHandle;
  private readonly state: Uint32Array;
  private error: string | undefined;
  private closed = false;

  constructor(dictionary?: Buffer) {
    const stream = zlib.createInflateRaw(dictionary !== undefined && dictionary.length > 0 ? { dictionary } : {}) as unknown as ZlibInternals;
    const handle = stream._handle;
    const state = stream._writeState;
    if (!handle || typeof handle.writeSync !== 'function' || !(state instanceof Uint32Array) || state.length < 2) {
      throw new ClipError('EIO', `this Node.js (${process.version}) does not expose the zlib handle clip's indexer drives; use Node 20`);
    }
    this.handle = handle;
    this.state = state;
    // Corrupt data is an expected answer when probing candidate boundaries: no exception (and no
    // stack trace) is made for it here.
    handle.onerror = (message: string, _errno: number, code?: string) => {
      this.error = `${message}${code ? ` (${code})` : ''}`;
    };
  }

  /** One zlib inflate() call; a data error comes back as `error` (and closes the stream). */
  step(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): InflateStep {
    if (this.closed) throw new ClipError('EIO', 'internal: inflate stream used after close');
    this.handle.writeSync(flush, input, inOff, inLen, out, outOff, outLen);
    if (this.error !== undefined) {
      this.close();
      return { consumed: 0, produced: 0, availIn: inLen, availOut: outLen, error: this.error };
    }
    const availOut = this.state[0] ?? 0;
    const availIn = this.state[1] ?? 0;
    return { consumed: inLen - availIn, produced: outLen - availOut, availIn, availOut };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
  }
}

/**
 * At most `limit` bytes of output of raw deflate data `input`, primed with `dictionary`; input
 * that ends early is fine (everything decodable is returned). One deflate block can expand to
 * megabytes, so the output is capped by the buffer, not by the input. Undefined when the data is
 * corrupt (or, with a dictionary too short, reaches back before it).
 */
export function tryInflateLimited(input: Buffer, dictionary: Buffer, limit: number): Buffer | undefined {
  const inflater = new RawInflater(dictionary);
  try {
    const out = Buffer.allocUnsafe(limit);
    let inOff = 0;
    let outOff = 0;
    while (outOff < limit && inOff < input.length) {
      const s = inflater.step(Z_SYNC_FLUSH, input, inOff, input.length - inOff, out, outOff, limit - outOff);
      if (s.error !== undefined) return undefined;
      inOff += s.consumed;
      outOff += s.produced;
      if (s.consumed === 0 && s.produced === 0) break; // end of the deflate stream
    }
    return out.subarray(0, outOff);
  } finally {
    inflater.close();
  }
}

/** tryInflateLimited, with GZIP_CORRUPT for corrupt data */
export function inflateLimited(input: Buffer, dictionary: Buffer, limit: number): Buffer {
  const out = tryInflateLimited(input, dictionary, limit);
  if (out === undefined) throw new ClipError('GZIP_CORRUPT', 'corrupt deflate data');
  return out;
}
