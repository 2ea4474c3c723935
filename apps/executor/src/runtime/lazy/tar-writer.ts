/**
 * Tar headers the way Go's archive/tar (and so Docker) reads them: ustar, with a PAX extended
 * header in front when a field does not fit (long or non-ASCII names and link targets, sizes over
 * 8 GiB, large ids) and for xattrs (`SCHILY.xattr.<name>`).
 */

export type LayerEntryType = 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'directory' | 'fifo';

export interface LayerEntry {
  /** relative, no leading "./" or "/", no trailing "/" */
  name: string;
  type: LayerEntryType;
  /** permission bits incl. setuid/setgid/sticky */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** seconds since the epoch (Docker truncates to seconds) */
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Buffer>;
}

const TYPEFLAG: Record<LayerEntryType, string> = {
  file: '0', hardlink: '1', symlink: '2', chardev: '3', blockdev: '4', directory: '5', fifo: '6',
};

export const BLOCK = 512;
const MAX_OCTAL_11 = 0o77777777777;
const MAX_OCTAL_7 = 0o7777777;

function isAscii(s: string): boolean {
  return /^[\x01-\x7f]*$/.test(s);
}

function octal(h: Buffer, off: number, len: number, value: number): void {
  h.write(`${Math.max(0, Math.floor(value)).toString(8).padStart(len - 1, '0')}\0`, off, len, 'latin1');
}

/** One PAX record: "<len> <key>=<value>\n", where <len> counts itself. */
export function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
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

function ustarHeader(fields: {
  name: string; prefix: string; mode: number; uid: number; gid: number; size: number; mtime: number;
  typeflag: string; linkname: string; devmajor: number; devminor: number;
}): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(fields.name, 0, 100, 'utf8');
  octal(h, 100, 8, fields.mode);
  octal(h, 108, 8, fields.uid);
  octal(h, 116, 8, fields.gid);
  octal(h, 124, 12, fields.size);
  octal(h, 136, 12, fields.mtime);
  h.write(fields.typeflag, 156, 1, 'latin1');
  h.write(fields.linkname, 157, 100, 'utf8');
  h.write('ustar\u000000', 257, 8, 'latin1');
  octal(h, 329, 8, fields.devmajor);
  octal(h, 337, 8, fields.devminor);
  h.write(fields.prefix, 345, 155, 'utf8');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}

export function padding(size: number): Buffer {
  const rem = size % BLOCK;
  return rem === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rem);
}

/** The header block(s) of `entry` (PAX header first when needed); its data follows, padded. */
export function encodeHeader(entry: LayerEntry): Buffer {
  const dirName = entry.type === 'directory' ? `${entry.name}/` : entry.name;
  const pax: Buffer[] = [];
  let split = splitUstarName(dirName);
  if (split === undefined) {
    pax.push(paxRecord('path', Buffer.from(dirName, 'utf8')));
    split = { name: Buffer.from(dirName, 'utf8').subarray(0, 100).toString('latin1').replace(/[^\x01-\x7f]/g, '_'), prefix: '' };
  }
  let linkname = entry.linkname;
  if (linkname.length > 100 || !isAscii(linkname)) {
    pax.push(paxRecord('linkpath', Buffer.from(linkname, 'utf8')));
    linkname = '';
  }
  const size = entry.type === 'file' ? entry.size : 0;
  if (size > MAX_OCTAL_11) pax.push(paxRecord('size', Buffer.from(String(size))));
  if (entry.uid > MAX_OCTAL_7) pax.push(paxRecord('uid', Buffer.from(String(entry.uid))));
  if (entry.gid > MAX_OCTAL_7) pax.push(paxRecord('gid', Buffer.from(String(entry.gid))));
  for (const [key, value] of [...entry.xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    pax.push(paxRecord(`SCHILY.xattr.${key}`, value));
  }
  const header = ustarHeader({
    name: split.name,
    prefix: split.prefix,
    mode: entry.mode & 0o7777,
    uid: Math.min(entry.uid, MAX_OCTAL_7),
    gid: Math.min(entry.gid, MAX_OCTAL_7),
    size: Math.min(size, MAX_OCTAL_11),
    mtime: entry.mtime,
    typeflag: TYPEFLAG[entry.type],
    linkname,
    devmajor: entry.devmajor,
    devminor: entry.devminor,
  });
  if (pax.length === 0) return header;
  const records = Buffer.concat(pax);
  const paxName = `PaxHeaders.0/${split.name}`.slice(0, 100);
  const paxHeader = ustarHeader({
    name: paxName, prefix: '', mode: 0o644, uid: 0, gid: 0, size: records.length, mtime: entry.mtime,
    typeflag: 'x', linkname: '', devmajor: 0, devminor: 0,
  });
  return Buffer.concat([paxHeader, records, padding(records.length), header]);
}

/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
