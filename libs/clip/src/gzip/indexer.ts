/// <reference path="./pako-lowlevel.d.ts" />
/**
 * Streaming gzip decompression that takes real checkpoints: at a deflate block
 * boundary once per `span` bytes of output it records the compressed offset,
 * the bit offset inside the byte before it, the uncompressed offset and the
 * 32 KiB of output before it (the window). Uses pako's low-level inflate
 * because only it reports block boundaries (Z_BLOCK + strm.data_type).
 *
 * Multi-member gzip files are handled: every member starts with a checkpoint
 * that needs no window (deflate back-references never cross members).
 */
import zlib from 'node:zlib';
import ZStream from 'pako/lib/zlib/zstream.js';
import pakoInflate from 'pako/lib/zlib/inflate.js';
import { ClipError } from '../errors';
import { pruneWindow } from './realign';

const Z_OK = 0;
const Z_STREAM_END = 1;
const Z_BUF_ERROR = -5;
const Z_BLOCK = 5;
const WINDOW = 32768;
const OUT_CHUNK = 256 * 1024;

export interface Checkpoint {
  /** absolute offset in the compressed blob of the first byte not fully consumed */
  coff: number;
  /** unused high bits of byte coff-1 that belong to the next block (0..7) */
  bits: number;
  /** offset in the uncompressed stream */
  uoff: number;
  /** the (pruned) window: up to 32 KiB of output before uoff; filled in before end() returns */
  window: Buffer;
  /** how many window bytes the following data really references (after pruning) */
  windowUsed: number;
}

export interface GzipIndexerOptions {
  /** bytes of output between checkpoints (at least; cut at the next block boundary) */
  span: number;
  /** every uncompressed chunk, in order; the buffer may not be reused after the call */
  onData: (chunk: Buffer) => void;
  /** called at the moment a checkpoint is taken (its window is completed later) */
  onCheckpoint: (cp: Checkpoint) => void;
  /** zero out window bytes nobody references (default true) */
  pruneWindows?: boolean;
}

type Phase =
  | { kind: 'header'; buf: Buffer }
  | { kind: 'deflate' }
  | { kind: 'trailer'; buf: Buffer };

interface PendingWindow {
  cp: Checkpoint;
  raw: Buffer;
  /** compressed bytes from the checkpoint on (starting with the byte holding its bits) */
  chunks: Buffer[];
  startAbs: number;
}

export class GzipIndexer {
  private phase: Phase = { kind: 'header', buf: Buffer.alloc(0) };
  private strm: ZStream | undefined;
  private out: Buffer = Buffer.allocUnsafe(OUT_CHUNK);
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
  private pending: PendingWindow[] = [];
  private readonly prune: boolean;

  constructor(private readonly opts: GzipIndexerOptions) {
    if (!(opts.span > 0)) throw new ClipError('EINVAL', 'span must be positive');
    this.prune = opts.pruneWindows ?? true;
  }

  get uncompressedSize(): number {
    return this.uoff;
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
      throw new ClipError(
        'GZIP_CORRUPT',
        this.members === 0 && phase.kind === 'header' && phase.buf.length === 0
          ? 'gzip stream is empty'
          : `gzip stream truncated or followed by garbage at byte ${this.base}`,
      );
    }
    this.flushPending(true, this.base);
    return { members: this.members, uncompressedSize: this.uoff, compressedSize: this.base };
  }

  private startMember(coff: number): void {
    const strm = new ZStream();
    const ret = pakoInflate.inflateInit2(strm, -15);
    if (ret !== Z_OK) throw new ClipError('GZIP_CORRUPT', `inflateInit2 failed (${ret})`);
    strm.output = this.out;
    strm.next_out = 0;
    strm.avail_out = this.out.length;
    this.strm = strm;
    this.phase = { kind: 'deflate' };
    this.crc = 0;
    this.memberStartUoff = this.uoff;
    this.members++;
    // A member start is always a checkpoint; it needs no window.
    this.checkpoint({ coff, bits: 0, uoff: this.uoff, window: Buffer.alloc(0), windowUsed: 0 }, false);
  }

  private inflate(chunk: Buffer, pos: number): number {
    const strm = this.strm;
    if (!strm) throw new ClipError('GZIP_CORRUPT', 'internal: no inflate stream');
    strm.input = chunk;
    strm.next_in = pos;
    strm.avail_in = chunk.length - pos;
    for (;;) {
      if (strm.avail_out === 0) {
        this.out = Buffer.allocUnsafe(OUT_CHUNK);
        strm.output = this.out;
        strm.next_out = 0;
        strm.avail_out = OUT_CHUNK;
      }
      const outStart = strm.next_out;
      const ret = pakoInflate.inflate(strm, Z_BLOCK);
      if (strm.next_out > outStart) this.emit(this.out.subarray(outStart, strm.next_out));
      if (ret === Z_STREAM_END) {
        pakoInflate.inflateEnd(strm);
        this.strm = undefined;
        this.flushPending(true, this.base + strm.next_in);
        this.phase = { kind: 'trailer', buf: Buffer.alloc(0) };
        return strm.next_in;
      }
      if (ret !== Z_OK && ret !== Z_BUF_ERROR) {
        throw new ClipError(
          'GZIP_CORRUPT',
          `corrupt deflate data near compressed byte ${this.base + strm.next_in}: ${strm.msg || `error ${ret}`}`,
        );
      }
      const dt = strm.data_type;
      if ((dt & 128) !== 0 && (dt & 64) === 0 && this.uoff - this.lastCpUoff >= this.opts.span) {
        const bits = dt & 7;
        const coff = this.base + strm.next_in;
        const lastByte = strm.next_in > 0 ? (chunk[strm.next_in - 1] ?? 0) : this.lastByte;
        const cp: Checkpoint = { coff, bits, uoff: this.uoff, window: this.windowBytes(), windowUsed: 0 };
        cp.windowUsed = cp.window.length;
        this.checkpoint(cp, true, bits > 0 ? Buffer.from([lastByte]) : undefined, chunk.subarray(strm.next_in));
      }
      this.flushPending(false, this.base + strm.next_in);
      if (strm.avail_in === 0 && strm.avail_out > 0) return chunk.length;
      if (ret === Z_BUF_ERROR && strm.avail_out > 0) return chunk.length;
    }
  }

  private checkpoint(cp: Checkpoint, needsWindow: boolean, lastByte?: Buffer, rest?: Buffer): void {
    this.lastCpUoff = cp.uoff;
    if (needsWindow && this.prune && cp.window.length > 0) {
      const chunks = lastByte ? [lastByte] : [];
      if (rest && rest.length > 0) chunks.push(rest);
      this.pending.push({ cp, raw: cp.window, chunks, startAbs: cp.coff - (lastByte ? 1 : 0) });
    }
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
   * Prune windows whose following 32 KiB of output have been seen. Only the
   * compressed bytes up to `consumedAbs` (where that output ended) are
   * inflated again, so pruning costs a few 32 KiB inflations per span.
   */
  private flushPending(all: boolean, consumedAbs: number): void {
    if (this.pending.length === 0) return;
    const keep: PendingWindow[] = [];
    for (const p of this.pending) {
      if (all || this.uoff - p.cp.uoff >= WINDOW + 1024) {
        const input = firstBytes(p.chunks, consumedAbs - p.startAbs + 1);
        const { window, used } = pruneWindow(p.raw, input, p.cp.bits);
        p.cp.window = window;
        p.cp.windowUsed = used;
      } else {
        keep.push(p);
      }
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
