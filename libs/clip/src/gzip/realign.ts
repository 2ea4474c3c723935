/**
 * Resuming raw inflation at a deflate block boundary that is not byte-aligned,
 * with Node's native zlib (which has no inflatePrime).
 *
 * The trick (from zlib's zran.c before inflatePrime existed): put in front of
 * the leftover bits a few *empty* deflate blocks whose total bit length makes
 * the leftover bits end exactly on a byte boundary, so the rest of the
 * compressed bytes can be appended unshifted. Empty blocks emit nothing, so the
 * dictionary (the 32 KiB window) stays exactly as it was.
 */
import zlib from 'node:zlib';
import { ClipError } from '../errors';
import { inflateLimited } from './native-inflate';

class BitWriter {
  private bytes: number[] = [];
  private acc = 0;
  private n = 0;
  bits = 0;

  /** value written least significant bit first (header fields, extra bits) */
  write(value: number, count: number): void {
    for (let i = 0; i < count; i++) this.pushBit((value >> i) & 1);
  }

  /** Huffman code: most significant bit first */
  code(code: number, length: number): void {
    for (let i = length - 1; i >= 0; i--) this.pushBit((code >> i) & 1);
  }

  private pushBit(bit: number): void {
    this.acc |= bit << this.n;
    this.n++;
    this.bits++;
    if (this.n === 8) {
      this.bytes.push(this.acc);
      this.acc = 0;
      this.n = 0;
    }
  }

  finish(): Buffer {
    if (this.n !== 0) throw new Error('BitWriter: not byte-aligned');
    return Buffer.from(this.bytes);
  }
}

/** Empty fixed-Huffman block: header (3 bits) + end-of-block (7 bits) = 10 bits. */
function emptyFixedBlock(w: BitWriter): void {
  w.write(0, 1); // BFINAL = 0
  w.write(1, 2); // BTYPE = 01 (fixed)
  w.code(0, 7); // symbol 256 (end of block) is 0000000 in the fixed code
}

/**
 * Empty dynamic-Huffman block of 101 bits (odd, which fixed blocks can't be).
 * Code-length code: symbols 0, 1, 17, 18 all of length 2 (codes 00,01,10,11).
 * Literal/length code: symbols 0 and 256 of length 1; one distance code, unused.
 */
function emptyDynamicBlock(w: BitWriter): void {
  w.write(0, 1); // BFINAL = 0
  w.write(2, 2); // BTYPE = 10 (dynamic)
  w.write(0, 5); // HLIT = 257 - 257
  w.write(0, 5); // HDIST = 1 - 1
  w.write(14, 4); // HCLEN = 18 - 4
  const order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1];
  const clLen = new Map([
    [0, 2],
    [1, 2],
    [17, 2],
    [18, 2],
  ]);
  for (const sym of order) w.write(clLen.get(sym) ?? 0, 3);
  const CL0 = 0b00;
  const CL1 = 0b01;
  const CL17 = 0b10;
  const CL18 = 0b11;
  w.code(CL1, 2); // literal 0: length 1
  w.code(CL18, 2); // 138 zeros
  w.write(138 - 11, 7);
  w.code(CL18, 2); // 107 zeros
  w.write(107 - 11, 7);
  w.code(CL17, 2); // 10 zeros (literals 1..255 done: 138+107+10 = 255)
  w.write(10 - 3, 3);
  w.code(CL1, 2); // symbol 256 (end of block): length 1
  w.code(CL0, 2); // the one distance code: unused
  w.code(1, 1); // end of block: symbol 256 has code '1'
}

const prefixCache = new Map<number, Buffer>();

/**
 * The bytes to feed before the rest of the stream when resuming at a boundary
 * whose block starts `bits` bits before the byte `lastByte` ends (zran's
 * convention: the unused high `bits` bits of the byte before the offset).
 */
export function realignPrefix(bits: number, lastByte: number): Buffer {
  if (bits === 0) return Buffer.alloc(0);
  const key = bits * 256 + lastByte;
  const cached = prefixCache.get(key);
  if (cached) return cached;
  const need = (8 - bits) % 8; // prefix bits modulo 8
  const w = new BitWriter();
  let rem = need;
  if (rem % 2 === 1) {
    emptyDynamicBlock(w); // 101 bits = 5 (mod 8)
    rem = (((rem - 5) % 8) + 8) % 8;
  }
  for (let i = 0; i < rem / 2; i++) emptyFixedBlock(w);
  w.write(lastByte >> (8 - bits), bits);
  const out = w.finish();
  prefixCache.set(key, out);
  return out;
}

/**
 * Inflate raw deflate data starting at a checkpoint.
 * `compressed` starts at the byte holding the leftover bits when `bits > 0`
 * (compressed offset - 1), else at the compressed offset. Truncated input is
 * fine: everything that can be decoded is returned.
 */
export function inflateFromCheckpoint(compressed: Buffer, bits: number, window: Buffer): Buffer {
  const input = resumeInput(compressed, bits);
  if (input === undefined) return Buffer.alloc(0);
  try {
    return zlib.inflateRawSync(input, inflateOptions(window));
  } catch (err) {
    throw inflateFailed(err);
  }
}

/**
 * inflateFromCheckpoint on libuv's thread pool: the calling thread stays free (a FUSE mount
 * answers other reads while megabytes inflate). Same input, output and errors.
 */
export function inflateFromCheckpointAsync(compressed: Buffer, bits: number, window: Buffer): Promise<Buffer> {
  const input = resumeInput(compressed, bits);
  if (input === undefined) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    zlib.inflateRaw(input, inflateOptions(window), (err, out) => (err ? reject(inflateFailed(err)) : resolve(out)));
  });
}

/** The raw deflate input that resumes at a checkpoint: realignment prefix + the bytes after the boundary byte. */
function resumeInput(compressed: Buffer, bits: number): Buffer | undefined {
  if (bits === 0) return compressed;
  const first = compressed[0];
  if (first === undefined) return undefined;
  return Buffer.concat([realignPrefix(bits, first), compressed.subarray(1)]);
}

function inflateOptions(window: Buffer): zlib.ZlibOptions {
  return { finishFlush: zlib.constants.Z_SYNC_FLUSH, ...(window.length > 0 ? { dictionary: window } : {}) };
}

function inflateFailed(err: unknown): ClipError {
  return new ClipError('GZIP_CORRUPT', `inflate from checkpoint failed: ${(err as Error).message}`, undefined, { cause: err });
}

/** At most `limit` bytes of output after a checkpoint (native zlib, output capped by the buffer). */
function inflatePrefix(compressed: Buffer, bits: number, window: Buffer, limit: number): Buffer {
  const input = resumeInput(compressed, bits);
  if (input === undefined) return Buffer.alloc(0);
  return inflateLimited(input, window, limit);
}

const markers = new Map<number, { a: Buffer; b: Buffer; c: Buffer }>();

function markerDictionaries(n: number): { a: Buffer; b: Buffer; c: Buffer } {
  let m = markers.get(n);
  if (!m) {
    m = { a: Buffer.alloc(n), b: Buffer.alloc(n), c: Buffer.alloc(n) };
    for (let j = 0; j < n; j++) {
      m.a[j] = j & 0xff;
      m.c[j] = ~j & 0xff;
      m.b[j] = j >> 8;
    }
    if (n === 32768) markers.set(n, m); // only full windows recur
  }
  return m;
}

/**
 * Which bytes of `window` are read by the data that follows the checkpoint?
 * Inflates the first 32 KiB after the checkpoint three times with marker
 * dictionaries: byte j of dictionary A holds j & 0xff, of C its complement, of
 * B j >> 8. An output byte copied from the window differs between A and C and
 * names its source j; a byte that does not differ is a literal. Unused window
 * bytes are then zeroed, so the stored window deflates to almost nothing.
 */
export function pruneWindow(
  window: Buffer,
  compressed: Buffer,
  bits: number,
  following?: Buffer,
): { window: Buffer; used: number; verified: boolean } {
  const n = window.length;
  if (n === 0) return { window, used: 0, verified: following === undefined };
  const { a, b, c } = markerDictionaries(n);
  const outA = inflatePrefix(compressed, bits, a, 32768);
  const outB = inflatePrefix(compressed, bits, b, 32768);
  const outC = inflatePrefix(compressed, bits, c, 32768);
  const limit = Math.min(outA.length, outB.length, outC.length, 32768);
  const used = new Uint8Array(n);
  let usedCount = 0;
  // With the output that really followed, the marker passes check the resume as well: every
  // byte is a literal (the same in A and C) or a copy of window byte j.
  let verified = following !== undefined && limit >= Math.min(32768, following.length);
  for (let k = 0; k < limit; k++) {
    const va = outA[k] ?? 0;
    let real = va;
    if (va !== outC[k]) {
      const j = va | ((outB[k] ?? 0) << 8);
      if (j >= n) {
        verified = false;
        continue;
      }
      real = window[j] ?? 0;
      if (used[j] === 0) {
        used[j] = 1;
        usedCount++;
      }
    }
    if (verified && following !== undefined && k < following.length && following[k] !== real) verified = false;
  }
  const pruned = Buffer.alloc(n);
  for (let j = 0; j < n; j++) if (used[j] === 1) pruned[j] = window[j] ?? 0;
  return { window: pruned, used: usedCount, verified };
}
