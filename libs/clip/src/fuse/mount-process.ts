/**
 * Starting, finding and stopping mount processes (mount-main.ts). Each runs detached in its own
 * session, so it survives a restart of whoever started it; its status file says whether it is up.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mountsAt, unmountFuse } from './mounts';
import { readMountStatus, type MountStatus } from './mount-status';
import type { RegistryAccessSettings } from '@cryo/registry-auth';

/** The flag that tells the mount process to read its RegistryAccessSettings (JSON) from stdin. */
export const REGISTRY_ACCESS_STDIN = '--registry-access-stdin';

/** Absolute path of the mount process entry (a .ts file run through tsx). */
export const MOUNT_MAIN = fileURLToPath(new URL('./mount-main.ts', import.meta.url));

export interface MountProcessOptions {
  indexPath: string;
  mountpoint: string;
  /** written by the process: starting / mounted / failed / unmounted, pid, fetch stats */
  statusFile: string;
  /** the process's stdout and stderr (JSON lines), appended */
  logFile: string;
  cacheDir?: string;
  /**
   * How the process reaches the registry. Handed over on its stdin (a pipe, read once at start):
   * never in its argv, its environment or a file, where other users or logs could see it.
   */
  registryAccess?: RegistryAccessSettings;
  /** extra environment (the parent's is inherited: credential helpers and DOCKER_CONFIG see it) */
  env?: NodeJS.ProcessEnv;
  /** how long to wait for the mount to come up (default 30 s) */
  timeoutMs?: number;
}

/** node + the tsx loader + mount-main.ts: no build step. */
export function mountProcessCommand(): { command: string; args: string[] } {
  const require = createRequire(import.meta.url);
  const tsx = pathToFileURL(require.resolve('tsx')).href;
  return { command: process.execPath, args: ['--import', tsx, MOUNT_MAIN] };
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie is not alive; /proc says so.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/** True when `pid` is a mount process serving `mountpoint` (guards against pid reuse). */
export function isMountProcess(pid: number, mountpoint: string): boolean {
  if (!processAlive(pid)) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((a) => a.endsWith('mount-main.ts')) && argv.includes(resolve(mountpoint));
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Start a mount process and wait until it has mounted; throws with its error otherwise. */
export async function startMountProcess(opts: MountProcessOptions): Promise<MountStatus> {
  const { command, args } = mountProcessCommand();
  const mountpoint = resolve(opts.mountpoint);
  const argv = [...args, '--index', resolve(opts.indexPath), '--mountpoint', mountpoint, '--status-file', resolve(opts.statusFile)];
  if (opts.cacheDir !== undefined) argv.push('--cache-dir', resolve(opts.cacheDir));
  if (opts.registryAccess !== undefined) argv.push(REGISTRY_ACCESS_STDIN);
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  const log = openSync(opts.logFile, 'a');
  let exited: { code: number | null; signal: string | null } | undefined;
  let child;
  try {
    child = spawn(command, argv, { detached: true, stdio: [opts.registryAccess === undefined ? 'ignore' : 'pipe', log, log], env, cwd: '/' });
  } finally {
    closeSync(log);
  }
  if (child.stdin !== null) {
    // A child that died at once makes the write fail with EPIPE; its exit is reported below.
    child.stdin.on('error', () => undefined);
    child.stdin.end(JSON.stringify(opts.registryAccess));
  }
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  child.on('error', (err) => {
    exited = { code: null, signal: err.message };
  });
  child.unref();
  const pid = child.pid;
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const status = readMountStatus(opts.statusFile);
    if (status !== undefined && status.pid === pid) {
      if (status.state === 'mounted' && mountsAt(mountpoint).length > 0) return status;
      if (status.state === 'failed') throw new Error(`mount process for ${mountpoint} failed: ${status.error ?? 'no reason given'} (log: ${opts.logFile})`);
    }
    if (exited !== undefined) {
      throw new Error(`mount process for ${mountpoint} exited (${exited.code ?? exited.signal}) before mounting; see ${opts.logFile}`);
    }
    if (Date.now() > deadline) {
      if (pid !== undefined) await stopMountProcess(pid, mountpoint);
      throw new Error(`mount process for ${mountpoint} did not mount within ${(opts.timeoutMs ?? 30_000) / 1000} s; see ${opts.logFile}`);
    }
    await sleep(25);
  }
}

/**
 * Stop the mount process `pid` (SIGTERM: it unmounts; SIGKILL after `graceMs`) and make sure
 * nothing stays mounted at `mountpoint`, stale or not. Safe when the process is long gone.
 */
export async function stopMountProcess(pid: number | undefined, mountpoint: string, graceMs = 10_000): Promise<void> {
  if (pid !== undefined && isMountProcess(pid, mountpoint)) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (processAlive(pid) && Date.now() < deadline) await sleep(25);
    if (processAlive(pid)) {
      process.kill(pid, 'SIGKILL');
      while (processAlive(pid) && Date.now() < deadline + 5000) await sleep(25);
    }
  }
  if (mountsAt(mountpoint).length > 0) await unmountFuse(mountpoint);
}
