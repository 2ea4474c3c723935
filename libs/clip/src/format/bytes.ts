/** Little-endian byte writer/reader for the index file's sections. */
import { ClipError } from '../errors';

export class ByteWriter {
  private buf = Buffer.allocUnsafe(1 << 16);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }

  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }

  /** integers up to 2^53 (sizes, offsets, signed seconds) */
  f64(v: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.length);
    this.length += 8;
  }

  bytes(b: Buffer): void {
    this.ensure(b.length);
    b.copy(this.buf, this.length);
    this.length += b.length;
  }

  /** u32 length + bytes */
  blob(b: Buffer): void {
    this.u32(b.length);
    this.bytes(b);
  }

  str(s: string): void {
    this.blob(Buffer.from(s, 'utf8'));
  }

  optStr(s: string | undefined): void {
    this.u8(s === undefined ? 0 : 1);
    if (s !== undefined) this.str(s);
  }

  strList(list: readonly string[]): void {
    this.u32(list.length);
    for (const s of list) this.str(s);
  }

  optStrList(list: readonly string[] | null): void {
    this.u8(list === null ? 0 : 1);
    if (list !== null) this.strList(list);
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

export class ByteReader {
  pos = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new ClipError('INDEX_CORRUPT', `${this.what}: truncated (wanted ${n} bytes at ${this.pos} of ${this.buf.length})`);
    }
  }

  u8(): number {
    this.need(1);
    const v = this.buf.readUInt8(this.pos);
    this.pos += 1;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  blob(): Buffer {
    return this.bytes(this.u32());
  }

  str(): string {
    return this.blob().toString('utf8');
  }

  optStr(): string | undefined {
    return this.u8() === 1 ? this.str() : undefined;
  }

  strList(): string[] {
    const n = this.u32();
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.str());
    return out;
  }

  optStrList(): string[] | null {
    return this.u8() === 1 ? this.strList() : null;
  }
}
