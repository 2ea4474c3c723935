/**
 * The bit offset of a deflate block boundary whose byte offset is known, searched for with Node's
 * zlib. The indexer no longer needs it (clip's inflate addon reads zlib's `data_type`, see
 * zlib-native.ts); it stays as the reference the addon's offsets are checked against
 * (bit-offsets.test.ts), since it is how every index before that was built.
 *
 * Native zlib stops at a block boundary (Z_BLOCK) and says how many input bytes it consumed, but
 * Node does not pass on `strm.data_type`, whose low 3 bits are the unused bits of the last byte
 * consumed: the next block starts 0..7 bits before the byte offset. Each of the 8 candidates is
 * judged in two steps: the block header that would start there must be well formed (RFC 1951
 * 3.2.3-3.2.7: block type not 11, a stored block's LEN/NLEN complementary, a dynamic block's
 * counts in range and its code-length code complete, as zlib requires), and inflating from there
 * with the window must reproduce the output that really followed. Two candidates can only both
 * pass when they decode the same bits (a stored block reached through zero padding): they are the
 * same checkpoint, and the lower one is taken. Probing with an empty window answers a second
 * question for free: whether the data after the boundary needs a window at all.
 */
import { tryInflateLimited } from './native-inflate';
import { realignPrefix } from './realign';

/** bit `i` (LSB first, as deflate packs them) of `buf`, or undefined past the end */
function bitAt(buf: Buffer, i: number): number | undefined {
  const byte = buf[i >> 3];
  return byte === undefined ? undefined : (byte >> (i & 7)) & 1;
}

function bitsAt(buf: Buffer, pos: number, count: number): number | undefined {
  let v = 0;
  for (let k = 0; k < count; k++) {
    const b = bitAt(buf, pos + k);
    if (b === undefined) return undefined;
    v |= b << k;
  }
  return v;
}

/**
 * Could a deflate block start at bit `pos` of `buf`? Only the header is read; undefined bits
 * (input too short) count as plausible.
 */
export function plausibleBlockStart(buf: Buffer, pos: number): boolean {
  const btype = bitsAt(buf, pos + 1, 2);
  if (btype === undefined) return true;
  if (btype === 3) return false;
  if (btype === 1) return true;
  if (btype === 0) {
    const at = (((pos + 3 + 7) >> 3) << 3) >> 3; // next byte boundary after the 3 header bits
    if (at + 4 > buf.length) return true;
    return (buf.readUInt16LE(at) ^ buf.readUInt16LE(at + 2)) === 0xffff;
  }
  const hlit = bitsAt(buf, pos + 3, 5);
  const hdist = bitsAt(buf, pos + 8, 5);
  const hclen = bitsAt(buf, pos + 13, 4);
  if (hlit === undefined || hdist === undefined || hclen === undefined) return true;
  if (hlit > 29 || hdist > 29) return false;
  // The code-length code must be complete (zlib's inflate_table refuses anything else).
  const counts = new Array<number>(8).fill(0);
  for (let i = 0; i < hclen + 4; i++) {
    const len = bitsAt(buf, pos + 17 + 3 * i, 3);
    if (len === undefined) return true;
    counts[len] = (counts[len] ?? 0) + 1;
  }
  let left = 1;
  for (let len = 1; len <= 7; len++) {
    left = left * 2 - (counts[len] ?? 0);
    if (left < 0) return false; // over-subscribed
  }
  return left === 0;
}

function resumes(compressed: Buffer, window: Buffer, following: Buffer, bits: number, limit: number): boolean {
  const first = compressed[0] ?? 0;
  const input = bits === 0 ? compressed.subarray(1) : Buffer.concat([realignPrefix(bits, first), compressed.subarray(1)]);
  // undefined: not a block start, or (empty window) a back-reference before the boundary
  const out = tryInflateLimited(input, window, limit);
  if (out === undefined) return false;
  const want = Math.min(limit, following.length);
  return out.length >= want && out.subarray(0, want).equals(following.subarray(0, want));
}

/**
 * The bit offsets (0..7) that may resume at a block boundary found at byte `coff`: those whose
 * block header is well formed and whose first 4 KiB of output match `following`, the real output
 * after the boundary. `compressed` starts at byte coff-1 (the byte that may hold the block's first
 * bits) and runs at least as far as the compressed data that produced `following`; `window` is
 * the output before the boundary, or empty to ask whether the data needs none.
 */
export function boundaryCandidates(compressed: Buffer, window: Buffer, following: Buffer): number[] {
  const candidates: number[] = [];
  for (let bits = 0; bits < 8; bits++) {
    // bits > 0: the block starts at bit (8 - bits) of byte coff-1; bits = 0: at bit 0 of byte coff
    const start = bits === 0 ? 8 : 8 - bits;
    if (plausibleBlockStart(compressed, start) && resumes(compressed, window, following, bits, 4096)) candidates.push(bits);
  }
  return candidates;
}

/**
 * Which bit offset resumes at the boundary and reproduces all of `following` (see
 * boundaryCandidates), if any. With an empty window, undefined means the data after the boundary
 * references output before it (it needs a window); with the real one, it would be a bug or data
 * that changed under the indexer.
 */
export function resolveBoundaryBits(compressed: Buffer, window: Buffer, following: Buffer): number | undefined {
  return boundaryCandidates(compressed, window, following).find((bits) => resumes(compressed, window, following, bits, following.length));
}
