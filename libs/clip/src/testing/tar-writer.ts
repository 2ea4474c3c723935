/**
 * A deliberately low-level tar writer for hand-made edge cases (PAX records,
 * GNU long names, base-256 numbers, ustar prefixes). Tests also use archives
 * made by GNU tar; this one exists to produce what GNU tar will not.
 */
export interface RawEntry {
  name: string;
  /** typeflag character; default '0' */
  type?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  data?: Buffer | string;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  uname?: string;
  gname?: string;
  /** PAX 'x' records written before the entry */
  pax?: Record<string, string | Buffer>;
  /** write the name through a GNU 'L' record (and linkname through 'K') */
  gnuLong?: boolean;
  /** split the name into ustar prefix + name at this index */
  prefixAt?: number;
  /** encode uid and size in base-256 */
  base256?: boolean;
  /** GNU magic ("ustar  ") instead of POSIX */
  gnuMagic?: boolean;
}

function octal(h: Buffer, off: number, len: number, v: number): void {
  h.write(`${v.toString(8).padStart(len - 1, '0')}\0`, off, len, 'latin1');
}

function base256(h: Buffer, off: number, len: number, v: number): void {
  let x = BigInt(v);
  for (let i = len - 1; i >= 1; i--) {
    h[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  h[off] = 0x80;
}

function header(e: Omit<RawEntry, 'name'>, name: string, type: string, size: number, linkname: string, prefix = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'latin1');
  octal(h, 100, 8, e.mode ?? 0o644);
  if (e.base256) base256(h, 108, 8, e.uid ?? 0);
  else octal(h, 108, 8, e.uid ?? 0);
  octal(h, 116, 8, e.gid ?? 0);
  if (e.base256) base256(h, 124, 12, size);
  else octal(h, 124, 12, size);
  octal(h, 136, 12, e.mtime ?? 1_700_000_000);
  h.write(type, 156, 1, 'latin1');
  h.write(linkname, 157, 100, 'latin1');
  h.write(e.gnuMagic ? 'ustar  \0' : 'ustar\u000000', 257, 8, 'latin1');
  h.write(e.uname ?? 'root', 265, 32, 'latin1');
  h.write(e.gname ?? 'root', 297, 32, 'latin1');
  octal(h, 329, 8, e.devmajor ?? 0);
  octal(h, 337, 8, e.devminor ?? 0);
  if (prefix) h.write(prefix, 345, 155, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}

function pad(b: Buffer): Buffer {
  const rem = b.length % 512;
  return rem === 0 ? b : Buffer.concat([b, Buffer.alloc(512 - rem)]);
}

export function paxRecords(records: Record<string, string | Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(records)) {
    const body = Buffer.concat([Buffer.from(` ${k}=`, 'latin1'), Buffer.isBuffer(v) ? v : Buffer.from(v, 'latin1'), Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    parts.push(Buffer.concat([Buffer.from(String(len)), body]));
  }
  return Buffer.concat(parts);
}

export function writeTar(entries: RawEntry[], opts: { end?: boolean } = {}): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    const type = e.type ?? '0';
    let name = e.name;
    let linkname = e.linkname ?? '';
    let prefix = '';
    if (e.pax) {
      const p = paxRecords(e.pax);
      out.push(header({}, 'PaxHeaders/x', 'x', p.length, ''), pad(p));
    }
    if (e.gnuLong) {
      const n = Buffer.from(`${name}\0`, 'latin1');
      out.push(header({ gnuMagic: true }, '././@LongLink', 'L', n.length, ''), pad(n));
      name = name.slice(0, 99);
      if (linkname) {
        const l = Buffer.from(`${linkname}\0`, 'latin1');
        out.push(header({ gnuMagic: true }, '././@LongLink', 'K', l.length, ''), pad(l));
        linkname = linkname.slice(0, 99);
      }
    }
    if (e.prefixAt !== undefined) {
      prefix = name.slice(0, e.prefixAt);
      name = name.slice(e.prefixAt + 1);
    }
    out.push(header(e, name, type, data.length, linkname, prefix));
    if (data.length > 0) out.push(pad(data));
  }
  if (opts.end ?? true) out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}
