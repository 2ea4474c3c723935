/**
 * The large, realistic image of the lazy-restore benchmarks: debootstrap minbase + python3 (the
 * shared cached build) with more packages installed on top (numpy among them), flattened to one
 * tar and cached under /var/tmp/cryo-test-cache. The first run builds it (a few minutes, needs
 * Debian's mirror); later runs reuse it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { TEST_CACHE_DIR, debianRootfsTar } from '../libs/clip/src/testing/debian';
import { DOCKER_BIN, type TestDockerd } from '../test/support/dockerd';

/** Installed on top of debootstrap minbase + python3 to make a large, realistic image. */
export const EXTRA_PACKAGES = ['python3-numpy', 'python3-pip', 'python3-venv', 'git', 'curl', 'ca-certificates', 'gcc', 'libc6-dev', 'make', 'xz-utils'];
export const LARGE_TAR = join(TEST_CACHE_DIR, 'debian-bookworm-python3-large.tar');
export const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** debootstrap minbase + python3 (the shared cached build) + EXTRA_PACKAGES, flattened to one tar. */
export function largeDebianRootfsTar(engine: TestDockerd, logDir: string): string {
  if (existsSync(LARGE_TAR)) return LARGE_TAR;
  const base = 'cryo-bench/debian-base:build';
  const name = `cryo-bench-build-${randomBytes(4).toString('hex')}`;
  const log = join(logDir, 'image-build.log');
  const docker = (args: string[]): void => {
    const fd = openSync(log, 'a');
    try {
      execFileSync(DOCKER_BIN, ['-H', engine.host, ...args], { stdio: ['ignore', fd, fd], timeout: 900_000 });
    } finally {
      closeSync(fd);
    }
  };
  console.error(`building ${LARGE_TAR} (once): debian+python3 + ${EXTRA_PACKAGES.join(' ')}; log ${log}`);
  docker(['import', '-c', `ENV ${PATH_ENV}`, debianRootfsTar(), base]);
  try {
    docker(['run', '--name', name, '--network', 'host', '-e', 'DEBIAN_FRONTEND=noninteractive', base, 'sh', '-ec',
      `apt-get update; apt-get install -y --no-install-recommends ${EXTRA_PACKAGES.join(' ')}; apt-get clean; rm -rf /var/lib/apt/lists/*`]);
    docker(['export', '-o', `${LARGE_TAR}.tmp`, name]);
    execFileSync('mv', [`${LARGE_TAR}.tmp`, LARGE_TAR]);
  } finally {
    try { docker(['rm', '-f', name]); } catch { /* never created */ }
    try { docker(['rmi', '-f', base]); } catch { /* already gone */ }
    rmSync(`${LARGE_TAR}.tmp`, { force: true });
  }
  return LARGE_TAR;
}

