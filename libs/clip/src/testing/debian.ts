/** A realistic root filesystem for tests and benchmarks, built once per machine. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const TEST_CACHE_DIR = '/var/tmp/cryo-test-cache';

/** Debian bookworm (debootstrap minbase + python3) as a tarball; takes minutes the first time. */
export function debianRootfsTar(): string {
  const tar = join(TEST_CACHE_DIR, 'debian-bookworm-python3.tar');
  if (existsSync(tar)) return tar;
  mkdirSync(TEST_CACHE_DIR, { recursive: true });
  const dir = join(TEST_CACHE_DIR, 'bookworm-python3.build');
  rmSync(dir, { recursive: true, force: true });
  execFileSync('debootstrap', ['--variant=minbase', '--include=python3', 'bookworm', dir], { stdio: 'ignore', timeout: 900_000 });
  execFileSync('tar', ['-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-cf', `${tar}.tmp`, '.']);
  execFileSync('mv', [`${tar}.tmp`, tar]);
  rmSync(dir, { recursive: true, force: true });
  return tar;
}
