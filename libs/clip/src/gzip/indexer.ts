/**
 * Streaming gzip decompression that takes real checkpoints: at deflate block boundaries it
 * records the compressed offset, the bit offset inside the byte before it, the uncompressed
 * offset and the 32 KiB of output before it (the window). Decompression is zlib called through
 * clip's addon (zlib-native.ts), stopped at every block boundary with Z_BLOCK, which reports the
 * boundary's bit offset (`data_type`); which boundaries become checkpoints is the caller's choice
 * (`cutAt`, default: the first boundary `span` bytes after the previous checkpoint). Whether a
 * checkpoint needs a window and the pruned window are settled once the 32 KiB of output after it
 * have been seen (one resume without a window, then marker passes: zlib-native.ts); data that
 * needs no window (no back-reference reaches before the boundary) gets none. `cutAt` may also answer 'maybe': a
 * provisional checkpoint, kept or dropped by `decide` once it is known whether it needs a window
 * (a windowless checkpoint costs the index a record, one with a window ~1-2 KiB more).
 *
 * Multi-member gzip files are handled: every member starts with a checkpoint that needs no
 * window (deflate back-references never cross members).
 */
import zlib from 'node:zlib';
import { ClipError } from '../errors';
import { Z_BLOCK } from './native-inflate';
import { BlockInflater, inflateAt, pruneWindowAt, type BlockStep } from './zlib-native';

const WINDOW = 32768;
const OUT_CHUNK = 256 * 1024;

export interface Checkpoint {
  /** absolute offset in the compressed blob of the first byte not fully consumed */
  coff: number;
  /** unused high bits of byte coff-1 that belong to the next block (0..7); final once `settled` */
  bits: number;
  /** offset in the uncompressed stream */
  uoff: number;
  /** the (pruned) window: up to 32 KiB of output before uoff; final once `settled` */
  window: Buffer;
  /** how many window bytes the following data really references (after pruning) */
  windowUsed: number;
  /** the window raw-deflated as the index stores it (empty when no byte of it is referenced) */
  windowDeflated: Buffer;
  /** bits and window are final (member starts: at once; block boundaries: 32 KiB of output later) */
  settled: boolean;
  /** taken as 'maybe': `decide` keeps or drops it when it settles */
  provisional: boolean;
}

/** At a deflate block boundary: a checkpoint here, none, or one that `decide` settles later. */
export type CutDecision = 'yes' | 'no' | 'maybe';

export interface GzipIndexerOptions {
  /** bytes of output between checkpoints (at least; cut at the next block boundary) when `cutAt` is not given */
  span: number;
  /** every uncompressed chunk, in order; the buffer may not be reused after the call */
  onData: (chunk: Buffer) => void;
  /** called at the moment a checkpoint is taken (its bits and window are settled later) */
  onCheckpoint: (cp: Checkpoint) => void;
  /** called when a checkpoint's bit offset and window are final (not for dropped ones) */
  onSettled?: (cp: Checkpoint) => void;
  /**
   * At a deflate block boundary `uoff` (`sinceLast` bytes of output after the previous
   * checkpoint, compressed byte `coff`): take a checkpoint here? Default: sinceLast >= span.
   * While a 'maybe' is unsettled, no boundary is offered.
   */
  cutAt?: (uoff: number, sinceLast: number, coff: number) => CutDecision;
  /**
   * Keep a provisional checkpoint? `needsWindow`: its data references output before it;
   * `windowBytes()` prunes and deflates that window and says how big it is. Default: keep.
   */
  decide?: (cp: Checkpoint, needsWindow: boolean, windowBytes: () => number) => boolean;
  /** a provisional checkpoint `decide` dropped */
  onDropped?: (cp: Checkpoint) => void;
  /** zero out window bytes nobody references (default true) */
  pruneWindows?: boolean;
}

type Phase =
  | { kind: 'header'; buf: Buffer }
  | { kind: 'deflate' }
  | { kind: 'trailer'; buf: Buffer };

interface PendingCheckpoint {
  cp: Checkpoint;
  /** the bit offset zlib reported (data_type) */
  bits: number;
  raw: Buffer;
  /** compressed bytes from byte coff-1 on */
  chunks: Buffer[];
  startAbs: number;
  /** output after the checkpoint, up to 32 KiB */
  following: Buffer[];
  followingBytes: number;
}

export class GzipIndexer {
  private phase: Phase = { kind: 'header', buf: Buffer.alloc(0) };
  private inflater: BlockInflater | undefined;
  private out: Buffer = Buffer.allocUnsafe(OUT_CHUNK);
  private outOff = 0;
  /** absolute offset of the start of the chunk being processed */
  private base = 0;
  private uoff = 0;
  private lastCpUoff = 0;
  private memberStartUoff = 0;
  private crc = 0;
  private members = 0;
  private recent: Buffer[] = [];
  private recentBytes = 0;
  private lastByte = 0;
  private pending: PendingCheckpoint[] = [];
  /** the provisional checkpoint waiting for `decide`, and where the last kept checkpoint was before it */
  private provisional: { cp: Checkpoint; prevUoff: number } | undefined;
  private readonly prune: boolean;
  private readonly cutAt: (uoff: number, sinceLast: number, coff: number) => CutDecision;

  constructor(private readonly opts: GzipIndexerOptions) {
    if (!(opts.span > 0)) throw new ClipError('EINVAL', 'span must be positive');
    this.prune = opts.pruneWindows ?? true;
    this.cutAt = opts.cutAt ?? ((_uoff, sinceLast) => (sinceLast >= opts.span ? 'yes' : 'no'));
  }

  get uncompressedSize(): number {
    return this.uoff;
  }

  /** compressed bytes pushed so far */
  get compressedOffset(): number {
    return this.base;
  }

  push(chunk: Buffer): void {
    let pos = 0;
    for (const p of this.pending) p.chunks.push(chunk);
    while (pos < chunk.length) {
      const phase = this.phase;
      if (phase.kind === 'header') {
        if (this.members > 0 && phase.buf.length === 0 && chunk[pos] === 0) {
          pos++; // zero padding after the last member (tolerated, as gzip does)
          continue;
        }
        const buf = Buffer.concat([phase.buf, chunk.subarray(pos)]);
        const len = gzipHeaderLength(buf, this.base + pos - phase.buf.length);
        if (len === undefined) {
          this.phase = { kind: 'header', buf };
          pos = chunk.length;
          break;
        }
        pos += len - phase.buf.length;
        this.startMember(this.base + pos);
      } else if (phase.kind === 'deflate') {
        pos = this.inflate(chunk, pos);
      } else {
        const need = 8 - phase.buf.length;
        const take = Math.min(need, chunk.length - pos);
        const buf = Buffer.concat([phase.buf, chunk.subarray(pos, pos + take)]);
        pos += take;
        if (buf.length < 8) {
          this.phase = { kind: 'trailer', buf };
        } else {
          this.checkTrailer(buf, this.base + pos - 8);
          this.phase = { kind: 'header', buf: Buffer.alloc(0) };
        }
      }
    }
    if (chunk.length > 0) this.lastByte = chunk[chunk.length - 1] ?? 0;
    this.base += chunk.length;
  }

  end(): { members: number; uncompressedSize: number; compressedSize: number } {
    const phase = this.phase;
    if (!(phase.kind === 'header' && this.members > 0 && phase.buf.length === 0)) {
      this.inflater?.close();
      throw new ClipError(
        'GZIP_CORRUPT',
        this.members === 0 && phase.kind === 'header' && phase.buf.length === 0
          ? 'gzip stream is empty'
          : `gzip stream truncated or followed by garbage at byte ${this.base}`,
      );
    }
    this.settlePending(true, this.base);
    return { members: this.members, uncompressedSize: this.uoff, compressedSize: this.base };
  }

  private startMember(coff: number): void {
    this.inflater = new BlockInflater();
    this.phase = { kind: 'deflate' };
    this.crc = 0;
    this.memberStartUoff = this.uoff;
    this.recent = [];
    this.recentBytes = 0;
    this.members++;
    // A member start is always a checkpoint; it needs no window.
    const cp: Checkpoint = {
      coff, bits: 0, uoff: this.uoff, window: Buffer.alloc(0), windowUsed: 0, windowDeflated: Buffer.alloc(0), settled: true, provisional: false,
    };
    this.lastCpUoff = cp.uoff;
    this.opts.onCheckpoint(cp);
    this.opts.onSettled?.(cp);
  }

  /** Inflate from chunk[pos] on, stopping at every block boundary; returns where the member's deflate data ended, or chunk.length. */
  private inflate(chunk: Buffer, pos: number): number {
    const inflater = this.inflater;
    if (!inflater) throw new ClipError('GZIP_CORRUPT', 'internal: no inflate stream');
    for (;;) {
      if (this.outOff === this.out.length) {
        this.out = Buffer.allocUnsafe(OUT_CHUNK);
        this.outOff = 0;
      }
      const step = this.step(inflater, chunk, pos, this.out.length - this.outOff);
      if (step.produced > 0) this.emit(this.out.subarray(this.outOff, this.outOff + step.produced));
      this.outOff += step.produced;
      pos += step.consumed;
      if (step.availOut === 0) continue; // output full: the block goes on
      if (step.availIn === 0) {
        this.settlePending(false, this.base + pos);
        return chunk.length; // needs more input
      }
      // Stopped with input left and room for output: at the end of a deflate block. Whether
      // another block follows, a step with no room for output tells (it reads the next block's
      // header, or nothing when the member's last block has ended).
      const coff = this.base + pos;
      const bits = step.dataType & 7;
      const lastByte = pos > 0 ? (chunk[pos - 1] ?? 0) : this.lastByte;
      const peek = this.step(inflater, chunk, pos, 0);
      if (peek.consumed === 0) {
        inflater.close();
        this.inflater = undefined;
        this.settlePending(true, coff);
        this.phase = { kind: 'trailer', buf: Buffer.alloc(0) };
        return pos;
      }
      if (!this.provisional) {
        const cut = this.cutAt(this.uoff, this.uoff - this.lastCpUoff, coff);
        if (cut !== 'no') this.takeCheckpoint(coff, bits, lastByte, chunk.subarray(pos), cut === 'maybe');
      }
      pos += peek.consumed;
      this.settlePending(false, coff);
    }
  }

  private step(inflater: BlockInflater, chunk: Buffer, pos: number, room: number): BlockStep {
    const step = inflater.step(Z_BLOCK, chunk, pos, chunk.length - pos, this.out, this.outOff, room);
    if (step.error !== undefined) {
      this.inflater = undefined;
      throw new ClipError('GZIP_CORRUPT', `corrupt deflate data near compressed byte ${this.base + pos}: ${step.error}`);
    }
    return step;
  }

  private takeCheckpoint(coff: number, bits: number, lastByte: number, rest: Buffer, provisional: boolean): void {
    const raw = this.windowBytes();
    const cp: Checkpoint = {
      coff, bits: 0, uoff: this.uoff, window: raw, windowUsed: raw.length, windowDeflated: Buffer.alloc(0), settled: false, provisional,
    };
    if (provisional) this.provisional = { cp, prevUoff: this.lastCpUoff };
    this.lastCpUoff = cp.uoff;
    const chunks: Buffer[] = [Buffer.from([lastByte])];
    if (rest.length > 0) chunks.push(rest);
    this.pending.push({ cp, bits, raw, chunks, startAbs: coff - 1, following: [], followingBytes: 0 });
    this.opts.onCheckpoint(cp);
  }

  private emit(data: Buffer): void {
    this.uoff += data.length;
    this.crc = zlib.crc32(data, this.crc);
    this.recent.push(data);
    this.recentBytes += data.length;
    for (;;) {
      const first = this.recent[0];
      if (!first || this.recentBytes - first.length < WINDOW) break;
      this.recent.shift();
      this.recentBytes -= first.length;
    }
    for (const p of this.pending) {
      if (p.followingBytes >= WINDOW) continue;
      const take = data.subarray(0, WINDOW - p.followingBytes);
      p.following.push(take);
      p.followingBytes += take.length;
    }
    this.opts.onData(data);
  }

  /** the last 32 KiB of output of this member (back-references never cross members) */
  private windowBytes(): Buffer {
    const all = this.recent.length === 1 && this.recent[0] ? this.recent[0] : Buffer.concat(this.recent);
    const inMember = this.uoff - this.memberStartUoff;
    const n = Math.min(WINDOW, all.length, inMember);
    return Buffer.from(all.subarray(all.length - n));
  }

  /**
   * Settle checkpoints whose following 32 KiB of output have been seen (or whose member ended):
   * whether they need a window, a provisional one's fate, then the pruned window. Only the
   * compressed bytes up to what has been consumed are inflated again: one inflation of 32 KiB of
   * output per checkpoint, three more (marker passes) for one that keeps a window.
   */
  private settlePending(all: boolean, consumedAbs: number): void {
    if (this.pending.length === 0) return;
    const keep: PendingCheckpoint[] = [];
    for (const p of this.pending) {
      if (!all && p.followingBytes < WINDOW) {
        keep.push(p);
        continue;
      }
      const input = firstBytes(p.chunks, consumedAbs - p.startAbs);
      const following = Buffer.concat(p.following);
      const cp = p.cp;
      const bits = canonicalBits(input, p.bits, following);
      const windowless = resumesTo(input, bits, Buffer.alloc(0), following);
      let windowDone = false;
      const settleWindow = (): number => {
        if (windowDone) return cp.windowDeflated.length;
        windowDone = true;
        cp.bits = bits;
        if (windowless) {
          cp.window = Buffer.alloc(0);
          cp.windowUsed = 0;
        } else if (this.prune) {
          // The marker passes that prune the window also check the resume against the real output.
          const pruned = pruneWindowAt(input, bits, p.raw, following);
          if (!pruned.verified) throw unresumable(cp.coff);
          cp.window = pruned.window;
          cp.windowUsed = pruned.used;
        } else if (!resumesTo(input, bits, p.raw, following)) {
          throw unresumable(cp.coff);
        }
        cp.windowDeflated = cp.window.length > 0 ? zlib.deflateRawSync(cp.window, { level: 6 }) : Buffer.alloc(0);
        return cp.windowDeflated.length;
      };
      if (cp.provisional) {
        const provisional = this.provisional;
        this.provisional = undefined;
        if (!(this.opts.decide?.(cp, !windowless, settleWindow) ?? true)) {
          if (provisional?.cp === cp && this.lastCpUoff === cp.uoff) this.lastCpUoff = provisional.prevUoff;
          this.opts.onDropped?.(cp);
          continue;
        }
      }
      settleWindow();
      cp.settled = true;
      this.opts.onSettled?.(cp);
    }
    this.pending = keep;
  }

  private checkTrailer(buf: Buffer, at: number): void {
    const crc = buf.readUInt32LE(0);
    const isize = buf.readUInt32LE(4);
    const size = this.uoff - this.memberStartUoff;
    if (crc !== this.crc >>> 0 || isize !== size % 0x1_0000_0000) {
      throw new ClipError('GZIP_CORRUPT', `gzip member ending at byte ${at + 8}: CRC or length mismatch (corrupt layer)`);
    }
  }
}

/** Resuming at the boundary (`compressed` from the byte before it) with `window` gives exactly `following` first. */
function resumesTo(compressed: Buffer, bits: number, window: Buffer, following: Buffer): boolean {
  const out = inflateAt(compressed, bits, window, following.length);
  return out !== undefined && out.length === following.length && out.equals(following);
}

/**
 * The bit offset a checkpoint records for a boundary zlib reports `bits` for (`compressed` starts
 * at the byte before the boundary; `following` is the output after it). clip's indexes record the
 * lowest offset (0..7) that resumes to the same output, as when the offset was found by trying
 * each in turn (boundary.ts), and only a stored block can have more than one: its header is 3
 * bits, then padding up to the byte that holds LEN, so a header read elsewhere in those bits (or
 * in zero bits before them) that also says "stored" and reaches the same LEN decodes the same
 * block. If it says "final" where the block is not, the output must end within the block; if it
 * says "not final" where the block is final, the resume runs out of input after the block (the
 * member ends there), as the search's did.
 */
export function canonicalBits(compressed: Buffer, bits: number, following: Buffer): number {
  /** where a block that leaves `j` bits of the byte before the boundary starts (bit index in `compressed`) */
  const start = (j: number): number => (j === 0 ? 8 : 8 - j);
  const bit = (i: number): number => ((compressed[i >> 3] ?? 0) >> (i & 7)) & 1;
  const at = start(bits);
  if (bit(at + 1) !== 0 || bit(at + 2) !== 0) return bits; // not a stored block
  const lenByte = (at + 3 + 7) >> 3;
  const final = bit(at);
  const len = compressed.length >= lenByte + 2 ? compressed.readUInt16LE(lenByte) : 0;
  for (let j = 0; j < bits; j++) {
    const p = start(j);
    if ((p + 3 + 7) >> 3 !== lenByte || bit(p + 1) !== 0 || bit(p + 2) !== 0) continue;
    const f = bit(p);
    if (f === final || f === 0 || following.length <= len) return j;
  }
  return bits;
}

function unresumable(coff: number): ClipError {
  return new ClipError('GZIP_CORRUPT', `no bit offset resumes the deflate block boundary at compressed byte ${coff}`);
}

function firstBytes(chunks: Buffer[], n: number): Buffer {
  const out: Buffer[] = [];
  let have = 0;
  for (const c of chunks) {
    if (have >= n) break;
    const take = c.subarray(0, n - have);
    out.push(take);
    have += take.length;
  }
  return out.length === 1 && out[0] ? out[0] : Buffer.concat(out);
}

/** Length of the gzip member header at the start of buf, or undefined if incomplete. */
export function gzipHeaderLength(buf: Buffer, at: number): number | undefined {
  if (buf.length >= 1 && buf[0] !== 0x1f) throw notGzip(at);
  if (buf.length >= 2 && buf[1] !== 0x8b) throw notGzip(at);
  if (buf.length >= 3 && buf[2] !== 8) throw new ClipError('GZIP_CORRUPT', `gzip member at byte ${at}: unknown compression method ${buf[2]}`);
  if (buf.length < 10) return undefined;
  const flg = buf[3] ?? 0;
  let pos = 10;
  if (flg & 4) {
    if (buf.length < pos + 2) return undefined;
    pos += 2 + buf.readUInt16LE(pos);
  }
  for (const bit of [8, 16]) {
    if (flg & bit) {
      const nul = buf.indexOf(0, pos);
      if (nul === -1) return undefined;
      pos = nul + 1;
    }
  }
  if (flg & 2) pos += 2;
  return buf.length >= pos ? pos : undefined;
}

function notGzip(at: number): ClipError {
  return new ClipError('GZIP_CORRUPT', `not a gzip stream (bad magic at byte ${at})`);
}
