/**
 * Base images made locally (nothing can be pulled from public registries): a static busybox
 * root filesystem, imported with `docker import`.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, copyFileSync, symlinkSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DOCKER_BIN } from './dockerd';

export const CACHE_DIR = '/var/tmp/cryo-test-cache';

const BUSYBOX_APPLETS = ['sh', 'ls', 'cat', 'echo', 'sleep', 'mkdir', 'rm', 'dd', 'head', 'sha256sum',
  'md5sum', 'stat', 'test', 'true', 'false', 'wc', 'touch', 'id', 'env', 'seq', 'chmod', 'ln', 'cp', 'sync'];

/** A tarball of a tiny root filesystem around /bin/busybox (from Debian's busybox-static). */
export function busyboxRootfsTar(): string {
  const tar = join(CACHE_DIR, 'busybox-rootfs.tar');
  if (existsSync(tar)) return tar;
  const dir = join(CACHE_DIR, 'busybox-rootfs');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  for (const d of ['tmp', 'etc', 'root', 'data']) mkdirSync(join(dir, d), { recursive: true });
  execFileSync('chmod', ['1777', join(dir, 'tmp')]);
  copyFileSync('/bin/busybox', join(dir, 'bin', 'busybox'));
  execFileSync('chmod', ['755', join(dir, 'bin', 'busybox')]);
  for (const applet of BUSYBOX_APPLETS) symlinkSync('busybox', join(dir, 'bin', applet));
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
  const tmp = `${tar}.tmp`;
  execFileSync('tar', ['-C', dir, '--numeric-owner', '-cf', tmp, '.']);
  execFileSync('mv', [tmp, tar]);
  return tar;
}

/** `docker import` the busybox rootfs into the engine at `dockerHost` as `ref`. */
export function importBusybox(dockerHost: string, ref: string): void {
  execFileSync(DOCKER_BIN, ['-H', dockerHost, 'import', '-c', 'ENV PATH=/bin', '-c', 'CMD ["/bin/sh"]', busyboxRootfsTar(), ref], { stdio: 'pipe' });
}

export function docker(dockerHost: string, args: string[]): string {
  return execFileSync(DOCKER_BIN, ['-H', dockerHost, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/**
 * The docker CLI without blocking the event loop: for callers that serve something the engine
 * talks to (a registry proxy in the same process) or wait on cryo processes meanwhile.
 */
export function dockerAsync(dockerHost: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(DOCKER_BIN, ['-H', dockerHost, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8').trim());
      else reject(new Error(`docker ${args.join(' ')} exited ${code}: ${Buffer.concat(err).toString('utf8').trim()}`));
    });
    child.stdin.end(input ?? '');
  });
}

/**
 * A richer root filesystem for comparing layers with `docker commit`'s: every busybox applet,
 * a file with `security.capability` (a copy-up keeps it), a directory to delete and recreate
 * (opaque), files to delete (whiteouts), and two hard-linked files. Made with GNU tar --xattrs,
 * so `docker import` applies the xattr.
 */
export function richRootfsTar(): string {
  const tar = join(CACHE_DIR, 'busybox-rich-rootfs-v1.tar');
  if (existsSync(tar)) return tar;
  const dir = join(CACHE_DIR, 'busybox-rich-rootfs');
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['bin', 'tmp', 'etc', 'root', 'data', 'lower/dir/sub', 'lower/keep']) mkdirSync(join(dir, d), { recursive: true });
  execFileSync('chmod', ['1777', join(dir, 'tmp')]);
  copyFileSync('/bin/busybox', join(dir, 'bin', 'busybox'));
  execFileSync('chmod', ['755', join(dir, 'bin', 'busybox')]);
  const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a !== '' && a !== 'busybox');
  for (const applet of applets) symlinkSync('busybox', join(dir, 'bin', applet));
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(join(dir, 'lower', 'dir', 'a'), 'a');
  writeFileSync(join(dir, 'lower', 'dir', 'sub', 'b'), 'b');
  writeFileSync(join(dir, 'lower', 'gone'), 'gone');
  writeFileSync(join(dir, 'lower', 'keep', 'h1'), 'hard');
  execFileSync('ln', [join(dir, 'lower', 'keep', 'h1'), join(dir, 'lower', 'keep', 'h2')]);
  writeFileSync(join(dir, 'bin', 'capfile'), 'pretend this is ping');
  execFileSync('setfattr', ['-n', 'security.capability', '-v', '0x0100000200200000000000000000000000000000', join(dir, 'bin', 'capfile')]);
  const tmp = `${tar}.tmp`;
  execFileSync('tar', ['-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-cf', tmp, '.']);
  execFileSync('mv', [tmp, tar]);
  return tar;
}

/** `docker import` a root filesystem tar as `ref`, with Dockerfile-style `changes` (`VOLUME ["/data"]`). */
export function importRootfs(dockerHost: string, ref: string, tar: string, changes: string[] = []): void {
  const args = ['-c', 'ENV PATH=/bin', '-c', 'CMD ["/bin/sh"]', ...changes.flatMap((c) => ['-c', c])];
  execFileSync(DOCKER_BIN, ['-H', dockerHost, 'import', ...args, tar, ref], { stdio: 'pipe' });
}
