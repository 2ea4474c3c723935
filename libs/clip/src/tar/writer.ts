/**
 * Tar headers the way Go's archive/tar writes them for Docker (`tar.FormatPAX` rules): ustar,
 * with a PAX extended header in front when a field does not fit — a name or link target that is
 * long or not ASCII, a size over 8 GiB, ids over 2097151, a user or group name that is long or
 * not ASCII — and for xattrs (`SCHILY.xattr.<name>`).
 *
 * Names are byte strings (see ../names.ts) and are written as those bytes: a name that is not
 * UTF-8 goes into the PAX `path` record raw, as Go's writer and GNU tar do, and Docker, Go and
 * GNU tar read it back byte for byte. Times: mtime in whole seconds (Docker truncates layer times
 * to seconds); atime and ctime are not written.
 */
import { nameBytes } from '../names';
import { BLOCK, TYPEFLAG, type TarHeader } from './header';

const MAX_OCTAL_11 = 0o77777777777;
const MAX_OCTAL_7 = 0o7777777;

function isAscii(s: string): boolean {
  return /^[\x01-\x7f]*$/.test(s);
}

function octal(h: Buffer, off: number, len: number, value: number): void {
  h.write(`${Math.max(0, Math.floor(value)).toString(8).padStart(len - 1, '0')}\0`, off, len, 'latin1');
}

/** One PAX record: "<len> <key>=<value>\n", where <len> counts itself. Key and value are bytes. */
export function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(' '), nameBytes(key), Buffer.from('='), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** ustar name/prefix split, or undefined when the name needs a PAX path. */
function splitUstarName(name: string): { name: string; prefix: string } | undefined {
  if (!isAscii(name)) return undefined;
  if (name.length <= 100) return { name, prefix: '' };
  for (let i = name.indexOf('/'); i >= 0; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (prefix.length <= 155 && rest.length <= 100 && rest !== '') return { name: rest, prefix };
  }
  return undefined;
}

interface UstarFields {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}

function ustarHeader(f: UstarFields): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(f.name, 0, 100, 'latin1');
  octal(h, 100, 8, f.mode);
  octal(h, 108, 8, f.uid);
  octal(h, 116, 8, f.gid);
  octal(h, 124, 12, f.size);
  octal(h, 136, 12, f.mtime);
  h.write(f.typeflag, 156, 1, 'latin1');
  h.write(f.linkname, 157, 100, 'latin1');
  h.write('ustar\u000000', 257, 8, 'latin1');
  h.write(f.uname, 265, 32, 'latin1');
  h.write(f.gname, 297, 32, 'latin1');
  octal(h, 329, 8, f.devmajor);
  octal(h, 337, 8, f.devminor);
  h.write(f.prefix, 345, 155, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}

/** Zero bytes that pad `size` bytes of data to a whole block. */
export function padding(size: number): Buffer {
  const rem = size % BLOCK;
  return rem === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rem);
}

/**
 * The header block(s) of `entry` (a PAX header first when needed); its `size` bytes of data
 * follow, then `padding(size)`. A directory's name gets its trailing '/'. Throws a TypeError for
 * a string field that is not a byte string.
 */
export function encodeHeader(entry: TarHeader): Buffer {
  const name = entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  const pax: Buffer[] = [];
  let split = splitUstarName(name);
  if (split === undefined) {
    pax.push(paxRecord('path', nameBytes(name)));
    // What a reader without PAX support sees: the first 100 bytes, non-ASCII replaced.
    split = { name: name.slice(0, 100).replace(/[^\x01-\x7f]/g, '_'), prefix: '' };
  }
  let linkname = entry.linkname;
  if (linkname.length > 100 || !isAscii(linkname)) {
    pax.push(paxRecord('linkpath', nameBytes(linkname)));
    linkname = '';
  }
  const size = entry.type === 'file' ? entry.size : 0;
  if (size > MAX_OCTAL_11) pax.push(paxRecord('size', Buffer.from(String(size))));
  if (entry.uid > MAX_OCTAL_7) pax.push(paxRecord('uid', Buffer.from(String(entry.uid))));
  if (entry.gid > MAX_OCTAL_7) pax.push(paxRecord('gid', Buffer.from(String(entry.gid))));
  let { uname, gname } = entry;
  if (uname.length > 32 || !isAscii(uname)) {
    pax.push(paxRecord('uname', nameBytes(uname)));
    uname = '';
  }
  if (gname.length > 32 || !isAscii(gname)) {
    pax.push(paxRecord('gname', nameBytes(gname)));
    gname = '';
  }
  for (const [key, value] of [...entry.xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    pax.push(paxRecord(`SCHILY.xattr.${key}`, value));
  }
  const mtime = entry.mtime.sec;
  const header = ustarHeader({
    name: split.name,
    prefix: split.prefix,
    mode: entry.mode & 0o7777,
    uid: Math.min(entry.uid, MAX_OCTAL_7),
    gid: Math.min(entry.gid, MAX_OCTAL_7),
    size: Math.min(size, MAX_OCTAL_11),
    mtime,
    typeflag: TYPEFLAG[entry.type],
    linkname,
    uname,
    gname,
    devmajor: entry.devmajor,
    devminor: entry.devminor,
  });
  if (pax.length === 0) return header;
  const records = Buffer.concat(pax);
  const paxHeader = ustarHeader({
    name: `PaxHeaders.0/${split.name}`.slice(0, 100),
    prefix: '',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: records.length,
    mtime,
    typeflag: 'x',
    linkname: '',
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([paxHeader, records, padding(records.length), header]);
}

/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
