/**
 * The clip index file (version 2):
 *
 *   header   72 bytes: magic "CLIPIDX\n", u32 version, u32 header length,
 *            f64 meta deflated length, f64 meta raw length, f64 windows length,
 *            sha256 over everything after the header
 *   meta     raw-deflated: image, build info, layers + spans, string pool,
 *            inode table (fixed records), dirent table (fixed records),
 *            xattr table (fixed records)
 *   windows  each checkpoint window raw-deflated on its own, so a reader
 *            inflates only the one it needs
 *
 * Directory children are contiguous in the dirent table and sorted by name
 * bytes: readdir is a slice, lookup a binary search.
 *
 * Versions: 2 stores every name, link target and xattr name as the archive's
 * bytes. Version 1 had the same layout but stored names decoded as UTF-8 and
 * encoded again, so bytes that are not UTF-8 became U+FFFD (and two such
 * names could collapse into one). Version 1 files are still read: their names
 * are exact wherever the image's names are UTF-8, which is all version 1 could
 * hold.
 */
export const MAGIC = Buffer.from('CLIPIDX\n', 'latin1');
export const VERSION = 2;
/** versions this build reads */
export const READABLE_VERSIONS: readonly number[] = [1, 2];
export const HEADER_SIZE = 72;

/** inode record */
export const INODE_SIZE = 104;
export const I_MODE = 0;
export const I_UID = 4;
export const I_GID = 8;
export const I_NLINK = 12;
export const I_SIZE = 16;
export const I_DATA = 24;
export const I_LAYER = 32; // u16, 0xffff = no data
export const I_FLAGS = 34; // u16: 1 = atime present, 2 = ctime present
export const I_MAJOR = 36;
export const I_MINOR = 40;
export const I_MTIME = 44; // f64 sec + u32 nsec
export const I_ATIME = 56;
export const I_CTIME = 68;
export const I_LINK = 80; // u32 pool offset + u32 length
export const I_CHILD = 88; // u32 first dirent + u32 count
export const I_XATTR = 96; // u32 first xattr + u32 count

/** dirent record: u32 name offset, u32 name length, u32 inode */
export const DIRENT_SIZE = 12;
/** xattr record: u32 name offset, u32 name length, u32 value offset, u32 value length */
export const XATTR_SIZE = 16;
export const NO_LAYER = 0xffff;
