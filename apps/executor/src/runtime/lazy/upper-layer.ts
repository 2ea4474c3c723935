/**
 * A lazy sandbox's changes as one OCI layer. In two steps, so the sandbox stays frozen only for
 * the first:
 * 1. `captureUpperDir` (while paused): GNU tar copies the overlay upper dir as it is — overlay
 *    whiteouts (char devices 0:0), opaque-dir xattrs, hard links, devices, xattrs — to a file.
 * 2. `writeLayer` (after resume): convert that tar to the OCI/Docker layer format and gzip it,
 *    hashing the tar (diff_id) and the gzip (digest) on the way:
 *    - a whiteout `dir/name` becomes an empty regular file `dir/.wh.name`, mode 0600;
 *    - a dir with `trusted.overlay.opaque=y` keeps its entry and gains `dir/.wh..wh..opq`
 *      (the dir's permission bits and owner, time 0);
 *    - overlayfs's own `trusted.overlay.*` xattrs are dropped, other xattrs (security.capability) kept;
 *    - paths the runtime manages (/proc, /sys, /dev, /etc/hosts...) are left out, as Docker's
 *      init layer is left out of a commit.
 * The rules are those of moby's overlay whiteout converter (pkg/archive/archive_linux.go).
 * Names are bytes end to end (byte strings, see @cryo/clip's names.ts): a name the sandbox wrote
 * that is not UTF-8 comes back from the snapshot byte for byte.
 */
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { END_OF_ARCHIVE, TarParser, displayName, encodeHeader, padding, writeLayerBlob, type LayerBlobFile, type TarEntry, type TarHeader } from '@cryo/clip';
import { RUNTIME_MANAGED_PATHS } from './runtime-spec';

const execFileAsync = promisify(execFile);

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
const OVERLAY_XATTR = /^trusted\.overlay\./;

/** The layer blob (gzip) and what it holds. */
export interface LayerFile extends LayerBlobFile {
  entries: number;
  whiteouts: number;
  opaqueDirs: number;
}

/**
 * GNU tar of the upper dir, xattrs included (trusted.* needs root), names sorted. In the C locale
 * GNU tar converts no name: every name goes into the archive as its bytes.
 */
export async function captureUpperDir(upperDir: string, rawTarPath: string): Promise<void> {
  try {
    await execFileAsync('tar', [
      '--create', '--file', rawTarPath, '--directory', upperDir, '--format=posix', '--numeric-owner',
      '--xattrs', '--xattrs-include=*', '--sort=name', '--no-acls', '--no-selinux', '.',
    ], { maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } });
  } catch (err) {
    const stderr = typeof err === 'object' && err !== null && 'stderr' in err ? String(err.stderr).trim() : '';
    throw new Error(`tar of the upper dir ${upperDir} failed: ${stderr || (err instanceof Error ? err.message : String(err))}`);
  }
}

function normalise(path: string): string {
  return path.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '').replace(/^\.$/, '');
}

function isRuntimeManaged(name: string): boolean {
  return RUNTIME_MANAGED_PATHS.some((p) => name === p || name.startsWith(`${p}/`));
}

function withoutOverlayXattrs(xattrs: Map<string, Buffer>): Map<string, Buffer> {
  return new Map([...xattrs].filter(([k]) => !OVERLAY_XATTR.test(k)));
}

function parentAndBase(name: string): [string, string] {
  const slash = name.lastIndexOf('/');
  return slash < 0 ? ['', name] : [name.slice(0, slash + 1), name.slice(slash + 1)];
}

/** A layer entry: its tar header and where its bytes are in the raw tar (files only). */
export type LayerEntry = TarHeader & { dataFrom?: number };

export interface LayerEntryOptions {
  /** Paths left out of the layer (default: what the lazy runtime manages, /proc, /etc/hosts, ...). */
  skip?: (name: string) => boolean;
}

/**
 * The layer entries for one upper-dir entry (none, one, or a dir plus its opaque marker), with
 * times truncated to seconds and no atime/ctime, as Docker writes layers.
 */
export function layerEntriesFor<E extends TarHeader & { dataOffset?: number }>(entry: E, opts: LayerEntryOptions = {}): LayerEntry[] {
  const skip = opts.skip ?? isRuntimeManaged;
  const name = normalise(entry.name);
  if (name === '' || skip(name)) return [];
  const base: TarHeader = {
    name,
    type: entry.type,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    uname: entry.uname,
    gname: entry.gname,
    size: entry.type === 'file' ? entry.size : 0,
    mtime: { sec: entry.mtime.sec, nsec: 0 },
    linkname: entry.type === 'hardlink' ? normalise(entry.linkname) : entry.linkname,
    devmajor: entry.devmajor,
    devminor: entry.devminor,
    xattrs: withoutOverlayXattrs(entry.xattrs),
  };
  if (entry.type === 'chardev' && entry.devmajor === 0 && entry.devminor === 0) {
    const [dir, file] = parentAndBase(name);
    return [{ ...base, name: `${dir}${WHITEOUT_PREFIX}${file}`, type: 'file', mode: 0o600, size: 0, devmajor: 0, devminor: 0, xattrs: new Map() }];
  }
  if (entry.type === 'hardlink' && skip(base.linkname)) return [];
  if (entry.type === 'directory' && entry.xattrs.get('trusted.overlay.opaque')?.toString() === 'y') {
    const marker: LayerEntry = { ...base, name: `${name}/${OPAQUE_WHITEOUT}`, type: 'file', mode: entry.mode & 0o777, size: 0, mtime: { sec: 0, nsec: 0 }, linkname: '', xattrs: new Map() };
    return [base, marker];
  }
  return [entry.type === 'file' && entry.dataOffset !== undefined ? { ...base, dataFrom: entry.dataOffset } : base];
}

async function readEntries(rawTarPath: string): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const parser = new TarParser((e) => entries.push(e));
  const file = await open(rawTarPath, 'r');
  try {
    for await (const chunk of file.createReadStream({ highWaterMark: 1 << 20 })) {
      parser.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    }
  } finally {
    await file.close();
  }
  return entries;
}

/** Convert the raw upper-dir tar into a gzip'd OCI layer at `outPath`. */
export async function writeLayer(rawTarPath: string, outPath: string): Promise<LayerFile> {
  const converted = (await readEntries(rawTarPath)).flatMap((e) => layerEntriesFor(e));
  const raw = await open(rawTarPath, 'r');
  const stats = { entries: converted.length, whiteouts: 0, opaqueDirs: 0 };
  for (const e of converted) {
    const [, base] = parentAndBase(e.name);
    if (base === OPAQUE_WHITEOUT) stats.opaqueDirs++;
    else if (base.startsWith(WHITEOUT_PREFIX)) stats.whiteouts++;
  }
  async function* tarStream(): AsyncGenerator<Buffer> {
    for (const entry of converted) {
      yield encodeHeader(entry);
      if (entry.type !== 'file' || entry.size === 0 || entry.dataFrom === undefined) continue;
      let pos = entry.dataFrom;
      let left = entry.size;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(left, 1 << 20));
        const { bytesRead } = await raw.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) throw new Error(`upper-dir tar ${rawTarPath} ends inside ${displayName(entry.name)}`);
        yield buf.subarray(0, bytesRead);
        pos += bytesRead;
        left -= bytesRead;
      }
      yield padding(entry.size);
    }
    yield END_OF_ARCHIVE;
  }
  try {
    const blob = await writeLayerBlob(tarStream(), outPath);
    return { ...blob, ...stats };
  } finally {
    await raw.close();
  }
}
