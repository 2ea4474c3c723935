/**
 * The `runc-lazy` runtime driver: a lazily restored sandbox runs from its snapshot image's clip
 * index before the image is downloaded. Per sandbox, under `state_dir/lazy/<sandbox_id>/`:
 *   lower/   the index mounted read-only with FUSE by its own detached mount process
 *            (libs/clip/src/fuse/mount-main.ts), which outlives executor restarts;
 *   upper/, work/   overlayfs dirs; rootfs/ the merged overlay (the bundle root);
 *   config.json     the OCI bundle, built from the image config in the index;
 * and runc (`--root state_dir/runc`) runs it, its stdin an open FIFO so a shell stays alive.
 * The steps live in runtime/lazy/: lifecycle (mount, overlay, run, teardown), exec, snapshot
 * (made without Docker) and recover.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { ClipIndex, ClipReader, RegistryLayerSource, buildAccessPack, encodeAccessRecord, type AccessRecord } from '@cryo/clip';
import { listMounts, readMountStatus, type MountStatus } from '@cryo/clip/fuse';
import { connectRegistry, type RegistryClient } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { CONTAINER_NAME_PREFIX, CryoError, containerName, type ContainerState, type ExecResult, type ObservedSandbox } from '@cryo/snapshot';
import { accessRecordRefOf } from '../clip-artifacts';
import { toCryoError } from '../errors';
import type { DriverCapabilities, ProgressSink, Recovery, RuntimeDriver, SandboxSpec, SnapshotOutcome, SnapshotSpec } from './driver';
import { lazyCapabilities } from './lazy/capabilities';
import { execInLazySandbox } from './lazy/exec';
import { checkSandboxId, readRecord, writeRecord, type LazySandboxRecord } from './lazy/layout';
import { LazySandboxes, errorText, type LazyCreateTimings } from './lazy/lifecycle';
import { recoverLazySandbox, type LazyRecoverMode } from './lazy/recover';
import { Runc, type RuncStatus } from './lazy/runc';
import { snapshotLazySandbox } from './lazy/snapshot';
import { DEFAULT_MAX_LAYERS } from '../snapshot/flatten-image';

export type { LazyCreateTimings } from './lazy/lifecycle';

/**
 * Where a lazy restore's clip index comes from (a local file path for a pushed index), and the
 * image's access record beside it: ClipArtifacts.
 */
export interface ClipIndexFetcher {
  fetch(clipIndexRef: string, imageDigest: string | null): Promise<string>;
  /** the access record pushed beside `clipIndexRef`, as a local file; null when there is none */
  fetchAccess(clipIndexRef: string): Promise<string | null>;
  /** push an access record as `accessRef`, its pack uploaded (`blob`) or taken from another repository (`from`) */
  publishAccess(accessRef: string, imageDigest: string | null, record: AccessRecord, pack?: { blob: Buffer } | { from: string }): Promise<{ pack: boolean }>;
}

export interface RuncLazyDriverOptions {
  /** the executor's state_dir: sandboxes go to lazy/, runc's state to runc/, spans to clip-cache/ */
  stateDir: string;
  executorId: string;
  /**
   * Registry access: `snapshot_registry` is where snapshots are pushed (a lazy sandbox can only
   * be snapshotted to a registry), `docker_config` answers for other registries. Mount processes
   * are handed the same settings at mount time (on their stdin) and resolve credentials from them
   * again whenever a registry rejects them.
   */
  access: RegistryAccessSettings;
  /** fetches the clip index a lazy restore names */
  clipIndexes: ClipIndexFetcher;
  /** host-wide span cache shared by all mounts (default state_dir/clip-cache) */
  clipCacheDir?: string;
  /** runc binary (default `runc` on PATH) */
  runc?: string;
  /** how long a mount may take to come up (default 30 s) */
  mountTimeoutMs?: number;
  /** each mount fetches the rest of its image in the background at most this fast, compressed bytes/s (default 0: off) */
  backgroundFillBytesPerSec?: number;
  /** asked at each mount: the most compressed bytes its background fill may fetch (undefined or absent: the whole image) */
  backgroundFillMaxBytes?: () => number | undefined;
  /**
   * What recover() does with a sandbox whose mount is gone (mount process killed, host rebooted):
   * `restart` remounts and runs its command again over the kept upper dir; `end` removes it.
   */
  recoverMode?: LazyRecoverMode;
  /** a snapshot with more layers than this is flattened (executor setting snapshots.max_layers; default 100) */
  maxLayers?: number;
  /** the host probe (default: lazyCapabilities()); tests inject their own */
  probe?: () => Promise<{ lazy: boolean; lazy_unavailable_reason: string | null }>;
  /** a mount process ended: its status file and last status (metrics take its final counts) */
  onMountStopped?: (statusFile: string, status: MountStatus) => void;
  log: Logger;
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

export class RuncLazyDriver implements RuntimeDriver {
  readonly name = 'runc-lazy' as const;
  readonly lazyRoot: string;
  readonly runc: Runc;
  private readonly sandboxes: LazySandboxes;
  private readonly locks = new Map<string, Promise<unknown>>();
  /** sandboxes frozen by a snapshot right now: exec waits for the resume */
  private readonly frozen = new Map<string, Promise<void>>();
  /** how long each phase of the last create of a sandbox took */
  readonly createTimings = new Map<string, LazyCreateTimings>();
  /** sandboxes whose access record is being pushed */
  private readonly recording = new Set<string>();

  constructor(private readonly opts: RuncLazyDriverOptions) {
    // Absolute: runc, overlay options and the mount processes (cwd /) all get these paths.
    const stateDir = resolve(opts.stateDir);
    this.lazyRoot = join(stateDir, 'lazy');
    this.runc = new Runc(join(stateDir, 'runc'), opts.runc ?? 'runc');
    this.sandboxes = new LazySandboxes({
      lazyRoot: this.lazyRoot,
      runc: this.runc,
      cacheDir: resolve(opts.clipCacheDir ?? join(stateDir, 'clip-cache')),
      executorId: opts.executorId,
      registryAccess: opts.access,
      mountTimeoutMs: opts.mountTimeoutMs,
      onMountStopped: opts.onMountStopped,
      launcherLog: join(stateDir, 'mount-launcher.log'),
      backgroundFillBytesPerSec: opts.backgroundFillBytesPerSec ?? 0,
      backgroundFillMaxBytes: opts.backgroundFillMaxBytes,
      log: opts.log,
    });
  }

  private get log(): Logger {
    return this.opts.log;
  }

  /** Lazy restore needs FUSE, overlayfs, runc and root on this host, and a registry to read from. */
  async capabilities(): Promise<DriverCapabilities> {
    const probe = await (this.opts.probe ?? lazyCapabilities)();
    const reason = !probe.lazy ? probe.lazy_unavailable_reason ?? 'unavailable'
      : this.opts.access.snapshot_registry === undefined ? 'lazy restore needs snapshot_registry in the executor config' : null;
    // Have a mount process loaded and waiting before the first lazy restore arrives.
    if (reason === null) {
      void this.sandboxes.prepare().catch((err: unknown) => this.log.warn({ err: errorText(err) }, 'cannot start a ready mount process; mounts will start one each'));
    }
    return { available: reason === null, reason, restoreModes: ['lazy'] };
  }

  /** End the ready mount process (sandboxes and their mounts keep running). */
  async close(): Promise<void> {
    this.sandboxes.close();
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

  /**
   * The pack of what a record names (@cryo/clip access-pack.ts), read through the host's span
   * cache, where the mount that recorded it just put those spans (the registry answers the rest).
   */
  private async packOf(sandbox: LazySandboxRecord, record: AccessRecord): Promise<Awaited<ReturnType<typeof buildAccessPack>>> {
    const index = await ClipIndex.load(sandbox.index_path);
    const client = await this.client(index.image.registry);
    try {
      const reader = new ClipReader(index, {
        source: new RegistryLayerSource(client, index.image.repository),
        cacheDir: resolve(this.opts.clipCacheDir ?? join(this.opts.stateDir, 'clip-cache')),
        memoryBytes: 16 * 1024 * 1024,
        fetch: { readaheadBytes: 0 },
      });
      return await buildAccessPack(index, record, (path, offset, length) => reader.read(path, offset, length));
    } finally {
      await client.close();
    }
  }

  private client(host: string): Promise<RegistryClient> {
    return connectRegistry(host, this.opts.access, { userAgent: 'cryo-executor' });
  }

  async create(spec: SandboxSpec, progress: ProgressSink): Promise<string> {
    const restore = spec.restore;
    if (restore === null || restore.mode !== 'lazy') {
      throw new CryoError('UNPROCESSABLE', `the runc-lazy driver runs lazy restores only; sandbox ${spec.sandboxId} is not one`);
    }
    if (restore.clipIndexRef === null) throw new CryoError('UNPROCESSABLE', `snapshot ${restore.snapshotId} has no clip index`);
    const clipIndexRef = restore.clipIndexRef;
    checkSandboxId(spec.sandboxId);
    return this.locked(spec.sandboxId, async () => {
      const layout = this.sandboxes.layout(spec.sandboxId);
      const containerId = containerName(spec.sandboxId);
      // Created before: keep it (and its upper dir) running, as a repeated docker create+start would.
      if (readRecord(layout) !== undefined) {
        const recovered = await this.recoverOne(spec.sandboxId);
        if (recovered.action === 'exited') {
          const record = readRecord(layout);
          await this.sandboxes.deleteContainer(containerId);
          if (record !== undefined) await this.sandboxes.runContainer(record, layout);
        }
        if (recovered.action !== 'ended') return containerId;
      }
      if (await this.runc.state(containerId) !== undefined || existsSync(layout.dir)) await this.sandboxes.teardown(spec.sandboxId);

      progress({ phase: 'fetch-index', bytes_done: 0, bytes_total: null });
      const accessRef = accessRecordRefOf(clipIndexRef);
      // The access record comes with the index, or not at all: a restore never waits or fails for it.
      const [indexPath, prefetched] = await Promise.all([
        this.opts.clipIndexes.fetch(clipIndexRef, restore.digest),
        accessRef === null ? null : this.opts.clipIndexes.fetchAccess(clipIndexRef).catch((err: unknown) => {
          this.log.warn({ sandbox_id: spec.sandboxId, access_ref: accessRef, err: errorText(err) }, 'cannot fetch the access record; restoring without prefetch');
          return null;
        }),
      ]);
      const index = await ClipIndex.load(indexPath).catch((err: unknown) => {
        throw new CryoError('UNPROCESSABLE', `clip index ${indexPath} of ${restore.imageRef} cannot be read: ${errorText(err)}`);
      });
      const record: LazySandboxRecord = {
        sandbox_id: spec.sandboxId,
        namespace: spec.namespace,
        container_id: containerId,
        image: restore.imageRef,
        index_path: indexPath,
        image_ref: restore.imageRef,
        digest: restore.digest,
        base: { host: index.image.registry, repository: index.image.repository, manifest_digest: index.image.manifestDigest },
        command: spec.command,
        env: spec.env,
        labels: spec.labels,
        resources: spec.resources,
        created_at: new Date().toISOString(),
        ...(accessRef === null ? {} : { access: { ref: accessRef, prefetched, recorded: null } }),
      };
      for (const dir of [layout.lower, layout.upper, layout.work, layout.rootfs]) await mkdir(dir, { recursive: true });
      writeRecord(layout, record);
      try {
        const timings = await this.sandboxes.bringUp(record, layout, progress);
        this.createTimings.set(spec.sandboxId, timings);
        this.log.info({ sandbox_id: spec.sandboxId, image_ref: restore.imageRef, prefetch: prefetched !== null, ...timings }, 'lazy sandbox started');
        return containerId;
      } catch (err) {
        await this.sandboxes.teardown(spec.sandboxId).catch((cleanupErr: unknown) => {
          this.log.error({ sandbox_id: spec.sandboxId, err: errorText(cleanupErr) }, 'cleanup after a failed lazy create failed');
        });
        throw toCryoError(err, `lazy sandbox ${spec.sandboxId} failed to start`);
      }
    });
  }

  async exec(sandboxId: string, command: string[], timeoutSecs: number): Promise<ExecResult> {
    checkSandboxId(sandboxId);
    // A snapshot freezes the sandbox for milliseconds: wait for the resume rather than fail.
    await this.frozen.get(sandboxId);
    const target = { runc: this.runc, sandboxId, containerId: containerName(sandboxId), dir: this.sandboxes.layout(sandboxId).dir };
    const result = await execInLazySandbox(target, command, timeoutSecs);
    this.afterExec(sandboxId);
    return result;
  }

  /**
   * After the first exec of a sandbox whose image had no access record: push what its program
   * read until now (mount start through that exec) as the image's record, in the background. A
   * failure is logged, never reported to the exec.
   */
  private afterExec(sandboxId: string): void {
    const layout = this.sandboxes.layout(sandboxId);
    const record = readRecord(layout);
    if (record?.access === undefined || record.access.prefetched !== null || record.access.recorded !== null || this.recording.has(sandboxId)) return;
    const access = record.access;
    this.recording.add(sandboxId);
    void this.locked(sandboxId, async () => {
      const started = performance.now();
      const out = await this.sandboxes.readAccess(layout);
      if (out?.record === null || out?.record === undefined || out.record.files.length === 0) {
        this.log.warn({ sandbox_id: sandboxId }, 'no access record from the mount process; the image keeps none');
        return;
      }
      const packed = await this.packOf(record, out.record).catch((err: unknown) => {
        this.log.warn({ sandbox_id: sandboxId, err: errorText(err) }, 'cannot pack the access record; pushing it without (restores prefetch by span)');
        return undefined;
      });
      const pushed: AccessRecord = packed === undefined ? out.record : { ...out.record, pack: packed.pack };
      await this.opts.clipIndexes.publishAccess(access.ref, record.digest, pushed, packed === undefined ? undefined : { blob: packed.blob });
      const bytes = encodeAccessRecord(pushed);
      const tmp = `${layout.accessRecord}.tmp`;
      await writeFile(tmp, bytes);
      await rename(tmp, layout.accessRecord);
      const current = readRecord(layout);
      if (current !== undefined) writeRecord(layout, { ...current, access: { ...access, recorded: layout.accessRecord } });
      this.log.info({
        sandbox_id: sandboxId, access_ref: access.ref, files: out.record.files.length, duration_ms: out.record.duration_ms,
        pack_bytes: packed?.bytes ?? null, pack_compressed: packed?.pack.size ?? null, ms: Math.round(performance.now() - started),
      }, 'access record pushed');
    }).catch((err: unknown) => {
      this.log.warn({ sandbox_id: sandboxId, access_ref: access.ref, err: errorText(err) }, 'cannot push the access record; the next lazy start records again');
    }).finally(() => this.recording.delete(sandboxId));
  }

  async remove(sandboxId: string): Promise<boolean> {
    checkSandboxId(sandboxId);
    return this.locked(sandboxId, async () => {
      const removed = await this.sandboxes.teardown(sandboxId);
      this.createTimings.delete(sandboxId);
      return removed;
    });
  }

  /** Whether this driver holds `sandboxId` (for routing exec / remove / snapshot between drivers). */
  async owns(sandboxId: string): Promise<boolean> {
    try {
      return existsSync(this.sandboxes.layout(sandboxId).dir);
    } catch {
      return false;
    }
  }

  /** The mount process's status: state, pid, and the bytes it fetched from the registry. */
  mountStatus(sandboxId: string): MountStatus | undefined {
    return readMountStatus(this.sandboxes.layout(sandboxId).mountStatus);
  }

  /** Every lazy sandbox's mount status file and what it says now (metrics read their fetch counts). */
  async mountStatuses(): Promise<Array<{ statusFile: string; status: MountStatus }>> {
    return (await this.sandboxIds()).flatMap((id) => {
      const statusFile = this.sandboxes.layout(id).mountStatus;
      const status = readMountStatus(statusFile);
      return status === undefined ? [] : [{ statusFile, status }];
    });
  }

  async snapshot(spec: SnapshotSpec, progress: ProgressSink): Promise<SnapshotOutcome> {
    const registry = this.opts.access.snapshot_registry;
    if (registry === undefined) {
      throw new CryoError('UNPROCESSABLE', `lazy sandbox ${spec.sandboxId} can only be snapshotted to a registry, and snapshot_registry is not configured`);
    }
    checkSandboxId(spec.sandboxId);
    const onFreeze = (thawed: Promise<void>): void => {
      this.frozen.set(spec.sandboxId, thawed);
      void thawed.then(() => {
        if (this.frozen.get(spec.sandboxId) === thawed) this.frozen.delete(spec.sandboxId);
      });
    };
    return this.locked(spec.sandboxId, () => snapshotLazySandbox({
      sandboxes: this.sandboxes, registry, client: (host) => this.client(host), onFreeze, log: this.log,
      maxLayers: this.opts.maxLayers ?? DEFAULT_MAX_LAYERS,
      publishAccess: (ref, digest, carried, pack) => this.opts.clipIndexes.publishAccess(ref, digest, carried, pack),
    }, spec, progress));
  }

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
      const containerId = containerName(sandboxId);
      const state = states.get(containerId);
      let observed: ContainerState = state === undefined ? 'exited' : mapStatus(state.status);
      // A container whose image mount is gone cannot read its files any more: it is as good as ended.
      if (observed === 'running' && !this.sandboxes.mountHealthy(this.sandboxes.layout(sandboxId), mounts)) observed = 'exited';
      out.push({ sandbox_id: sandboxId, container_id: containerId, state: observed, exit_code: null, runtime: 'runc-lazy' });
    }
    return out;
  }

  /**
   * After an executor restart (or any time): every lazy sandbox is adopted, resumed, restarted or
   * ended (runtime/lazy/recover.ts). Containers runc knows without a sandbox dir are deleted.
   */
  async recover(): Promise<Recovery[]> {
    const results: Recovery[] = [];
    const ids = await this.sandboxIds();
    for (const sandboxId of ids) {
      try {
        results.push(await this.locked(sandboxId, () => this.recoverOne(sandboxId)));
      } catch (err) {
        this.log.error({ sandbox_id: sandboxId, err: errorText(err) }, 'lazy sandbox recovery failed');
        await this.locked(sandboxId, () => this.sandboxes.teardown(sandboxId)).catch(() => undefined);
        results.push({ sandbox_id: sandboxId, action: 'ended', reason: `recovery failed: ${errorText(err)}` });
      }
    }
    const known = new Set(ids.map(containerName));
    for (const state of await this.runc.list().catch(() => [])) {
      if (state.id.startsWith(CONTAINER_NAME_PREFIX) && !known.has(state.id)) await this.sandboxes.deleteContainer(state.id).catch(() => undefined);
    }
    for (const r of results) this.log.info({ sandbox_id: r.sandbox_id, action: r.action, reason: r.reason }, 'lazy sandbox recovered');
    return results;
  }

  private recoverOne(sandboxId: string): Promise<Recovery> {
    return recoverLazySandbox(this.sandboxes, sandboxId, this.opts.recoverMode ?? 'restart');
  }
}
