/**
 * What a test cluster's executors leave of their lazy sandboxes when they are killed: lazy
 * sandboxes outlive their executor by design (runc containers, detached clip mount processes,
 * FUSE and overlay mounts, cgroups), so a test that ends without deleting them left them on the
 * machine. `sweepLazySandboxes` removes them all for one executor's state dir, the way the
 * driver's own teardown does (container, overlay, mount process, leftover mounts, cgroups).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { mountsUnder, readMountStatus, stopMountProcess, unmountFuse, unmountPath } from '@cryo/clip/fuse';
import { lazyCgroupGroup, removeLazyCgroups } from '../../apps/executor/src/runtime/lazy/cgroups';

export async function sweepLazySandboxes(stateDir: string, executorId: string): Promise<void> {
  const runcRoot = join(stateDir, 'runc');
  if (existsSync(runcRoot)) {
    const ids = execFileSync('runc', ['--root', runcRoot, 'list', '-q'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    for (const id of ids) {
      try {
        execFileSync('runc', ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore' });
      } catch {
        // gone meanwhile
      }
    }
  }
  const lazyRoot = join(stateDir, 'lazy');
  const sandboxes = existsSync(lazyRoot) ? readdirSync(lazyRoot, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name) : [];
  for (const sandboxId of sandboxes) {
    const dir = join(lazyRoot, sandboxId);
    await unmountPath(join(dir, 'rootfs')).catch(() => undefined);
    await stopMountProcess(readMountStatus(join(dir, 'mount.json')), join(dir, 'lower'), 2000).catch(() => undefined);
    removeLazyCgroups(lazyCgroupGroup(executorId, lazyRoot), sandboxId);
  }
  // Deepest first: an overlay sits on the FUSE mount it reads from.
  for (const m of mountsUnder(stateDir).sort((a, b) => b.mountpoint.length - a.mountpoint.length)) {
    if (m.fstype.startsWith('fuse')) await unmountFuse(m.mountpoint).catch(() => undefined);
    else await unmountPath(m.mountpoint).catch(() => undefined);
  }
}
