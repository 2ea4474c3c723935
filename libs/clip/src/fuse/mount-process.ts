/**
 * Starting, finding and stopping mount processes (mount-main.ts). Each runs detached in its own
 * session, so it survives a restart of whoever started it; its status file says whether it is up.
 *
 * Two ways to start one: `startMountProcess` spawns a process for one mount (its job in argv,
 * registry access on stdin); a `MountLauncher` keeps a process started ahead, loaded and waiting
 * for its job on stdin, so a mount does not wait for node to start (which is most of what a
 * mount costs: see docs/benchmarks-lazy.md, "Mount start").
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import type { AccessRecord } from '../reader/access-record';
import type { SpanRequest } from '../reader/span-store';
import { MOUNT_BUNDLE, ensureMountBundle } from './mount-bundle';
import type { MountJob } from './mount-job';
import { mountsAt, unmountFuse } from './mounts';
import { procStartTicks, readMountStatus, type MountStatus } from './mount-status';

/** The flag that tells the mount process to read its RegistryAccessSettings (JSON) from stdin. */
export const REGISTRY_ACCESS_STDIN = '--registry-access-stdin';

/** Absolute path of the mount process entry's TypeScript source (run through tsx when there is no bundle). */
export const MOUNT_MAIN = fileURLToPath(new URL('./mount-main.ts', import.meta.url));

export interface MountProcessOptions {
  indexPath: string;
  mountpoint: string;
  /** written by the process: starting / mounted / failed / unmounted, pid, fetch stats */
  statusFile: string;
  /** the process's JSON log lines, appended */
  logFile: string;
  cacheDir?: string;
  /**
   * How the process reaches the registry. Handed over on its stdin (a pipe, read once at start):
   * never in its argv, its environment or a file, where other users or logs could see it.
   */
  registryAccess?: RegistryAccessSettings;
  /** an access record file to prefetch (reader/access-record.ts, as stored in the registry) */
  prefetch?: string;
  /** where the process writes what was read through it, on SIGUSR2 (requestAccessRecord) and when it stops */
  accessOut?: string;
  /** background fill rate cap, compressed bytes/s (0 or absent: off) */
  backgroundFillBytesPerSec?: number;
  /** the background fill stops after this many compressed bytes (absent: the whole image) */
  backgroundFillMaxBytes?: number;
  /** extra environment (the parent's is inherited: credential helpers and DOCKER_CONFIG see it) */
  env?: NodeJS.ProcessEnv;
  /** how long to wait for the mount to come up (default 30 s) */
  timeoutMs?: number;
  /** run the prebuilt bundle (default; tsx when it cannot be built) or the TypeScript through tsx (benchmarks) */
  entry?: MountEntryKind;
}

export type MountEntryKind = 'bundle' | 'tsx';

/**
 * How to start a mount process: node on the prebuilt bundle of mount-main (mount-bundle.ts),
 * rebuilt first if its sources changed; node + the tsx loader + mount-main.ts when no bundle can
 * be built (`detail` says why).
 */
export async function mountProcessCommand(entry: MountEntryKind = 'bundle'): Promise<{ command: string; args: string[]; detail: string }> {
  const { bundle, detail } = entry === 'bundle' ? await ensureMountBundle() : { bundle: undefined, detail: 'tsx asked for' };
  if (bundle !== undefined) return { command: process.execPath, args: [bundle], detail };
  const require = createRequire(import.meta.url);
  const tsx = pathToFileURL(require.resolve('tsx')).href;
  return { command: process.execPath, args: ['--import', tsx, MOUNT_MAIN], detail };
}

/** The file names a mount process runs (the bundle, or the source under tsx). */
const MOUNT_ENTRIES = [basename(MOUNT_BUNDLE), basename(MOUNT_MAIN)];

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

/**
 * True when `pid` is a mount process serving `mountpoint` (guards against pid reuse): it runs a
 * mount entry and either started when its status file says (`procStart`, the way for processes
 * that took their job on stdin) or names the mountpoint in its argv.
 */
export function isMountProcess(pid: number, mountpoint: string, procStart?: number): boolean {
  if (!processAlive(pid)) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (!argv.some((a) => MOUNT_ENTRIES.includes(basename(a)))) return false;
    if (procStart !== undefined) return procStartTicks(pid) === procStart;
    return argv.includes(resolve(mountpoint));
  } catch {
    return false;
  }
}

/** isMountProcess for what a status file says. */
export function isMountProcessOf(status: Pick<MountStatus, 'pid' | 'mountpoint' | 'proc_start'>, mountpoint = status.mountpoint): boolean {
  return isMountProcess(status.pid, mountpoint, status.proc_start);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `statusFile` until process `pid` mounted (resolves), failed or exited (rejects), or the time is up. */
async function waitMounted(opts: MountProcessOptions, pid: number | undefined, exited: () => string | undefined, logHint: string): Promise<MountStatus> {
  const mountpoint = resolve(opts.mountpoint);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = readMountStatus(opts.statusFile);
    if (status !== undefined && status.pid === pid) {
      if (status.state === 'mounted' && mountsAt(mountpoint).length > 0) return status;
      if (status.state === 'failed') throw new Error(`mount process for ${mountpoint} failed: ${status.error ?? 'no reason given'} (log: ${opts.logFile})`);
    }
    const why = exited();
    if (why !== undefined) throw new Error(`mount process for ${mountpoint} exited (${why}) before mounting; see ${logHint}`);
    if (Date.now() > deadline) {
      // Our own child until it exits: no pid reuse to guard against.
      if (pid !== undefined && exited() === undefined) await terminate(pid);
      if (mountsAt(mountpoint).length > 0) await unmountFuse(mountpoint);
      throw new Error(`mount process for ${mountpoint} did not mount within ${timeoutMs / 1000} s; see ${logHint}`);
    }
    await sleep(5);
  }
}

/** Watches a child for its exit; `exited()` says how it ended, undefined while it runs. */
function exitWatch(child: ChildProcess): () => string | undefined {
  let exited: string | undefined;
  child.on('exit', (code, signal) => {
    exited = String(code ?? signal);
  });
  child.on('error', (err) => {
    exited = err.message;
  });
  return () => exited;
}

/** Start a mount process for one mount and wait until it has mounted; throws with its error otherwise. */
export async function startMountProcess(opts: MountProcessOptions): Promise<MountStatus> {
  const { command, args } = await mountProcessCommand(opts.entry);
  const mountpoint = resolve(opts.mountpoint);
  const argv = [...args, '--index', resolve(opts.indexPath), '--mountpoint', mountpoint, '--status-file', resolve(opts.statusFile)];
  if (opts.cacheDir !== undefined) argv.push('--cache-dir', resolve(opts.cacheDir));
  if (opts.prefetch !== undefined) argv.push('--prefetch', resolve(opts.prefetch));
  if (opts.accessOut !== undefined) argv.push('--access-out', resolve(opts.accessOut));
  if (opts.backgroundFillBytesPerSec !== undefined) argv.push('--background-fill', String(opts.backgroundFillBytesPerSec));
  if (opts.backgroundFillMaxBytes !== undefined) argv.push('--background-fill-max', String(opts.backgroundFillMaxBytes));
  if (opts.registryAccess !== undefined) argv.push(REGISTRY_ACCESS_STDIN);
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  const log = openSync(opts.logFile, 'a');
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
  const exited = exitWatch(child);
  child.unref();
  return waitMounted(opts, child.pid, exited, opts.logFile);
}

interface ReadyProcess {
  child: ChildProcess;
  stdin: Writable;
  exited: () => string | undefined;
}

export interface MountLauncherOptions {
  /** where ready processes write what they print before they have a job (node's own errors, libfuse), appended */
  logFile: string;
  /** run the bundle (default) or the TypeScript through tsx */
  entry?: MountEntryKind;
}

/**
 * Starts mount processes from one kept ready: loaded, FUSE addon open, waiting for a job on its
 * stdin (`mount-main --job-stdin`). Taking it for a mount costs the mount itself (loading the
 * index, mounting: tens of milliseconds), and the next one is started right away, in the
 * background. A ready process exits when its stdin closes without a job, so when the launcher's
 * process dies, nothing is left behind; a process that took its job has closed its stdin and is
 * on its own, like one from startMountProcess. Jobs that need their own environment get a fresh
 * process.
 */
export class MountLauncher {
  private ready: ReadyProcess | undefined;
  private closed = false;

  constructor(private readonly opts: MountLauncherOptions) {}

  /** pid of the process waiting for the next job, if one was started */
  get readyPid(): number | undefined {
    return this.ready?.child.pid;
  }

  /** Start the ready process now (the first mount then need not wait for node either). */
  async prepare(): Promise<void> {
    if (this.ready === undefined && !this.closed) this.ready = await this.spawnReady();
  }

  private async spawnReady(): Promise<ReadyProcess> {
    const { command, args } = await mountProcessCommand(this.opts.entry);
    const log = openSync(this.opts.logFile, 'a');
    let child;
    try {
      child = spawn(command, [...args, '--job-stdin'], { detached: true, stdio: ['pipe', log, log], cwd: '/' });
    } finally {
      closeSync(log);
    }
    const exited = exitWatch(child);
    child.unref();
    const stdin = child.stdin;
    if (stdin === null) throw new Error('internal: the mount process has no stdin pipe');
    stdin.on('error', () => undefined);
    // The pipe must not keep the launcher's process alive.
    (stdin as Writable & { unref?: () => void }).unref?.();
    return { child, stdin, exited };
  }

  /** Mount with the ready process (or a fresh one) and wait until it is mounted; throws with its error otherwise. */
  async start(opts: MountProcessOptions): Promise<MountStatus> {
    if (this.closed) throw new Error('the mount launcher is closed');
    if (opts.env !== undefined) return startMountProcess(opts);
    let proc = this.ready;
    this.ready = undefined;
    if (proc === undefined || proc.exited() !== undefined) proc = await this.spawnReady();
    // The next one loads while this one mounts.
    void this.prepare().catch(() => undefined);
    const job: MountJob = {
      index: resolve(opts.indexPath),
      mountpoint: resolve(opts.mountpoint),
      statusFile: resolve(opts.statusFile),
      logFile: resolve(opts.logFile),
      cacheDir: opts.cacheDir === undefined ? undefined : resolve(opts.cacheDir),
      registryAccess: opts.registryAccess,
      prefetch: opts.prefetch === undefined ? undefined : resolve(opts.prefetch),
      accessOut: opts.accessOut === undefined ? undefined : resolve(opts.accessOut),
      backgroundFillBytesPerSec: opts.backgroundFillBytesPerSec,
      backgroundFillMaxBytes: opts.backgroundFillMaxBytes,
    };
    proc.stdin.end(JSON.stringify(job));
    return waitMounted(opts, proc.child.pid, proc.exited, `${opts.logFile} and ${this.opts.logFile}`);
  }

  /** End the ready process (its stdin closes: it exits). Mounts already started are not touched. */
  close(): void {
    this.closed = true;
    this.ready?.stdin.end();
    this.ready = undefined;
  }
}

/** What a mount process wrote to its access-out file. */
export interface MountAccessOut {
  /** ms since the epoch */
  written_at: number;
  /** the mount process's performance.now() when it began recording: a file's first read was at this + its first_ms */
  recording_started_at: number | null;
  record: AccessRecord | null;
  /** its last range requests; `at` on the same clock as recording_started_at */
  requests: SpanRequest[];
}

function readAccessOut(file: string): MountAccessOut | undefined {
  try {
    const value = JSON.parse(readFileSync(file, 'utf8')) as MountAccessOut;
    return typeof value.written_at === 'number' ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Ask the mount process of `status` for what has been read through it (SIGUSR2) and wait for
 * `accessOut` to be written (default at most 5 s). Undefined when the process is gone or does
 * not answer; a process that is gone may have left its last record there, which is returned then.
 */
export async function requestAccessRecord(status: MountStatus, accessOut: string, timeoutMs = 5000): Promise<MountAccessOut | undefined> {
  const asked = Date.now();
  if (!isMountProcessOf(status)) return readAccessOut(accessOut);
  process.kill(status.pid, 'SIGUSR2');
  const deadline = asked + timeoutMs;
  while (Date.now() < deadline) {
    const mtime = statSync(accessOut, { throwIfNoEntry: false })?.mtimeMs ?? 0;
    if (mtime >= asked - 1000) {
      const out = readAccessOut(accessOut);
      if (out !== undefined && out.written_at >= asked) return out;
    }
    await sleep(10);
  }
  return undefined;
}

/**
 * Stop the mount process (SIGTERM: it unmounts; SIGKILL after `graceMs`) and make sure nothing
 * stays mounted at `mountpoint`, stale or not. `target` is its status (preferred: it tells the
 * process from a later one with the same pid) or a pid. Safe when the process is long gone.
 */
export async function stopMountProcess(target: MountStatus | number | undefined, mountpoint: string, graceMs = 10_000): Promise<void> {
  const pid = typeof target === 'number' ? target : target?.pid;
  const procStart = typeof target === 'number' ? undefined : target?.proc_start;
  if (pid !== undefined && isMountProcess(pid, mountpoint, procStart)) await terminate(pid, graceMs);
  if (mountsAt(mountpoint).length > 0) await unmountFuse(mountpoint);
}

/** SIGTERM (a mount process unmounts and exits), SIGKILL after `graceMs`. */
async function terminate(pid: number, graceMs = 10_000): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // gone
  }
  const deadline = Date.now() + graceMs;
  while (processAlive(pid) && Date.now() < deadline) await sleep(25);
  if (processAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    while (processAlive(pid) && Date.now() < deadline + 5000) await sleep(25);
  }
}
