/**
 * The writable root of a lazy sandbox: overlayfs with the read-only FUSE mount as its lower dir.
 * redirect_dir and metacopy stay off so that every change lands in the upper dir as whole files
 * and directories (a renamed dir is copied, not recorded as a redirect xattr): the upper dir is
 * then exactly one OCI layer's worth of changes. index=off: no hard-link index over a FUSE lower.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mountsAt } from '@cryo/clip/fuse';

const execFileAsync = promisify(execFile);

export interface OverlayDirs {
  lower: string;
  upper: string;
  work: string;
  merged: string;
}

export function overlayOptions(dirs: OverlayDirs): string {
  for (const dir of [dirs.lower, dirs.upper, dirs.work]) {
    // mount(8) splits options at commas and overlayfs splits lowerdir at colons.
    if (/[,:\\]/.test(dir)) throw new Error(`overlay dir ${dir} contains a comma, colon or backslash; choose a state_dir without them`);
  }
  return `lowerdir=${dirs.lower},upperdir=${dirs.upper},workdir=${dirs.work},redirect_dir=off,metacopy=off,index=off`;
}

export async function mountOverlay(dirs: OverlayDirs): Promise<void> {
  if (mountsAt(dirs.merged).some((m) => m.fstype === 'overlay')) return;
  try {
    await execFileAsync('mount', ['-t', 'overlay', 'overlay', '-o', overlayOptions(dirs), dirs.merged], { timeout: 30_000 });
  } catch (err) {
    const stderr = typeof err === 'object' && err !== null && 'stderr' in err ? String(err.stderr).trim() : '';
    throw new Error(`cannot mount the overlay at ${dirs.merged}: ${stderr || (err instanceof Error ? err.message : String(err))}`);
  }
}
