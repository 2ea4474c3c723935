/**
 * One tar header, as the parser reports it and the writer takes it: the shape of Go's
 * `archive/tar.Header` (what Docker reads and writes layers with), with the typeflag as a name.
 *
 * Every string field is a byte string (see ../names.ts): names, link targets, user and group
 * names and xattr names are kept as the archive's bytes, whatever their encoding.
 *
 * Sources: POSIX.1-2017 pax (ustar header, extended header records), GNU tar's manual
 * ("Basic Tar Format", GNU extensions 'L'/'K', base-256 numbers), Go's archive/tar.
 */

/** Entry types, from the typeflag: '0'/'7' file, '1' hard link, '2' symlink, '3'/'4' char/block device, '5' directory, '6' FIFO. */
export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'directory' | 'fifo';

/** Seconds since the epoch (may be negative) and nanoseconds 0..999999999. */
export interface TarTime {
  sec: number;
  nsec: number;
}

export interface TarHeader {
  type: TarEntryType;
  /** path inside the archive, bytes as written (PAX `path` / GNU long name applied), not normalised; directories may end in '/' */
  name: string;
  /** target of a symlink or hard link ('' otherwise) */
  linkname: string;
  /** bytes of data (files only; 0 for everything else) */
  size: number;
  /** permission bits including setuid, setgid and sticky (0o7777) */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtime: TarTime;
  atime?: TarTime;
  ctime?: TarTime;
  devmajor: number;
  devminor: number;
  /** extended attributes (PAX `SCHILY.xattr.<name>`), values binary */
  xattrs: Map<string, Buffer>;
}

/** Typeflag character written for each type. */
export const TYPEFLAG: Readonly<Record<TarEntryType, string>> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  chardev: '3',
  blockdev: '4',
  directory: '5',
  fifo: '6',
};

export const BLOCK = 512;
