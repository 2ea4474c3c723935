/**
 * The `runc-lazy` runtime driver: a lazily restored sandbox runs from its snapshot image's clip
 * index before the image is downloaded. Per sandbox, under `state_dir/lazy/<sandbox_id>/`:
 *   lower/   the index mounted read-only with FUSE by its own detached mount process
 *            (libs/clip/src/fuse/mount-main.ts), which outlives executor restarts;
 *   upper/, work/   overlayfs dirs; rootfs/ the merged overlay (the bundle root);
 *   config.json     the OCI bundle, built from the image config in the index;
 * and runc (`--root state_dir/runc`) runs it, its stdin an open FIFO so a shell stays alive.
 *
 * A snapshot is pause (freezer) -> tar the upper dir -> resume (always), then the tar becomes one
 * gzip'd layer on top of the base image's layers, pushed with its config and manifest: an
 * ordinary image for eager restore and `docker pull`, made without Docker.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { ClipIndex } from '@cryo/clip';
import {
  isMountProcess,
  listMounts,
  mountsAt,
  mountsUnder,
  readMountStatus,
  resolveAccess,
  startMountProcess,
  stopMountProcess,
  unmountFuse,
  unmountPath,
  type MountEntry,
  type MountStatus,
  type RegistryAccessConfig,
} from '@cryo/clip/fuse';
import { RegistryClient } from '@cryo/oci';
import type { SnapshotRegistry } from '@cryo/registry-auth';
import {
  CryoError,
  SANDBOX_LABELS,
  SNAPSHOT_LABELS,
  registrySnapshotRef,
  type ContainerState,
  type ExecResult,
  type ObservedSandbox,
} from '@cryo/snapshot';
import type { ProgressSink, RuntimeDriver, SandboxSpec, SnapshotOutcome, SnapshotSpec } from './driver';
import { resolveImageUser } from './lazy/image-user';
import { checkSandboxId, lazySandboxLayout, readRecord, runcContainerId, writeRecord, type LazySandboxLayout, type LazySandboxRecord } from './lazy/layout';
import { mountOverlay } from './lazy/overlay';
import { Runc, type RuncStatus } from './lazy/runc';
import { buildRuntimeSpec, hostsFileText, mergeEnv, sandboxHostname } from './lazy/runtime-spec';
import { publishSnapshotImage } from './lazy/snapshot-image';
import { captureUpperDir, writeLayer } from './lazy/upper-layer';
import { CappedOutput, EXEC_OUTPUT_LIMIT } from './exec-output';

const execFileAsync = promisify(execFile);

export interface RuncLazyDriverOptions {
  /** the executor's state_dir: sandboxes go to lazy/, runc's state to runc/, spans to clip-cache/ */
  stateDir: string;
  executorId: string;
  /** where snapshots are pushed (a lazy sandbox can only be snapshotted to a registry) */
  registry: SnapshotRegistry | undefined;
  /** Docker's config.json for other registries' credentials */
  dockerConfig?: string | undefined;
  /**
   * The executor's config file: mount processes read `snapshot_registry` / `docker_config` from it
   * themselves (and read it again when the registry rejects their credentials). Without it they
   * get `registry` and `dockerConfig` in their environment.
   */
  configFile?: string | undefined;
  /** host-wide span cache shared by all mounts (default state_dir/clip-cache) */
  clipCacheDir?: string;
  /** runc binary (default `runc` on PATH) */
  runc?: string;
  /** how long a mount may take to come up (default 30 s) */
  mountTimeoutMs?: number;
  /**
   * What recover() does with a sandbox whose mount is gone (mount process killed, host rebooted):
   * `restart` remounts and runs its command again over the kept upper dir; `end` removes it.
   */
  recoverMode?: 'restart' | 'end';
  log: Logger;
}

export interface LazyRecovery {
  sandbox_id: string;
  action: 'adopted' | 'resumed' | 'restarted' | 'ended' | 'exited';
  reason: string;
}

export interface LazyCreateTimings {
  mount_ms: number;
  overlay_ms: number;
  run_ms: number;
  total_ms: number;
}

function mapStatus(status: RuncStatus): ContainerState {
  switch (status) {
    case 'running':
      return 'running';
    case 'paused':
      return 'paused';
    case 'created':
    case 'creating':
      return 'created';
    default:
      return 'exited';
  }
}

const round = (ms: number): number => Math.round(ms * 10) / 10;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function errorText(err: unknown): string {
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

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGSEGV: 11, SIGPIPE: 13 };

export class RuncLazyDriver implements RuntimeDriver {
  readonly name = 'runc-lazy' as const;
  readonly lazyRoot: string;
  readonly runc: Runc;
  private readonly cacheDir: string;
  private readonly locks = new Map<string, Promise<unknown>>();
  /** sandboxes frozen by a snapshot right now: exec waits for the resume */
  private readonly frozen = new Map<string, Promise<void>>();
  /** how long each phase of the last create of a sandbox took */
  readonly createTimings = new Map<string, LazyCreateTimings>();

  constructor(private readonly opts: RuncLazyDriverOptions) {
    // Absolute: runc, overlay options and the mount processes (cwd /) all get these paths.
    const stateDir = resolve(opts.stateDir);
    this.lazyRoot = join(stateDir, 'lazy');
    this.runc = new Runc(join(stateDir, 'runc'), opts.runc ?? 'runc');
    this.cacheDir = resolve(opts.clipCacheDir ?? join(stateDir, 'clip-cache'));
  }

  private get log(): Logger {
    return this.opts.log;
  }

  private layout(sandboxId: string): LazySandboxLayout {
    return lazySandboxLayout(this.lazyRoot, sandboxId);
  }

  /** One create / remove / snapshot / recovery at a time per sandbox. */
  private locked<T>(sandboxId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(sandboxId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(work);
    const settled = next.catch(() => undefined);
    this.locks.set(sandboxId, settled);
    void settled.then(() => {
      if (this.locks.get(sandboxId) === settled) this.locks.delete(sandboxId);
    });
    return next;
  }

  private registryAccess(): RegistryAccessConfig {
    return {
      ...(this.opts.registry === undefined ? {} : { snapshot_registry: this.opts.registry }),
      ...(this.opts.dockerConfig === undefined ? {} : { docker_config: this.opts.dockerConfig }),
    };
  }

  private async client(host: string): Promise<RegistryClient> {
    const access = await resolveAccess(this.registryAccess(), host);
    return new RegistryClient({ host, insecure: access.insecure, credentials: access.credentials, userAgent: 'cryo-executor' });
  }

  // ---- create ------------------------------------------------------------------------------

  async create(spec: SandboxSpec, progress: ProgressSink): Promise<string> {
    const lazy = spec.lazy;
    if (lazy === undefined) {
      throw new CryoError('UNPROCESSABLE', `the runc-lazy driver runs lazy restores only; sandbox ${spec.sandboxId} has no clip index`);
    }
    checkSandboxId(spec.sandboxId);
    return this.locked(spec.sandboxId, async () => {
      const layout = this.layout(spec.sandboxId);
      const containerId = runcContainerId(spec.sandboxId);
      // Created before: keep it (and its upper dir) running, as a repeated docker create+start would.
      if (readRecord(layout) !== undefined) {
        const recovered = await this.recoverOne(spec.sandboxId);
        if (recovered.action === 'exited') {
          const record = readRecord(layout);
          await this.deleteContainer(containerId);
          if (record !== undefined) await this.runContainer(record, layout);
        }
        if (recovered.action !== 'ended') return containerId;
      }
      if (await this.runc.state(containerId) !== undefined || existsSync(layout.dir)) await this.teardown(spec.sandboxId);

      const index = await ClipIndex.load(lazy.indexPath).catch((err: unknown) => {
        throw new CryoError('UNPROCESSABLE', `clip index ${lazy.indexPath} of ${lazy.imageRef} cannot be read: ${errorText(err)}`);
      });
      const record: LazySandboxRecord = {
        sandbox_id: spec.sandboxId,
        namespace: spec.namespace,
        container_id: containerId,
        image: spec.image,
        index_path: lazy.indexPath,
        image_ref: lazy.imageRef,
        digest: lazy.digest,
        base: { host: index.image.registry, repository: index.image.repository, manifest_digest: index.image.manifestDigest },
        command: spec.command,
        env: spec.env,
        labels: spec.labels,
        resources: spec.resources,
        created_at: new Date().toISOString(),
      };
      for (const dir of [layout.lower, layout.upper, layout.work, layout.rootfs]) await mkdir(dir, { recursive: true });
      writeRecord(layout, record);
      try {
        const timings = await this.bringUp(record, layout, progress);
        this.createTimings.set(spec.sandboxId, timings);
        this.log.info({ sandbox_id: spec.sandboxId, image_ref: lazy.imageRef, ...timings }, 'lazy sandbox started');
        return containerId;
      } catch (err) {
        await this.teardown(spec.sandboxId).catch((cleanupErr: unknown) => {
          this.log.error({ sandbox_id: spec.sandboxId, err: errorText(cleanupErr) }, 'cleanup after a failed lazy create failed');
        });
        if (err instanceof CryoError) throw err;
        throw new CryoError('UNPROCESSABLE', `lazy sandbox ${spec.sandboxId} failed to start: ${errorText(err)}`);
      }
    });
  }

  /** Mount the index, the overlay, and run the container (create, and recovery of a broken mount). */
  private async bringUp(record: LazySandboxRecord, layout: LazySandboxLayout, progress: ProgressSink): Promise<LazyCreateTimings> {
    const started = performance.now();
    progress({ phase: 'mount', bytes_done: 0, bytes_total: null });
    await startMountProcess({
      indexPath: record.index_path,
      mountpoint: layout.lower,
      statusFile: layout.mountStatus,
      logFile: layout.mountLog,
      cacheDir: this.cacheDir,
      ...(this.opts.configFile === undefined ? { registryAccess: this.registryAccess() } : { registryConfigFile: this.opts.configFile }),
      ...(this.opts.mountTimeoutMs === undefined ? {} : { timeoutMs: this.opts.mountTimeoutMs }),
    });
    const mounted = performance.now();
    await mountOverlay({ lower: layout.lower, upper: layout.upper, work: layout.work, merged: layout.rootfs });
    const overlaid = performance.now();
    progress({ phase: 'start', bytes_done: 0, bytes_total: null });
    await this.runContainer(record, layout);
    const ran = performance.now();
    return { mount_ms: round(mounted - started), overlay_ms: round(overlaid - mounted), run_ms: round(ran - overlaid), total_ms: round(ran - started) };
  }

  private async readImageFile(layout: LazySandboxLayout, path: string): Promise<string | null> {
    try {
      return await readFile(join(layout.rootfs, path), 'utf8');
    } catch {
      return null;
    }
  }

  private async runContainer(record: LazySandboxRecord, layout: LazySandboxLayout): Promise<void> {
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
      cgroupsPath: `/cryo-lazy/${record.sandbox_id}`,
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

  // ---- exec --------------------------------------------------------------------------------

  async exec(sandboxId: string, command: string[], timeoutSecs: number): Promise<ExecResult> {
    checkSandboxId(sandboxId);
    const containerId = runcContainerId(sandboxId);
    // A snapshot freezes the sandbox for milliseconds: wait for the resume rather than fail.
    await this.frozen.get(sandboxId);
    const state = await this.runc.state(containerId);
    if (state === undefined) throw new CryoError('NOT_FOUND', `sandbox ${sandboxId} has no lazy container on this executor`);
    if (state.status !== 'running') throw new CryoError('CONFLICT', `sandbox ${sandboxId} is not running (container is ${state.status})`);
    const pidFile = join(this.layout(sandboxId).dir, `exec-${randomBytes(6).toString('hex')}.pid`);
    const child = spawn(this.runc.binary, ['--root', this.runc.root, 'exec', '--pid-file', pidFile, containerId, ...command], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout = new CappedOutput(EXEC_OUTPUT_LIMIT);
    const stderr = new CappedOutput(EXEC_OUTPUT_LIMIT);
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutSecs * 1000);
    });
    try {
      const outcome = await Promise.race([exited, timedOut]);
      if (outcome === 'timeout') {
        await this.killExec(pidFile);
        child.kill('SIGKILL');
        throw new CryoError('TIMEOUT', `command did not finish within ${timeoutSecs} s`);
      }
      const errText = stderr.text();
      let exitCode = outcome.code ?? 128 + (SIGNALS[outcome.signal ?? ''] ?? 0);
      // runc's own failure to start the command (exit 255), as Docker reports it: 127 not found, 126 not runnable.
      if (exitCode === 255 && /exec failed|unable to start container process/.test(errText)) {
        exitCode = /not found|no such file/i.test(errText) ? 127 : 126;
      }
      return { exit_code: exitCode, stdout: stdout.text(), stderr: errText };
    } finally {
      clearTimeout(timer);
      await rm(pidFile, { force: true });
    }
  }

  /** The exec'd process itself (host pid from runc's pid file): killing runc would not stop it. */
  private async killExec(pidFile: string): Promise<void> {
    try {
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      if (Number.isInteger(pid) && pid > 1) process.kill(pid, 'SIGKILL');
    } catch {
      // not started yet, or already gone
    }
  }

  // ---- remove ------------------------------------------------------------------------------

  async remove(sandboxId: string): Promise<boolean> {
    checkSandboxId(sandboxId);
    return this.locked(sandboxId, () => this.teardown(sandboxId));
  }

  /** Container, overlay, FUSE mount, dirs: all gone, in that order. False when there was nothing. */
  private async teardown(sandboxId: string): Promise<boolean> {
    const layout = this.layout(sandboxId);
    const containerId = runcContainerId(sandboxId);
    const state = await this.runc.state(containerId);
    if (state === undefined && !existsSync(layout.dir)) return false;
    if (state !== undefined) await this.deleteContainer(containerId);
    await this.takeDownMounts(layout);
    const left = mountsUnder(layout.dir);
    if (left.length > 0) {
      // Never delete through a mount: that would reach into the image or someone else's tree.
      throw new CryoError('INTERNAL', `cannot remove sandbox ${sandboxId}: still mounted at ${left.map((m) => m.mountpoint).join(', ')}`);
    }
    await rm(layout.dir, { recursive: true, force: true });
    this.createTimings.delete(sandboxId);
    return true;
  }

  private async deleteContainer(containerId: string): Promise<void> {
    try {
      await this.runc.delete(containerId);
    } catch (err) {
      if (await this.runc.state(containerId) !== undefined) throw err;
    }
  }

  /** Overlay first (it holds the FUSE mount), then the mount process and anything left. */
  private async takeDownMounts(layout: LazySandboxLayout): Promise<void> {
    await unmountPath(layout.rootfs);
    await stopMountProcess(readMountStatus(layout.mountStatus)?.pid, layout.lower);
    for (const m of mountsUnder(layout.dir)) {
      if (m.fstype.startsWith('fuse')) await unmountFuse(m.mountpoint);
      else await unmountPath(m.mountpoint);
    }
  }

  /** Mount process alive and serving, FUSE and overlay mounted. No file access: a hung mount must not hang us. */
  private mountHealthy(layout: LazySandboxLayout, mounts: MountEntry[] = listMounts()): boolean {
    const status = readMountStatus(layout.mountStatus);
    return status !== undefined && status.state === 'mounted' && isMountProcess(status.pid, layout.lower)
      && mountsAt(layout.lower, mounts).length > 0 && mountsAt(layout.rootfs, mounts).some((m) => m.fstype === 'overlay');
  }

  /** Whether this driver holds `sandboxId` (for routing exec / remove / snapshot between drivers). */
  owns(sandboxId: string): boolean {
    try {
      return existsSync(this.layout(sandboxId).dir);
    } catch {
      return false;
    }
  }

  /** The mount process's status: state, pid, and the bytes it fetched from the registry. */
  mountStatus(sandboxId: string): MountStatus | undefined {
    return readMountStatus(this.layout(sandboxId).mountStatus);
  }

  // ---- snapshot ----------------------------------------------------------------------------

  private async resume(containerId: string): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const state = await this.runc.state(containerId);
        if (state === undefined || state.status !== 'paused') return;
        await this.runc.resume(containerId);
        return;
      } catch (err) {
        lastError = err;
        await sleep(100 * (attempt + 1));
      }
    }
    this.log.error({ container_id: containerId, err: errorText(lastError) }, 'resume failed; recover() will retry');
  }

  async snapshot(spec: SnapshotSpec, progress: ProgressSink): Promise<SnapshotOutcome> {
    const registry = this.opts.registry;
    if (registry === undefined) {
      throw new CryoError('UNPROCESSABLE', `lazy sandbox ${spec.sandboxId} can only be snapshotted to a registry, and snapshot_registry is not configured`);
    }
    checkSandboxId(spec.sandboxId);
    return this.locked(spec.sandboxId, async () => {
      const layout = this.layout(spec.sandboxId);
      const record = readRecord(layout);
      const containerId = runcContainerId(spec.sandboxId);
      const state = await this.runc.state(containerId);
      if (record === undefined || state === undefined) throw new CryoError('NOT_FOUND', `sandbox ${spec.sandboxId} has no lazy container on this executor`);
      if (state.status === 'paused') throw new CryoError('CONFLICT', `sandbox ${spec.sandboxId} is already paused`);
      if (state.status !== 'running') throw new CryoError('CONFLICT', `sandbox ${spec.sandboxId} is not running (container is ${state.status})`);

      const work = join(layout.dir, `snapshot-${spec.snapshotId}`);
      await mkdir(work, { recursive: true });
      const rawTar = join(work, 'upper.tar');
      try {
        progress({ phase: 'pause', bytes_done: 0, bytes_total: null });
        let thaw = (): void => undefined;
        this.frozen.set(spec.sandboxId, new Promise<void>((resolve) => { thaw = resolve; }));
        const pausedAt = performance.now();
        let captureMs: number;
        let pauseMs: number;
        try {
          await this.runc.pause(containerId);
          progress({ phase: 'commit', bytes_done: 0, bytes_total: null });
          const captureStart = performance.now();
          await captureUpperDir(layout.upper, rawTar);
          captureMs = performance.now() - captureStart;
        } finally {
          await this.resume(containerId);
          pauseMs = performance.now() - pausedAt;
          this.frozen.delete(spec.sandboxId);
          thaw();
        }
        const layerStart = performance.now();
        const layer = await writeLayer(rawTar, join(work, 'layer.tar.gz'));
        await rm(rawTar, { force: true });
        const commitMs = captureMs + (performance.now() - layerStart);

        progress({ phase: 'push', bytes_done: 0, bytes_total: layer.size });
        const pushStart = performance.now();
        const image = (await ClipIndex.load(record.index_path)).image.config;
        const imageRef = registrySnapshotRef(registry, spec.tag);
        const target = await this.client(registry.url);
        const baseClient = record.base.host === registry.url ? target : await this.client(record.base.host);
        try {
          const published = await publishSnapshotImage({
            target: { client: target, repository: registry.repository, tag: spec.tag },
            base: { client: baseClient, host: record.base.host, repository: record.base.repository, manifestDigest: record.base.manifest_digest },
            layer,
            labels: {
              [SNAPSHOT_LABELS.snapshotId]: spec.snapshotId,
              [SNAPSHOT_LABELS.sandboxId]: spec.sandboxId,
              [SNAPSHOT_LABELS.namespace]: spec.namespace,
              [SNAPSHOT_LABELS.baseImage]: spec.baseImage,
            },
            createdBy: `cryo snapshot ${spec.snapshotId} of sandbox ${spec.sandboxId}`,
            env: mergeEnv(image.env, record.env),
            cmd: record.command ?? image.cmd,
          });
          progress({ phase: 'pushed', bytes_done: layer.size, bytes_total: layer.size });
          this.log.info({
            sandbox_id: spec.sandboxId, snapshot_id: spec.snapshotId, image_ref: imageRef, digest: published.digest,
            layer_bytes: layer.size, layer_entries: layer.entries, whiteouts: layer.whiteouts, opaque_dirs: layer.opaqueDirs,
            layers_mounted: published.layersMounted, layers_copied: published.layersCopied,
          }, 'lazy snapshot pushed');
          return {
            imageRef,
            digest: published.digest,
            sizeBytes: published.sizeBytes,
            timings: { pause_ms: round(pauseMs), commit_ms: round(commitMs), push_ms: round(performance.now() - pushStart), index_ms: null },
          };
        } finally {
          await target.close();
          if (baseClient !== target) await baseClient.close();
        }
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    });
  }

  // ---- observe and recover -----------------------------------------------------------------

  private async sandboxIds(): Promise<string[]> {
    try {
      return (await readdir(this.lazyRoot, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      return [];
    }
  }

  async observe(): Promise<ObservedSandbox[]> {
    const states = new Map((await this.runc.list().catch(() => [])).map((s) => [s.id, s]));
    const mounts = listMounts();
    const out: ObservedSandbox[] = [];
    for (const sandboxId of await this.sandboxIds()) {
      const containerId = runcContainerId(sandboxId);
      const state = states.get(containerId);
      let observed: ContainerState = state === undefined ? 'exited' : mapStatus(state.status);
      // A container whose image mount is gone cannot read its files any more: it is as good as ended.
      if (observed === 'running' && !this.mountHealthy(this.layout(sandboxId), mounts)) observed = 'exited';
      out.push({ sandbox_id: sandboxId, container_id: containerId, state: observed, exit_code: null, runtime: 'runc-lazy' });
    }
    return out;
  }

  /**
   * After an executor restart (or any time): adopt every lazy sandbox whose mount process and
   * mounts are intact (resuming one a crashed snapshot left paused); for one whose mount is gone,
   * take down what is left — never leaving a stale mount — and remount and rerun it over its kept
   * upper dir (`recoverMode: 'restart'`), or remove it (`'end'`). Containers runc knows without a
   * sandbox dir are deleted.
   */
  async recover(): Promise<LazyRecovery[]> {
    const results: LazyRecovery[] = [];
    const ids = await this.sandboxIds();
    for (const sandboxId of ids) {
      try {
        results.push(await this.locked(sandboxId, () => this.recoverOne(sandboxId)));
      } catch (err) {
        this.log.error({ sandbox_id: sandboxId, err: errorText(err) }, 'lazy sandbox recovery failed');
        await this.locked(sandboxId, () => this.teardown(sandboxId)).catch(() => undefined);
        results.push({ sandbox_id: sandboxId, action: 'ended', reason: `recovery failed: ${errorText(err)}` });
      }
    }
    const known = new Set(ids.map(runcContainerId));
    for (const state of await this.runc.list().catch(() => [])) {
      if (state.id.startsWith('cryo-') && !known.has(state.id)) await this.deleteContainer(state.id).catch(() => undefined);
    }
    for (const r of results) this.log.info({ sandbox_id: r.sandbox_id, action: r.action, reason: r.reason }, 'lazy sandbox recovered');
    return results;
  }

  private async recoverOne(sandboxId: string): Promise<LazyRecovery> {
    const layout = this.layout(sandboxId);
    const record = readRecord(layout);
    if (record === undefined) {
      await this.teardown(sandboxId);
      return { sandbox_id: sandboxId, action: 'ended', reason: 'its sandbox record was missing (an interrupted create)' };
    }
    const containerId = runcContainerId(sandboxId);
    const state = await this.runc.state(containerId);
    const healthy = this.mountHealthy(layout);
    if (healthy && state !== undefined && state.status === 'paused') {
      await this.resume(containerId);
      return { sandbox_id: sandboxId, action: 'resumed', reason: 'an interrupted snapshot had left it paused' };
    }
    if (healthy && state !== undefined && state.status === 'running') {
      return { sandbox_id: sandboxId, action: 'adopted', reason: 'mount process, mounts and container are intact' };
    }
    if (healthy && state !== undefined && state.status === 'stopped') {
      return { sandbox_id: sandboxId, action: 'exited', reason: 'its command had ended; kept for removal' };
    }
    const why = state === undefined ? 'its container was gone' : healthy ? `its container was ${state.status}` : 'its image mount was gone (mount process ended)';
    if (state !== undefined) await this.deleteContainer(containerId);
    await this.takeDownMounts(layout);
    if (this.opts.recoverMode === 'end' || !existsSync(record.index_path)) {
      await this.teardown(sandboxId);
      const reason = existsSync(record.index_path) ? why : `${why}, and its clip index ${record.index_path} is gone`;
      return { sandbox_id: sandboxId, action: 'ended', reason };
    }
    await this.bringUp(record, layout, () => undefined);
    return { sandbox_id: sandboxId, action: 'restarted', reason: `${why}; remounted and started again with its files kept` };
  }
}

