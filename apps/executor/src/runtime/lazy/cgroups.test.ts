import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lazyCgroupGroup, lazyCgroupPath, removeLazyCgroups } from './cgroups';

describe('lazy sandbox cgroups', () => {
  it('give two executor instances different cgroups for the same sandbox id', () => {
    const a = lazyCgroupPath(lazyCgroupGroup('exec-1', '/var/lib/a/lazy'), 'lazy-a');
    const b = lazyCgroupPath(lazyCgroupGroup('exec-1', '/var/lib/b/lazy'), 'lazy-a');
    expect(a).toMatch(/^\/cryo-lazy\/exec-1-[0-9a-f]{8}\/lazy-a$/);
    expect(b).not.toBe(a);
    expect(lazyCgroupGroup('exec-1', '/var/lib/a/lazy')).toBe(lazyCgroupGroup('exec-1', '/var/lib/a/lazy'));
  });

  it('removes empty leftovers in every hierarchy and keeps what is still in use', () => {
    const root = mkdtempSync(join(tmpdir(), 'cgroups-'));
    for (const h of ['freezer', 'memory']) mkdirSync(join(root, h, 'cryo-lazy', 'g', 'sb'), { recursive: true });
    mkdirSync(join(root, 'pids', 'cryo-lazy', 'g', 'other'), { recursive: true }); // another sandbox of the group
    writeFileSync(join(root, 'cpu'), ''); // not a directory
    removeLazyCgroups('g', 'sb', root);
    expect(existsSync(join(root, 'freezer', 'cryo-lazy'))).toBe(false);
    expect(existsSync(join(root, 'memory', 'cryo-lazy'))).toBe(false);
    expect(existsSync(join(root, 'pids', 'cryo-lazy', 'g', 'other'))).toBe(true);
    rmSync(root, { recursive: true, force: true });
  });
});
