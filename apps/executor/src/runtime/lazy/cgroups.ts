/**
 * The cgroup of a lazy sandbox: `/cryo-lazy/<executor id>-<8 hex of the lazy root>/<sandbox id>`,
 * as runc's `linux.cgroupsPath` (OCI runtime spec, config-linux.md "Cgroups path"). The group
 * per executor instance keeps two executors on one host (two test runs, two clusters) from
 * sharing a cgroup when their sandbox ids meet: runc pauses, kills and limits by cgroup, so a
 * shared one froze and killed the other executor's container.
 */
import { createHash } from 'node:crypto';
import { readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

const CGROUP_ROOT = '/sys/fs/cgroup';
const TOP = 'cryo-lazy';

/** The group of one executor instance, named by its id and its lazy root (state_dir/lazy). */
export function lazyCgroupGroup(executorId: string, lazyRoot: string): string {
  return `${executorId}-${createHash('sha256').update(lazyRoot).digest('hex').slice(0, 8)}`;
}

/** `linux.cgroupsPath` of a sandbox: `/cryo-lazy/<group>/<sandbox id>`. */
export function lazyCgroupPath(group: string, sandboxId: string): string {
  return `/${TOP}/${group}/${sandboxId}`;
}

/**
 * Remove what runc leaves of a deleted sandbox's cgroup, then its group and `/cryo-lazy` once
 * empty, in every hierarchy (cgroup v2: the root itself; v1: one per controller). Best effort:
 * a directory that still holds a cgroup or a task is kept (rmdir fails), never forced.
 */
export function removeLazyCgroups(group: string, sandboxId: string, root = CGROUP_ROOT): void {
  let hierarchies: string[];
  try {
    hierarchies = [root, ...readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => join(root, d.name))];
  } catch {
    return;
  }
  for (const h of hierarchies) {
    for (const dir of [join(h, TOP, group, sandboxId), join(h, TOP, group), join(h, TOP)]) {
      try {
        rmdirSync(dir);
      } catch {
        // absent, not empty, or not ours to remove
      }
    }
  }
}
