/**
 * One clip mount as its own long-lived process, so mounts outlive the executor that started them:
 * mount-process.ts starts it detached, in its own session, from the bundle esbuild makes of this
 * file (mount-bundle.ts: no TypeScript to compile at start), or through tsx when there is none.
 *
 *   node libs/clip/dist/fuse/mount-main.cjs --index FILE --mountpoint DIR \
 *     [--cache-dir DIR] [--registry-access-stdin] [--status-file FILE] [--prefetch FILE] \
 *     [--access-out FILE] [--background-fill BYTES_PER_SEC] [--background-fill-max BYTES] [--debug]
 *   node libs/clip/dist/fuse/mount-main.cjs --job-stdin
 *
 * With --registry-access-stdin, registry access (@cryo/registry-auth's RegistryAccessSettings as
 * JSON: the snapshot registry block and Docker's config.json path) is read from stdin, which the
 * starting process writes and closes; without it, Docker's default config.json answers. The
 * process keeps it in memory only, and resolves credentials from it again whenever the registry
 * rejects them. Nothing secret is written anywhere.
 *
 * With --job-stdin the whole job (mount-job.ts, registry access included) comes as one JSON
 * object on stdin, and the process loads everything it needs (this code, the FUSE addon) before
 * reading it: a MountLauncher keeps such a process ready, so a mount costs no node start. A ready
 * process whose stdin closes without a job exits quietly. Its JSON log lines go to the job's log
 * file once it has one.
 *
 * --prefetch FILE: an access record (reader/access-record.ts) to fetch, in its order, from the
 * moment the index is open. --access-out FILE: on SIGUSR2 and when stopping, the process writes
 * what programs read through the mount (an access record) and its last range requests there,
 * atomically: `{ "written_at": ms since the epoch, "recording_started_at": ms, "record": {...},
 * "requests": [...] }` (request times and recording_started_at are this process's
 * performance.now(); a file's first read was at recording_started_at + first_ms).
 *
 * SIGTERM, SIGINT or SIGHUP unmount and exit 0. When the mount disappears underneath (someone ran
 * fusermount -u), the process exits too. An exception anywhere is logged, never fatal: dying
 * would leave a stale mount under a running sandbox.
 */
import { appendFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { decodeAccessRecord, type AccessRecord } from '../reader/access-record';
import { mountClip, type ClipMount } from './mount';
import { parseMountJob, type MountJob } from './mount-job';
import { mountsAt } from './mounts';
import { procStartTicks, writeMountStatus, type MountStatus } from './mount-status';
import { loadFuse } from './native';
import { RegistryAccessSettingsSchema, validateConfig, type RegistryAccessSettings } from '@cryo/registry-auth';

const USAGE = 'usage: mount-main --index FILE --mountpoint DIR [--cache-dir DIR] [--registry-access-stdin] [--status-file FILE] '
  + '[--prefetch FILE] [--access-out FILE] [--background-fill BYTES_PER_SEC] [--background-fill-max BYTES] [--debug]  |  mount-main --job-stdin';

/** Where JSON log lines go: stderr until a job names its log file. */
let logFile: string | undefined;

function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  const line = `${JSON.stringify({ time: new Date().toISOString(), level, pid: process.pid, msg, ...fields })}\n`;
  if (logFile !== undefined) {
    try {
      appendFileSync(logFile, line);
      return;
    } catch {
      // fall through to stderr
    }
  }
  process.stderr.write(line);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

/** The registry access the starting process wrote to our stdin (then closed). */
async function registryAccessFromStdin(): Promise<RegistryAccessSettings> {
  let value: unknown;
  try {
    value = JSON.parse(await readStdin());
  } catch {
    throw new Error('the registry access on stdin is not JSON');
  }
  return validateConfig(value, RegistryAccessSettingsSchema, 'registry access on stdin');
}

/** ms from process start to the first line of main(): node's start plus loading this code */
let mainStarted = 0;
/** ms spent waiting for the job / the registry access on stdin */
let stdinMs = 0;

/** The job from argv (`accessOnStdin`: its registry access is to be read from stdin), or undefined for usage. */
function jobFromArgs(): { job: MountJob; accessOnStdin: boolean } | 'job-stdin' | undefined {
  const { values } = parseArgs({
    options: {
      index: { type: 'string' },
      mountpoint: { type: 'string' },
      'cache-dir': { type: 'string' },
      'registry-access-stdin': { type: 'boolean' },
      'status-file': { type: 'string' },
      prefetch: { type: 'string' },
      'access-out': { type: 'string' },
      'background-fill': { type: 'string' },
      'background-fill-max': { type: 'string' },
      'job-stdin': { type: 'boolean' },
      debug: { type: 'boolean' },
    },
  });
  if (values['job-stdin'] === true) return 'job-stdin';
  if (values.index === undefined || values.mountpoint === undefined) return undefined;
  const rate = values['background-fill'] === undefined ? undefined : Number(values['background-fill']);
  if (rate !== undefined && !(Number.isSafeInteger(rate) && rate >= 0)) throw new Error('--background-fill takes a whole number of bytes per second');
  const fillMax = values['background-fill-max'] === undefined ? undefined : Number(values['background-fill-max']);
  if (fillMax !== undefined && !(Number.isSafeInteger(fillMax) && fillMax >= 0)) throw new Error('--background-fill-max takes a whole number of bytes');
  return {
    accessOnStdin: values['registry-access-stdin'] === true,
    job: {
      index: values.index,
      mountpoint: values.mountpoint,
      statusFile: values['status-file'],
      cacheDir: values['cache-dir'],
      debug: values.debug === true,
      prefetch: values.prefetch,
      accessOut: values['access-out'],
      backgroundFillBytesPerSec: rate,
      backgroundFillMaxBytes: fillMax,
    },
  };
}

/** A job from stdin, read after everything is loaded; undefined when stdin closed empty (the launcher went away). */
async function jobFromStdin(): Promise<MountJob | undefined> {
  loadFuse(); // the addon and fuse-native's JavaScript, before the job arrives
  const t = performance.now();
  const text = await readStdin();
  stdinMs = Math.round(performance.now() - t);
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error('the mount job on stdin is not JSON');
  }
  return parseMountJob(value);
}

function readPrefetch(file: string): AccessRecord | undefined {
  try {
    return decodeAccessRecord(readFileSync(file));
  } catch (err) {
    log('warn', 'cannot read the access record to prefetch; mounting without', { file, err: errorText(err) });
    return undefined;
  }
}

async function main(): Promise<void> {
  mainStarted = performance.now();
  // Never pin a directory of someone else's tree.
  process.chdir('/');
  process.on('uncaughtException', (err) => log('error', 'uncaught exception (mount kept)', { err: errorText(err), stack: err.stack }));
  process.on('unhandledRejection', (err) => log('error', 'unhandled rejection (mount kept)', { err: errorText(err) }));
  // Warnings (a registry that ignores Range...) as JSON lines too, instead of Node's stderr text.
  process.removeAllListeners('warning');
  process.on('warning', (w) => log('warn', w.message, { code: (w as Error & { code?: string }).code }));

  const fromArgs = jobFromArgs();
  if (fromArgs === undefined) {
    process.stderr.write(`${USAGE}\n`);
    process.exit(2);
  }
  const job = fromArgs === 'job-stdin' ? await jobFromStdin() : fromArgs.job;
  if (job === undefined) process.exit(0); // a ready process nobody needs any more
  logFile = job.logFile;
  await run(job, fromArgs !== 'job-stdin' && fromArgs.accessOnStdin);
}

async function run(job: MountJob, accessOnStdin: boolean): Promise<void> {
  const { statusFile, index, mountpoint } = job;
  const base: Omit<MountStatus, 'updated_at' | 'state'> = { pid: process.pid, proc_start: procStartTicks(process.pid), mountpoint, index };
  const status = (state: MountStatus['state'], extra: Partial<MountStatus> = {}): void => {
    if (statusFile === undefined) return;
    try {
      writeMountStatus(statusFile, { ...base, state, ...extra });
    } catch (err) {
      log('warn', 'cannot write the status file', { file: statusFile, err: errorText(err) });
    }
  };

  status('starting');
  let mount: ClipMount;
  try {
    if (accessOnStdin) {
      const t = performance.now();
      job.registryAccess = await registryAccessFromStdin();
      stdinMs = Math.round(performance.now() - t);
    }
    const prefetch = job.prefetch === undefined ? undefined : readPrefetch(job.prefetch);
    mount = await mountClip(index, mountpoint, {
      registry: job.registryAccess ?? {},
      ...(job.cacheDir === undefined ? {} : { cacheDir: job.cacheDir }),
      ...(prefetch === undefined ? {} : { prefetch }),
      ...(job.backgroundFillBytesPerSec === undefined ? {} : { backgroundFillBytesPerSec: job.backgroundFillBytesPerSec }),
      ...(job.backgroundFillMaxBytes === undefined ? {} : { backgroundFillMaxBytes: job.backgroundFillMaxBytes }),
      debug: job.debug === true,
      log: (level, msg, fields) => log(level, msg, fields),
    });
  } catch (err) {
    log('error', 'mount failed', { err: errorText(err) });
    status('failed', { error: errorText(err) });
    process.exit(1);
  }
  const image = mount.reader.index.image;
  // ms since this process started (node's own start included): what a mount costs to come up.
  log('info', 'mounted', { mountpoint: mount.mountpoint, index, image: image.reference, registry: image.registry,
    ready_ms: Math.round(performance.now()), main_ms: Math.round(mainStarted), stdin_ms: stdinMs, ...mount.startup });
  status('mounted');
  mount.prefetched?.then(
    (result) => log('info', 'prefetch done', { ...result, requests: mount.fetchStats().requests.prefetch }),
    (err: unknown) => log('warn', 'prefetch failed', { err: errorText(err) }),
  );

  const writeAccess = (): void => {
    if (job.accessOut === undefined) return;
    const tmp = `${job.accessOut}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify({
        written_at: Date.now(), recording_started_at: mount.recordingStartedAt ?? null, record: mount.accessRecord() ?? null, requests: mount.reader.requestLog(),
      }));
      renameSync(tmp, job.accessOut);
    } catch (err) {
      log('warn', 'cannot write the access record', { file: job.accessOut, err: errorText(err) });
    }
  };
  process.on('SIGUSR2', writeAccess);

  let lastStats = '';
  const report = (): void => {
    const { fs, fetch } = mount.stats();
    const fetchReasons = mount.fetchStats();
    const pack = mount.packStats();
    const text = JSON.stringify([fs, fetch, fetchReasons, pack]);
    if (text === lastStats) return;
    lastStats = text;
    status('mounted', { fs, fetch, fetch_reasons: fetchReasons, ...(pack === undefined ? {} : { pack }) });
  };
  const statsTimer = setInterval(report, 2000);
  let stopping = false;
  const stop = (reason: string, code: number): void => {
    if (stopping) return;
    stopping = true;
    clearInterval(statsTimer);
    clearInterval(watchdog);
    log('info', 'unmounting', { reason });
    writeAccess();
    const done = (): void => {
      const { fs, fetch } = mount.stats();
      const pack = mount.packStats();
      status('unmounted', { fs, fetch, fetch_reasons: mount.fetchStats(), ...(pack === undefined ? {} : { pack }) });
      process.exit(code);
    };
    mount.unmount().then(done, (err: unknown) => {
      log('error', 'unmount failed', { err: errorText(err) });
      done();
    });
    setTimeout(() => process.exit(code), 15_000).unref();
  };
  const watchdog = setInterval(() => {
    try {
      if (mountsAt(mount.mountpoint).length === 0) stop('the mount went away', 0);
    } catch (err) {
      log('warn', 'cannot read /proc/self/mounts', { err: errorText(err) });
    }
  }, 2000);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => stop(signal, 0));
}

main().catch((err: unknown) => {
  log('error', 'mount process failed', { err: errorText(err) });
  process.exit(1);
});
