/**
 * What is mounted where (from /proc/self/mounts), and taking FUSE mounts down, including the
 * stale ones a killed mount process leaves behind (every access answers ENOTCONN until
 * `fusermount -uz`).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The file system type clip mounts show in /proc/mounts (`-o subtype=clip`). */
export const CLIP_FSTYPE = 'fuse.clip';

export interface MountEntry {
  source: string;
  mountpoint: string;
  fstype: string;
  options: string[];
}

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMounts(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const [source, mountpoint, fstype, options] = line.split(' ');
    if (source === undefined || mountpoint === undefined || fstype === undefined || options === undefined) continue;
    out.push({ source: unescapeMountField(source), mountpoint: unescapeMountField(mountpoint), fstype, options: options.split(',') });
  }
  return out;
}

export function listMounts(file = '/proc/self/mounts'): MountEntry[] {
  return parseMounts(readFileSync(file, 'utf8'));
}

/** Mounts at `path` (most recent last; a path can be mounted over several times). */
export function mountsAt(path: string, mounts: MountEntry[] = listMounts()): MountEntry[] {
  const abs = resolve(path);
  return mounts.filter((m) => m.mountpoint === abs);
}

/** Mounts at or below `dir`, deepest first (the order to unmount them in). */
export function mountsUnder(dir: string, mounts: MountEntry[] = listMounts()): MountEntry[] {
  const abs = resolve(dir);
  return mounts
    .filter((m) => m.mountpoint === abs || m.mountpoint.startsWith(`${abs}/`))
    .sort((a, b) => b.mountpoint.length - a.mountpoint.length);
}

/**
 * ENOTCONN: the FUSE process behind the mount is gone. The probe looks up a name nobody uses:
 * the mountpoint's own attributes may be cached by the kernel for long and still answer.
 */
export async function isStaleMount(path: string): Promise<boolean> {
  try {
    await stat(join(path, `.cryo-probe-${process.pid}-${Date.now()}`));
    return false;
  } catch (err) {
    // ECONNABORTED while the kernel is still tearing the dead connection down
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOTCONN' || code === 'ECONNABORTED';
  }
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; error: string }> {
  try {
    await execFileAsync(cmd, args, { timeout: 30_000 });
    return { ok: true, error: '' };
  } catch (err) {
    const stderr = typeof err === 'object' && err !== null && 'stderr' in err ? String(err.stderr).trim() : '';
    return { ok: false, error: stderr !== '' ? stderr : err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Detach a FUSE mount (lazily: a process still using it keeps its files, new lookups fail).
 * Tries fusermount, fusermount3, then umount -l. True when nothing is mounted there afterwards.
 */
export async function unmountFuse(path: string): Promise<boolean> {
  const abs = resolve(path);
  const errors: string[] = [];
  for (const [cmd, args] of [['fusermount', ['-uz', abs]], ['fusermount3', ['-uz', abs]], ['umount', ['-l', abs]]] as const) {
    if (mountsAt(abs).length === 0) return true;
    const result = await run(cmd, [...args]);
    if (!result.ok) errors.push(`${cmd}: ${result.error}`);
  }
  if (mountsAt(abs).length === 0) return true;
  throw new Error(`cannot unmount ${abs}: ${errors.join('; ')}`);
}

/** Unmount any file system (overlay, bind...): plain first, lazily when busy. */
export async function unmountPath(path: string): Promise<void> {
  const abs = resolve(path);
  if (mountsAt(abs).length === 0) return;
  const plain = await run('umount', [abs]);
  if (mountsAt(abs).length === 0) return;
  const lazy = await run('umount', ['-l', abs]);
  if (mountsAt(abs).length === 0) return;
  throw new Error(`cannot unmount ${abs}: ${plain.error}; ${lazy.error}`);
}

/** If `path` holds a stale FUSE mount, take it down. True when one was cleaned up. */
export async function cleanupStaleMount(path: string): Promise<boolean> {
  const here = mountsAt(path);
  if (here.length === 0) return false;
  if (!(await isStaleMount(path))) return false;
  await unmountFuse(path);
  return true;
}

/** Clean every stale clip mount at or below `dir`; returns the mountpoints cleaned. */
export async function sweepStaleClipMounts(dir: string): Promise<string[]> {
  const cleaned: string[] = [];
  for (const m of mountsUnder(dir)) {
    if (m.fstype !== CLIP_FSTYPE) continue;
    if (await cleanupStaleMount(m.mountpoint)) cleaned.push(m.mountpoint);
  }
  return cleaned;
}
