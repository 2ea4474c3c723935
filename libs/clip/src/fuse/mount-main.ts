/**
 * One clip mount as its own long-lived process (run with tsx), so mounts outlive the executor
 * that started them: `spawn.ts` starts it detached, in its own session.
 *
 *   node --import tsx libs/clip/src/fuse/mount-main.ts --index FILE --mountpoint DIR \
 *     [--cache-dir DIR] [--registry-config FILE] [--status-file FILE] [--debug]
 *
 * Registry access comes from --registry-config or $CRYO_CLIP_REGISTRY_CONFIG (a dataplane-config
 * like YAML: `snapshot_registry`, `docker_config`; `${VAR}` expanded from this process's env), or
 * from $CRYO_CLIP_REGISTRY (the same keys as JSON). Nothing secret is written anywhere.
 *
 * SIGTERM, SIGINT or SIGHUP unmount and exit 0. When the mount disappears underneath (someone ran
 * fusermount -u), the process exits too. An exception anywhere is logged, never fatal: dying
 * would leave a stale mount under a running sandbox.
 */
import { parseArgs } from 'node:util';
import { mountClip, type ClipMount } from './mount';
import { mountsAt } from './mounts';
import { writeMountStatus, type MountStatus } from './mount-status';
import { REGISTRY_CONFIG_ENV, REGISTRY_INLINE_ENV, loadRegistryAccess, parseRegistryAccess, type RegistryAccessConfig } from './registry-access';

const USAGE = 'usage: mount-main --index FILE --mountpoint DIR [--cache-dir DIR] [--registry-config FILE] [--status-file FILE] [--debug]';

function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, pid: process.pid, msg, ...fields })}\n`);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function registryAccess(file: string | undefined): RegistryAccessConfig {
  const path = file ?? process.env[REGISTRY_CONFIG_ENV];
  if (path !== undefined && path !== '') return loadRegistryAccess(path);
  const inline = process.env[REGISTRY_INLINE_ENV];
  if (inline !== undefined && inline !== '') return parseRegistryAccess(JSON.parse(inline), `$${REGISTRY_INLINE_ENV}`);
  return {};
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      index: { type: 'string' },
      mountpoint: { type: 'string' },
      'cache-dir': { type: 'string' },
      'registry-config': { type: 'string' },
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
    mount = await mountClip(index, mountpoint, {
      registry: registryAccess(values['registry-config']),
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
