/**
 * Pieces the benchmarks that run a whole cluster share: emptying a directory and a last-resort
 * sweep of lazy sandboxes.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { mountsUnder, readMountStatus, stopMountProcess, unmountPath } from '@cryo/clip/fuse';

export function emptyDir(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir)) rmSync(join(dir, entry), { recursive: true, force: true });
}

/** Last-resort cleanup of lazy sandboxes the API did not remove: runc containers, then mounts. */
export async function sweepLazy(stateDir: string): Promise<void> {
  const runcRoot = join(stateDir, 'runc');
  if (existsSync(runcRoot)) {
    let ids: string[] = [];
    try { ids = execFileSync('runc', ['--root', runcRoot, 'list', '-q'], { encoding: 'utf8' }).split('\n').filter((s) => s !== ''); } catch { /* none */ }
    for (const id of ids) {
      try { execFileSync('runc', ['--root', runcRoot, 'delete', '-f', id], { stdio: 'ignore' }); } catch { /* gone */ }
    }
  }
  const lazyRoot = join(stateDir, 'lazy');
  for (const m of mountsUnder(lazyRoot).sort((a, b) => b.mountpoint.length - a.mountpoint.length)) {
    if (m.fstype.startsWith('fuse')) {
      const status = readMountStatus(join(m.mountpoint, '..', 'mount.json'));
      await stopMountProcess(status, m.mountpoint).catch(() => undefined);
    } else {
      await unmountPath(m.mountpoint).catch(() => undefined);
    }
  }
}
