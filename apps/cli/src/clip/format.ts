/** How `cryo clip` prints stat results, listings and index summaries for people. */
import { formatBytes } from '../format';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFSOCK, type ClipIndex, type ClipStat } from '@cryo/clip';

const TYPE_CHAR: Record<number, string> = {
  [S_IFDIR]: 'd',
  [S_IFLNK]: 'l',
  [S_IFCHR]: 'c',
  [S_IFBLK]: 'b',
  [S_IFIFO]: 'p',
  [S_IFSOCK]: 's',
};

/** `-rwsr-xr-x` style, with setuid/setgid/sticky shown as ls does */
export function modeString(mode: number): string {
  const type = TYPE_CHAR[mode & S_IFMT] ?? '-';
  const rwx = (bits: number, special: boolean, specialChar: string): string => {
    const x = bits & 1;
    const exec = special ? (x ? specialChar : specialChar.toUpperCase()) : x ? 'x' : '-';
    return `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${exec}`;
  };
  return (
    type +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't')
  );
}

export function typeName(mode: number): string {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return 'directory';
    case S_IFLNK:
      return 'symbolic link';
    case S_IFCHR:
      return 'character special file';
    case S_IFBLK:
      return 'block special file';
    case S_IFIFO:
      return 'fifo';
    case S_IFSOCK:
      return 'socket';
    default:
      return 'regular file';
  }
}

export function formatTime(t: { sec: number; nsec: number }): string {
  const iso = new Date(t.sec * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '');
  return `${iso}.${String(t.nsec).padStart(9, '0')} +0000`;
}

export function humanBytes(n: number): string {
  return formatBytes(n);
}

export function lsLine(name: string, st: ClipStat, target: string | undefined): string {
  const isDev = (st.mode & S_IFMT) === S_IFCHR || (st.mode & S_IFMT) === S_IFBLK;
  const size = isDev ? `${st.rdevMajor}, ${st.rdevMinor}` : String(st.size);
  const date = new Date(st.mtime.sec * 1000).toISOString().slice(0, 16).replace('T', ' ');
  return `${modeString(st.mode)} ${String(st.nlink).padStart(3)} ${String(st.uid).padStart(5)} ${String(st.gid).padStart(5)} ${size.padStart(10)} ${date} ${name}${target !== undefined ? ` -> ${target}` : ''}`;
}

export function statText(path: string, st: ClipStat, target: string | undefined, xattrs: string[]): string {
  const lines = [
    `  File: ${path}${target !== undefined ? ` -> ${target}` : ''}`,
    `  Size: ${st.size}\tBlocks: ${st.blocks}\t${typeName(st.mode)}`,
    `Inode: ${st.ino}\tLinks: ${st.nlink}${(st.mode & S_IFMT) === S_IFCHR || (st.mode & S_IFMT) === S_IFBLK ? `\tDevice type: ${st.rdevMajor},${st.rdevMinor}` : ''}`,
    `Access: (${(st.mode & 0o7777).toString(8).padStart(4, '0')}/${modeString(st.mode)})  Uid: ${st.uid}  Gid: ${st.gid}`,
    `Access: ${formatTime(st.atime)}`,
    `Modify: ${formatTime(st.mtime)}`,
    `Change: ${formatTime(st.ctime)}`,
  ];
  if (xattrs.length > 0) lines.push(`Xattrs: ${xattrs.join(', ')}`);
  return lines.join('\n') + '\n';
}

export function infoText(index: ClipIndex): string {
  const img = index.image;
  const c = img.config;
  const uncompressed = index.layers.reduce((n, l) => n + l.uncompressedSize, 0);
  const pct = index.imageSize > 0 ? (100 * index.fileSize) / index.imageSize : 0;
  const out = [
    `Reference:      ${img.reference}`,
    `Registry:       ${img.registry}/${img.repository}`,
    `Manifest:       ${img.manifestDigest} (${img.manifestMediaType})`,
    `Platform:       ${[img.os, img.architecture, img.variant].filter(Boolean).join('/')}`,
    `Entrypoint:     ${c.entrypoint ? JSON.stringify(c.entrypoint) : '-'}`,
    `Cmd:            ${c.cmd ? JSON.stringify(c.cmd) : '-'}`,
    `WorkingDir:     ${c.workingDir || '-'}`,
    `User:           ${c.user || '-'}`,
    `Env:            ${c.env.join(' ') || '-'}`,
    `Files:          ${index.inodeCount} inodes`,
    `Span:           ${humanBytes(index.build.span)}`,
    `Image size:     ${humanBytes(index.imageSize)} compressed, ${humanBytes(uncompressed)} uncompressed`,
    `Index size:     ${humanBytes(index.fileSize)} (${pct.toFixed(2)} % of the compressed image)`,
    `Index format:   version ${index.formatVersion}${index.formatVersion < 2 ? ' (names stored as UTF-8: rebuild it if the image has names that are not UTF-8)' : ''}`,
    `Layers:`,
  ];
  for (const [i, l] of index.layers.entries()) {
    out.push(
      `  ${String(i).padStart(2)} ${l.digest.slice(0, 19)}  ${l.compression.padEnd(4)} ${humanBytes(l.size).padStart(10)} -> ${humanBytes(l.uncompressedSize).padStart(10)}  ${l.spans.length} spans  diff_id ${l.diffId.slice(0, 19)}`,
    );
  }
  return out.join('\n') + '\n';
}
