/**
 * One lazy sandbox on this host, from its directory up: mount its clip index (a detached mount
 * process), put the overlay on top, run the container with runc; and take all of that down again,
 * in the reverse order, never deleting through a mount. The runc-lazy driver, its snapshot and its
 * recovery all work through these steps.
 */
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { ClipIndex } from '@cryo/clip';
import {
  MountLauncher,
  isMountProcessOf,
  requestAccessRecord,
  listMounts,
  mountsAt,
  mountsUnder,
  readMountStatus,
  stopMountProcess,
  unmountFuse,
  unmountPath,
  type MountAccessOut,
  type MountEntry,
  type MountStatus,
} from '@cryo/clip/fuse';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { CryoError, SANDBOX_LABELS, containerName } from '@cryo/snapshot';
import type { ProgressSink } from '../driver';
import { roundMs } from '../pause-window';
import { lazyCgroupGroup, lazyCgroupPath, removeLazyCgroups } from './cgroups';
import { resolveImageUser } from './image-user';
import { lazySandboxLayout, type LazySandboxLayout, type LazySandboxRecord } from './layout';
import { mountOverlay } from './overlay';
import type { Runc } from './runc';
import { buildRuntimeSpec, hostsFileText, sandboxHostname } from './runtime-spec';

const execFileAsync = promisify(execFile);

export interface LazyCreateTimings {
  mount_ms: number;
  overlay_ms: number;
  run_ms: number;
  total_ms: number;
}

export interface LazySandboxesOptions {
  /** state_dir/lazy: one directory per sandbox */
  lazyRoot: string;
  runc: Runc;
  /** host-wide span cache shared by all mounts */
  cacheDir: string;
  executorId: string;
  /** handed to each mount process at mount time (on its stdin, never in argv, env or a file) */
  registryAccess: RegistryAccessSettings;
  /** how long a mount may take to come up (default 30 s) */
  mountTimeoutMs?: number | undefined;
  /** Called with a mount process's status file once the process has ended (its last fetch counts): metrics. */
  onMountStopped?: ((statusFile: string, status: MountStatus) => void) | undefined;
  /** what mount processes print before they have a mount of their own (node's own errors) */
  launcherLog: string;
  /** background fill of each mount, compressed bytes/s (0: off) */
  backgroundFillBytesPerSec: number;
  /** at mount time: the most compressed bytes a mount's background fill may fetch (undefined: the whole image) */
  backgroundFillMaxBytes?: (() => number | undefined) | undefined;
  log: Logger;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function tail(file: string, bytes = 2000): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.slice(-bytes).trim();
  } catch {
    return '';
  }
}

export class LazySandboxes {
  /** this executor instance's cgroup group (cgroups.ts) */
  private readonly cgroupGroup: string;
  /** keeps a mount process loaded and waiting, so a mount does not wait for node to start */
  private readonly launcher: MountLauncher;

  constructor(private readonly opts: LazySandboxesOptions) {
    this.cgroupGroup = lazyCgroupGroup(opts.executorId, opts.lazyRoot);
    this.launcher = new MountLauncher({ logFile: opts.launcherLog });
  }

  /** Start the ready mount process now (the executor's start), so that the first mount is fast too. */
  prepare(): Promise<void> {
    return this.launcher.prepare();
  }

  /** End the ready mount process; mounts keep running. */
  close(): void {
    this.launcher.close();
  }

  get runc(): Runc {
    return this.opts.runc;
  }

  layout(sandboxId: string): LazySandboxLayout {
    return lazySandboxLayout(this.opts.lazyRoot, sandboxId);
  }

  /** Mount the index, the overlay, and run the container (create, and recovery of a broken mount). */
  async bringUp(record: LazySandboxRecord, layout: LazySandboxLayout, progress: ProgressSink): Promise<LazyCreateTimings> {
    const started = performance.now();
    progress({ phase: 'mount', bytes_done: 0, bytes_total: null });
    const prefetch = record.access?.prefetched ?? null;
    const fillMax = this.opts.backgroundFillBytesPerSec > 0 ? this.opts.backgroundFillMaxBytes?.() : undefined;
    await this.launcher.start({
      indexPath: record.index_path,
      mountpoint: layout.lower,
      statusFile: layout.mountStatus,
      logFile: layout.mountLog,
      cacheDir: this.opts.cacheDir,
      registryAccess: this.opts.registryAccess,
      accessOut: layout.mountAccess,
      backgroundFillBytesPerSec: this.opts.backgroundFillBytesPerSec,
      ...(fillMax === undefined ? {} : { backgroundFillMaxBytes: fillMax }),
      ...(prefetch !== null && existsSync(prefetch) ? { prefetch } : {}),
      ...(this.opts.mountTimeoutMs === undefined ? {} : { timeoutMs: this.opts.mountTimeoutMs }),
    }).catch((err: unknown) => {
      throw new CryoError('UNAVAILABLE', `the image mount of sandbox ${record.sandbox_id} did not come up on this executor: ${errorText(err)}`);
    });
    const mounted = performance.now();
    await mountOverlay({ lower: layout.lower, upper: layout.upper, work: layout.work, merged: layout.rootfs }).catch((err: unknown) => {
      throw new CryoError('UNAVAILABLE', `the writable layer of sandbox ${record.sandbox_id} could not be mounted: ${errorText(err)}`);
    });
    const overlaid = performance.now();
    progress({ phase: 'start', bytes_done: 0, bytes_total: null });
    await this.runContainer(record, layout);
    const ran = performance.now();
    return { mount_ms: roundMs(mounted - started), overlay_ms: roundMs(overlaid - mounted), run_ms: roundMs(ran - overlaid), total_ms: roundMs(ran - started) };
  }

  private async readImageFile(layout: LazySandboxLayout, path: string): Promise<string | null> {
    try {
      return await readFile(join(layout.rootfs, path), 'utf8');
    } catch {
      return null;
    }
  }

  /** Write the bundle (config.json, hostname, hosts, stdin FIFO) and `runc run` it, detached. */
  async runContainer(record: LazySandboxRecord, layout: LazySandboxLayout): Promise<void> {
    const image = (await ClipIndex.load(record.index_path)).image.config;
    // Names resolve against the image's own files, read through the mount.
    const user = resolveImageUser(image.user, await this.readImageFile(layout, 'etc/passwd'), await this.readImageFile(layout, 'etc/group'));
    const hostname = sandboxHostname(record.sandbox_id);
    await writeFile(layout.hostname, `${hostname}\n`);
    await writeFile(layout.hosts, hostsFileText(hostname));
    const spec = buildRuntimeSpec({
      image,
      user,
      command: record.command,
      env: record.env,
      hostname,
      rootfs: layout.rootfs,
      hostnameFile: layout.hostname,
      hostsFile: layout.hosts,
      resources: record.resources,
      cgroupsPath: lazyCgroupPath(this.cgroupGroup, record.sandbox_id),
      annotations: {
        [SANDBOX_LABELS.sandboxId]: record.sandbox_id,
        [SANDBOX_LABELS.namespace]: record.namespace,
        [SANDBOX_LABELS.executorId]: this.opts.executorId,
      },
    });
    await writeFile(layout.config, `${JSON.stringify(spec, null, 2)}\n`, { mode: 0o600 });
    if (!existsSync(layout.stdin)) await execFileAsync('mkfifo', ['-m', '0600', layout.stdin]);
    // O_RDWR on a FIFO never blocks and never sees EOF: the container's stdin stays open.
    const stdin = openSync(layout.stdin, 'r+');
    const stdout = openSync(layout.stdout, 'a');
    const stderr = openSync(layout.stderr, 'a');
    try {
      await this.runc.runDetached(record.container_id, layout.dir, layout.initPid, [stdin, stdout, stderr]);
    } catch (err) {
      const why = await tail(layout.stderr);
      throw new CryoError('UNPROCESSABLE', `runc could not start sandbox ${record.sandbox_id}: ${why || errorText(err)}`);
    } finally {
      for (const fd of [stdin, stdout, stderr]) closeSync(fd);
    }
  }

  /** Container, overlay, FUSE mount, dirs: all gone, in that order. False when there was nothing. */
  async teardown(sandboxId: string): Promise<boolean> {
    const layout = this.layout(sandboxId);
    const containerId = containerName(sandboxId);
    const state = await this.runc.state(containerId);
    if (state === undefined && !existsSync(layout.dir)) return false;
    if (state !== undefined) await this.deleteContainer(containerId);
    removeLazyCgroups(this.cgroupGroup, sandboxId);
    await this.takeDownMounts(layout);
    const left = mountsUnder(layout.dir);
    if (left.length > 0) {
      // Never delete through a mount: that would reach into the image or someone else's tree.
      throw new CryoError('INTERNAL', `cannot remove sandbox ${sandboxId}: still mounted at ${left.map((m) => m.mountpoint).join(', ')}`);
    }
    await rm(layout.dir, { recursive: true, force: true });
    return true;
  }

  async deleteContainer(containerId: string): Promise<void> {
    try {
      await this.runc.delete(containerId);
    } catch (err) {
      if (await this.runc.state(containerId) !== undefined) throw err;
    }
  }

  /** Overlay first (it holds the FUSE mount), then the mount process and anything left. */
  async takeDownMounts(layout: LazySandboxLayout): Promise<void> {
    await unmountPath(layout.rootfs);
    await stopMountProcess(readMountStatus(layout.mountStatus), layout.lower);
    const last = readMountStatus(layout.mountStatus);
    if (last !== undefined) this.opts.onMountStopped?.(layout.mountStatus, last);
    for (const m of mountsUnder(layout.dir)) {
      if (m.fstype.startsWith('fuse')) await unmountFuse(m.mountpoint);
      else await unmountPath(m.mountpoint);
    }
  }

  /**
   * What programs read through the sandbox's image mount so far, and the mount's last range
   * requests, asked of its mount process (SIGUSR2); undefined when it does not answer.
   */
  readAccess(layout: LazySandboxLayout): Promise<MountAccessOut | undefined> {
    const status = readMountStatus(layout.mountStatus);
    return status === undefined ? Promise.resolve(undefined) : requestAccessRecord(status, layout.mountAccess);
  }

  /** Mount process alive and serving, FUSE and overlay mounted. No file access: a hung mount must not hang us. */
  mountHealthy(layout: LazySandboxLayout, mounts: MountEntry[] = listMounts()): boolean {
    const status = readMountStatus(layout.mountStatus);
    return status !== undefined && status.state === 'mounted' && isMountProcessOf(status, layout.lower)
      && mountsAt(layout.lower, mounts).length > 0 && mountsAt(layout.rootfs, mounts).some((m) => m.fstype === 'overlay');
  }

  /** Resume the container when it is paused; a no-op otherwise. */
  async resume(containerId: string): Promise<void> {
    const state = await this.runc.state(containerId);
    if (state !== undefined && state.status === 'paused') await this.runc.resume(containerId);
  }
}
