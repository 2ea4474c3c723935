/**
 * Can this host restore sandboxes lazily? It needs /dev/fuse, fusermount, runc, overlayfs, root
 * (to mount), and the fuse-native addon loading. The answer goes into the heartbeat so the server
 * never places a lazy restore where it cannot run.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface LazyCapabilities {
  lazy: boolean;
  lazy_unavailable_reason: string | null;
}

export interface LazyCapabilityProbe {
  /** PATH to search (default process.env.PATH) */
  path?: string;
  runc?: string;
  devFuse?: string;
  filesystems?: string;
  uid?: number;
  /** loads fuse-native; default: the real loader from @cryo/clip/fuse */
  fuseNative?: () => Promise<{ ok: boolean; detail: string }>;
}

function onPath(name: string, path: string): string | undefined {
  if (name.includes('/')) return canExecute(name) ? name : undefined;
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const file = join(dir, name);
    if (canExecute(file)) return file;
  }
  return undefined;
}

function canExecute(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function defaultFuseNative(): Promise<{ ok: boolean; detail: string }> {
  try {
    const { fuseNativeStatus } = await import('@cryo/clip/fuse');
    return fuseNativeStatus();
  } catch (err) {
    return { ok: false, detail: `@cryo/clip/fuse does not load: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** Every reason lazy restore cannot work here, joined; lazy is true when there are none. */
export async function lazyCapabilities(probe: LazyCapabilityProbe = {}): Promise<LazyCapabilities> {
  const path = probe.path ?? process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin';
  const reasons: string[] = [];
  const uid = probe.uid ?? process.getuid?.() ?? -1;
  if (uid !== 0) reasons.push('the executor is not root (mounting FUSE and overlayfs needs it)');
  const devFuse = probe.devFuse ?? '/dev/fuse';
  try {
    accessSync(devFuse, constants.R_OK | constants.W_OK);
  } catch (err) {
    reasons.push(`${devFuse} is not usable (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (onPath('fusermount', path) === undefined && onPath('fusermount3', path) === undefined) {
    reasons.push('fusermount is not on PATH (install fuse3)');
  }
  const runc = onPath(probe.runc ?? 'runc', path);
  if (runc === undefined) {
    reasons.push(`${probe.runc ?? 'runc'} is not on PATH (install runc)`);
  } else {
    try {
      await execFileAsync(runc, ['--version'], { timeout: 10_000 });
    } catch (err) {
      reasons.push(`${runc} --version failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  let filesystems = '';
  try {
    filesystems = readFileSync(probe.filesystems ?? '/proc/filesystems', 'utf8');
  } catch {
    // reported below
  }
  if (!/\toverlay$/m.test(filesystems)) reasons.push('the kernel has no overlay filesystem (modprobe overlay)');
  if (!/\tfuse$/m.test(filesystems)) reasons.push('the kernel has no fuse filesystem (modprobe fuse)');
  const fuse = await (probe.fuseNative ?? defaultFuseNative)();
  if (!fuse.ok) reasons.push(fuse.detail);
  return { lazy: reasons.length === 0, lazy_unavailable_reason: reasons.length === 0 ? null : reasons.join('; ') };
}
