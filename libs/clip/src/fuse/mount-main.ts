/**
 * One clip mount as its own long-lived process (run with tsx), so mounts outlive the executor
 * that started them: `spawn.ts` starts it detached, in its own session.
 *
 *   node --import tsx libs/clip/src/fuse/mount-main.ts --index FILE --mountpoint DIR \
 *     [--cache-dir DIR] [--registry-access-stdin] [--status-file FILE] [--debug]
 *
 * With --registry-access-stdin, registry access (@cryo/registry-auth's RegistryAccessSettings as
 * JSON: the snapshot registry block and Docker's config.json path) is read from stdin, which the
 * starting process writes and closes; without it, Docker's default config.json answers. The
 * process keeps it in memory only, and resolves credentials from it again whenever the registry
 * rejects them. Nothing secret is written anywhere.
 *
 * SIGTERM, SIGINT or SIGHUP unmount and exit 0. When the mount disappears underneath (someone ran
 * fusermount -u), the process exits too. An exception anywhere is logged, never fatal: dying
 * would leave a stale mount under a running sandbox.
 */
import { parseArgs } from 'node:util';
import { mountClip, type ClipMount } from './mount';
import { mountsAt } from './mounts';
import { writeMountStatus, type MountStatus } from './mount-status';
import { RegistryAccessSettingsSchema, validateConfig, type RegistryAccessSettings } from '@cryo/registry-auth';

const USAGE = 'usage: mount-main --index FILE --mountpoint DIR [--cache-dir DIR] [--registry-access-stdin] [--status-file FILE] [--debug]';

function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, pid: process.pid, msg, ...fields })}\n`);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The registry access the starting process wrote to our stdin (then closed). */
async function registryAccessFromStdin(): Promise<RegistryAccessSettings> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  const text = Buffer.concat(chunks).toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error('the registry access on stdin is not JSON');
  }
  return validateConfig(value, RegistryAccessSettingsSchema, 'registry access on stdin');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      index: { type: 'string' },
      mountpoint: { type: 'string' },
      'cache-dir': { type: 'string' },
      'registry-access-stdin': { type: 'boolean' },
      'status-file': { type: 'string' },
      debug: { type: 'boolean' },
    },
  });
  const index = values.index;
  const mountpoint = values.mountpoint;
  if (index === undefined || mountpoint === undefined) {
    process.stderr.write(`${USAGE}\n`);
    process.exit(2);
  }
  const statusFile = values['status-file'];
  const base: Omit<MountStatus, 'updated_at' | 'state'> = { pid: process.pid, mountpoint, index };
  const status = (state: MountStatus['state'], extra: Partial<MountStatus> = {}): void => {
    if (statusFile === undefined) return;
    try {
      writeMountStatus(statusFile, { ...base, state, ...extra });
    } catch (err) {
      log('warn', 'cannot write the status file', { file: statusFile, err: errorText(err) });
    }
  };
  // Never pin a directory of someone else's tree.
  process.chdir('/');
  process.on('uncaughtException', (err) => log('error', 'uncaught exception (mount kept)', { err: errorText(err), stack: err.stack }));
  process.on('unhandledRejection', (err) => log('error', 'unhandled rejection (mount kept)', { err: errorText(err) }));
  // Warnings (a registry that ignores Range...) as JSON lines too, instead of Node's stderr text.
  process.removeAllListeners('warning');
  process.on('warning', (w) => log('warn', w.message, { code: (w as Error & { code?: string }).code }));

  status('starting');
  let mount: ClipMount;
  try {
    const registry = values['registry-access-stdin'] === true ? await registryAccessFromStdin() : {};
    mount = await mountClip(index, mountpoint, {
      registry,
      ...(values['cache-dir'] === undefined ? {} : { cacheDir: values['cache-dir'] }),
      debug: values.debug === true,
      log: (level, msg, fields) => log(level, msg, fields),
    });
  } catch (err) {
    log('error', 'mount failed', { err: errorText(err) });
    status('failed', { error: errorText(err) });
    process.exit(1);
  }
  const image = mount.reader.index.image;
  log('info', 'mounted', { mountpoint: mount.mountpoint, index, image: image.reference, registry: image.registry });
  status('mounted');

  let lastStats = '';
  const report = (): void => {
    const { fs, fetch } = mount.stats();
    const text = JSON.stringify([fs, fetch]);
    if (text === lastStats) return;
    lastStats = text;
    status('mounted', { fs, fetch });
  };
  const statsTimer = setInterval(report, 2000);
  let stopping = false;
  const stop = (reason: string, code: number): void => {
    if (stopping) return;
    stopping = true;
    clearInterval(statsTimer);
    clearInterval(watchdog);
    log('info', 'unmounting', { reason });
    const done = (): void => {
      const { fs, fetch } = mount.stats();
      status('unmounted', { fs, fetch });
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
