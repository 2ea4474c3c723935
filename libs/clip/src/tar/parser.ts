/**
 * A streaming tar reader that reports where every entry's data starts in the
 * (uncompressed) stream. It understands ustar (with prefix), PAX extended and
 * global headers (including SCHILY.xattr.* and LIBARCHIVE.xattr.*), GNU long
 * names and long links, base-256 numbers and old V7 headers.
 *
 * Names are bytes (see ../names.ts): ustar name/prefix, GNU long names and PAX
 * `path`/`linkpath` are kept as written. PAX values are UTF-8 by the standard,
 * but GNU tar writes a name that is not UTF-8 as raw bytes (with or without
 * `hdrcharset=BINARY`), and Go's archive/tar (Docker) reads them as raw bytes
 * too: so does this parser.
 *
 * It never buffers file contents: only headers and PAX / GNU meta records.
 */
import { ClipError } from '../errors';
import { displayName } from '../names';
import { BLOCK, type TarEntryType, type TarHeader, type TarTime } from './header';

export type { TarEntryType, TarHeader, TarTime } from './header';

/** A parsed entry: its header and where it sits in the stream. */
export interface TarEntry extends TarHeader {
  /** offset of the entry's own header (the first meta header for PAX / GNU entries) */
  headerOffset: number;
  /** offset of the first data byte in the uncompressed stream */
  dataOffset: number;
}

/** PAX and GNU long-name records are read into memory; refuse absurd ones. */
const MAX_META_BYTES = 64 * 1024 * 1024;

type State =
  | { kind: 'header' }
  | { kind: 'meta'; typeflag: string; remaining: number; padding: number; chunks: Buffer[] }
  | { kind: 'skip'; remaining: number }
  | { kind: 'end' };

interface PendingMeta {
  pax: Map<string, Buffer>;
  longName?: string;
  longLink?: string;
  headerOffset?: number;
}

export class TarParser {
  private state: State = { kind: 'header' };
  private offset = 0;
  private headerBuf = Buffer.alloc(BLOCK);
  private headerFill = 0;
  private globalPax = new Map<string, Buffer>();
  private pending: PendingMeta = { pax: new Map() };
  private entryCount = 0;
  private currentDataSize = 0;

  constructor(private readonly onEntry: (entry: TarEntry) => void) {}

  /** total bytes consumed so far */
  get position(): number {
    return this.offset;
  }

  get entries(): number {
    return this.entryCount;
  }

  /** bytes of the current entry's data (block padding included) still to come; 0 between entries */
  get dataRemaining(): number {
    return this.state.kind === 'skip' ? this.state.remaining : 0;
  }

  /** bytes of data (block padding included) of the entry being read; 0 between entries */
  get dataSize(): number {
    return this.state.kind === 'skip' ? this.currentDataSize : 0;
  }

  get ended(): boolean {
    return this.state.kind === 'end';
  }

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      const state = this.state;
      switch (state.kind) {
        case 'end':
          // Anything after the end-of-archive marker (record padding) is ignored.
          this.offset += chunk.length - pos;
          return;
        case 'skip': {
          const n = Math.min(state.remaining, chunk.length - pos);
          state.remaining -= n;
          pos += n;
          this.offset += n;
          if (state.remaining === 0) this.state = { kind: 'header' };
          break;
        }
        case 'meta': {
          const want = state.remaining + state.padding;
          const n = Math.min(want, chunk.length - pos);
          const dataPart = Math.min(n, state.remaining);
          if (dataPart > 0) state.chunks.push(chunk.subarray(pos, pos + dataPart));
          state.remaining -= dataPart;
          state.padding -= n - dataPart;
          pos += n;
          this.offset += n;
          if (state.remaining === 0 && state.padding === 0) {
            this.finishMeta(state.typeflag, Buffer.concat(state.chunks));
            this.state = { kind: 'header' };
          }
          break;
        }
        case 'header': {
          const n = Math.min(BLOCK - this.headerFill, chunk.length - pos);
          chunk.copy(this.headerBuf, this.headerFill, pos, pos + n);
          this.headerFill += n;
          pos += n;
          this.offset += n;
          if (this.headerFill === BLOCK) {
            this.headerFill = 0;
            this.handleHeader(this.headerBuf, this.offset - BLOCK);
          }
          break;
        }
      }
    }
  }

  /** Call at the end of the stream: complains about a truncated archive. */
  end(): void {
    const state = this.state;
    if (state.kind === 'end') return;
    if (state.kind === 'header' && this.headerFill === 0 && this.pending.headerOffset === undefined) {
      // Tolerated: archives without the two zero blocks (seen in real layers).
      this.state = { kind: 'end' };
      return;
    }
    throw new ClipError('TAR_CORRUPT', `tar stream truncated at byte ${this.offset} (inside an entry)`);
  }

  private handleHeader(h: Buffer, headerOffset: number): void {
    if (isZeroBlock(h)) {
      if (this.pending.headerOffset !== undefined) {
        throw new ClipError('TAR_CORRUPT', `tar: end-of-archive right after an extended header at byte ${headerOffset}`);
      }
      this.state = { kind: 'end' };
      return;
    }
    verifyChecksum(h, headerOffset);
    const typeflag = h[156] === 0 || h[156] === undefined ? '0' : String.fromCharCode(h[156]);
    const size = parseNumber(h, 124, 12, 'size', headerOffset);
    const padded = Math.ceil(size / BLOCK) * BLOCK;

    switch (typeflag) {
      case 'x':
      case 'g':
      case 'L':
      case 'K':
        if (size > MAX_META_BYTES) {
          throw new ClipError('TAR_UNSUPPORTED', `tar: ${typeflag} record of ${size} bytes at byte ${headerOffset} is too large`);
        }
        if (this.pending.headerOffset === undefined && typeflag !== 'g') this.pending.headerOffset = headerOffset;
        this.state = { kind: 'meta', typeflag, remaining: size, padding: padded - size, chunks: [] };
        if (size === 0) {
          this.finishMeta(typeflag, Buffer.alloc(0));
          this.state = { kind: 'header' };
        }
        return;
      case 'V': // volume label: not a file
        this.currentDataSize = padded;
        this.state = padded > 0 ? { kind: 'skip', remaining: padded } : { kind: 'header' };
        return;
      case 'S':
      case 'M':
        throw new ClipError(
          'TAR_UNSUPPORTED',
          `tar: ${typeflag === 'S' ? 'GNU sparse' : 'multi-volume'} entry at byte ${headerOffset} is not supported`,
        );
      default:
        break;
    }
    if (this.globalPax.has('GNU.sparse.major') || this.pending.pax.has('GNU.sparse.major') || this.pending.pax.has('GNU.sparse.size')) {
      throw new ClipError('TAR_UNSUPPORTED', `tar: PAX sparse entry at byte ${headerOffset} is not supported`);
    }

    const { entry, dataBytes } = this.buildEntry(h, typeflag, size, headerOffset);
    this.pending = { pax: new Map() };
    this.entryCount++;
    // Whatever the type, the header (or PAX) size says how much data follows:
    // a dumpdir ('D') or a hard link written with a size still carries bytes.
    const skip = Math.ceil(dataBytes / BLOCK) * BLOCK;
    this.currentDataSize = skip;
    this.state = skip > 0 ? { kind: 'skip', remaining: skip } : { kind: 'header' };
    this.onEntry(entry);
  }

  private finishMeta(typeflag: string, data: Buffer): void {
    switch (typeflag) {
      case 'x':
        for (const [k, v] of parsePaxRecords(data, this.offset)) this.pending.pax.set(k, v);
        break;
      case 'g':
        for (const [k, v] of parsePaxRecords(data, this.offset)) {
          if (v.length === 0) this.globalPax.delete(k);
          else this.globalPax.set(k, v);
        }
        break;
      case 'L':
        this.pending.longName = cString(data);
        break;
      case 'K':
        this.pending.longLink = cString(data);
        break;
    }
  }

  private buildEntry(
    h: Buffer,
    typeflag: string,
    headerSize: number,
    headerOffset: number,
  ): { entry: TarEntry; dataBytes: number } {
    const magic = h.toString('latin1', 257, 263);
    const isUstar = magic === 'ustar\0';
    const isGnu = magic === 'ustar ';
    const pax = new Map(this.globalPax);
    for (const [k, v] of this.pending.pax) {
      if (v.length === 0) pax.delete(k);
      else pax.set(k, v);
    }
    const paxStr = (k: string): string | undefined => pax.get(k)?.toString('latin1');

    let name = cString(h.subarray(0, 100));
    if (isUstar) {
      const prefix = cString(h.subarray(345, 500));
      if (prefix) name = `${prefix}/${name}`;
    }
    if (this.pending.longName !== undefined) name = this.pending.longName;
    name = paxStr('path') ?? name;

    let linkname = cString(h.subarray(157, 257));
    if (this.pending.longLink !== undefined) linkname = this.pending.longLink;
    linkname = paxStr('linkpath') ?? linkname;

    let type: TarEntryType;
    switch (typeflag) {
      case '0':
      case '7':
        type = name.endsWith('/') ? 'directory' : 'file';
        break;
      case '1':
        type = 'hardlink';
        break;
      case '2':
        type = 'symlink';
        break;
      case '3':
        type = 'chardev';
        break;
      case '4':
        type = 'blockdev';
        break;
      case '5':
      case 'D':
        type = 'directory';
        break;
      case '6':
        type = 'fifo';
        break;
      default:
        throw new ClipError('TAR_UNSUPPORTED', `tar: unknown entry type '${typeflag}' for '${displayName(name)}' at byte ${headerOffset}`);
    }

    const paxNum = (k: string): number | undefined => {
      const s = paxStr(k);
      if (s === undefined) return undefined;
      const n = Number(s);
      if (!Number.isSafeInteger(n) || n < 0) {
        throw new ClipError('TAR_CORRUPT', `tar: bad PAX ${k}='${displayName(s)}' for '${displayName(name)}'`);
      }
      return n;
    };

    const dataBytes = paxNum('size') ?? headerSize;
    const size = type === 'file' ? dataBytes : 0;
    const hasDev = type === 'chardev' || type === 'blockdev';
    const entry: TarEntry = {
      name,
      type,
      mode: parseNumber(h, 100, 8, 'mode', headerOffset) & 0o7777,
      uid: paxNum('uid') ?? parseNumber(h, 108, 8, 'uid', headerOffset),
      gid: paxNum('gid') ?? parseNumber(h, 116, 8, 'gid', headerOffset),
      uname: paxStr('uname') ?? (isUstar || isGnu ? cString(h.subarray(265, 297)) : ''),
      gname: paxStr('gname') ?? (isUstar || isGnu ? cString(h.subarray(297, 329)) : ''),
      size,
      mtime: parsePaxTime(paxStr('mtime'), name) ?? { sec: parseNumber(h, 136, 12, 'mtime', headerOffset), nsec: 0 },
      linkname: type === 'symlink' || type === 'hardlink' ? linkname : '',
      devmajor: hasDev ? paxNum('SCHILY.devmajor') ?? parseNumber(h, 329, 8, 'devmajor', headerOffset) : 0,
      devminor: hasDev ? paxNum('SCHILY.devminor') ?? parseNumber(h, 337, 8, 'devminor', headerOffset) : 0,
      xattrs: new Map(),
      headerOffset: this.pending.headerOffset ?? headerOffset,
      dataOffset: headerOffset + BLOCK,
    };
    const atime = parsePaxTime(paxStr('atime'), name) ?? (isGnu ? gnuTime(h, 345, headerOffset) : undefined);
    const ctime = parsePaxTime(paxStr('ctime'), name) ?? (isGnu ? gnuTime(h, 357, headerOffset) : undefined);
    if (atime) entry.atime = atime;
    if (ctime) entry.ctime = ctime;
    for (const [k, v] of pax) {
      if (k.startsWith('SCHILY.xattr.')) {
        entry.xattrs.set(k.slice('SCHILY.xattr.'.length), v);
      } else if (k.startsWith('LIBARCHIVE.xattr.')) {
        const xname = percentDecode(k.slice('LIBARCHIVE.xattr.'.length));
        if (!entry.xattrs.has(xname)) entry.xattrs.set(xname, Buffer.from(v.toString('latin1'), 'base64'));
      }
    }
    return { entry, dataBytes };
  }
}

function isZeroBlock(h: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (h[i] !== 0) return false;
  return true;
}

function verifyChecksum(h: Buffer, headerOffset: number): void {
  const stored = parseNumber(h, 148, 8, 'checksum', headerOffset);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (h[i] ?? 0);
    unsigned += b;
    signed += b >= 0x80 ? b - 0x100 : b;
  }
  if (stored !== unsigned && stored !== signed) {
    throw new ClipError('TAR_CORRUPT', `tar: header checksum mismatch at byte ${headerOffset} (not a tar stream, or corrupt)`);
  }
}

/** NUL-terminated field as a byte string. */
function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.toString('latin1', 0, nul === -1 ? b.length : nul);
}

/** libarchive URL-encodes xattr names in its PAX keys: `%XX` is one byte. */
function percentDecode(s: string): string {
  return s.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

/** Octal (NUL/space terminated) or GNU base-256 (high bit of the first byte set). */
export function parseNumber(h: Buffer, off: number, len: number, field: string, headerOffset: number): number {
  const first = h[off] ?? 0;
  if (first & 0x80) {
    // base-256, two's complement, big-endian; bit 0x40 of the first byte is the sign.
    const negative = (first & 0x40) !== 0;
    let v = BigInt(first & 0x7f) - (negative ? 0x80n : 0n);
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(h[off + i] ?? 0);
    const n = Number(v);
    if (!Number.isSafeInteger(n)) {
      throw new ClipError('TAR_CORRUPT', `tar: base-256 ${field} out of range at byte ${headerOffset}`);
    }
    return n;
  }
  let end = off;
  const stop = off + len;
  while (end < stop && (h[end] === 0x20 || h[end] === 0)) end++; // leading spaces / NULs
  const start = end;
  while (end < stop && h[end] !== 0 && h[end] !== 0x20) end++;
  if (start === end) return 0;
  const s = h.toString('latin1', start, end);
  if (!/^[0-7]+$/.test(s)) {
    throw new ClipError('TAR_CORRUPT', `tar: bad octal ${field} '${s}' at byte ${headerOffset}`);
  }
  return parseInt(s, 8);
}

function gnuTime(h: Buffer, off: number, headerOffset: number): TarTime | undefined {
  const sec = parseNumber(h, off, 12, 'time', headerOffset);
  return sec === 0 ? undefined : { sec, nsec: 0 };
}

/** PAX time: decimal seconds with an optional fraction, possibly negative. */
export function parsePaxTime(s: string | undefined, name: string): TarTime | undefined {
  if (s === undefined) return undefined;
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(s);
  if (!m) throw new ClipError('TAR_CORRUPT', `tar: bad PAX time '${displayName(s)}' for '${displayName(name)}'`);
  const whole = Number(m[2]);
  const frac = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (m[1] === '-') {
    return frac === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1_000_000_000 - frac };
  }
  return { sec: whole, nsec: frac };
}

/** "%d %s=%s\n" records; keys as byte strings, values kept as raw bytes (xattr values are binary, names may be). */
export function parsePaxRecords(data: Buffer, offset: number): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad with NULs
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw new ClipError('TAR_CORRUPT', `tar: bad PAX record near byte ${offset}`);
    const len = Number(data.toString('latin1', pos, space));
    if (!Number.isSafeInteger(len) || len <= space - pos || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new ClipError('TAR_CORRUPT', `tar: bad PAX record length near byte ${offset}`);
    }
    const rec = data.subarray(space + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq === -1) throw new ClipError('TAR_CORRUPT', `tar: PAX record without '=' near byte ${offset}`);
    out.push([rec.toString('latin1', 0, eq), Buffer.from(rec.subarray(eq + 1))]);
    pos += len;
  }
  return out;
}
