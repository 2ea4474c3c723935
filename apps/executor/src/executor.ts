/**
 * Wires the executor: runtime drivers, journals, heartbeat, operation loop, reconciler, recovery;
 * and runs each operation kind against the driver that owns its sandbox.
 */
import { hostname, cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import {
  CryoError,
  type HeartbeatBody,
  type ObservedSandbox,
  type Operation,
  type OperationKind,
  type OperationOf,
  type OperationResultOf,
  type Progress,
} from '@cryo/snapshot';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { BusySandboxes } from './busy-sandboxes';
import { parseListen, serverUrls, type ExecutorConfig } from './config';
import { ClipArtifacts } from './clip-artifacts';
import { RegistryCredentialSource } from './registry-credentials';
import { DockerDriver, dockerFromHost } from './runtime/docker';
import { sandboxSpecOf, type ProgressSink, type Recovery, type RuntimeDriver, type SandboxSpec } from './runtime/driver';
import { DriverSet } from './runtime/driver-set';
import { RuncLazyDriver } from './runtime/runc-lazy';
import { ExecutorMetrics } from './metrics';
import { rollbackSandbox } from './operations/rollback-sandbox';
import { ServerClient } from './server-client';
import { ClipCacheService } from './services/clip-cache';
import { HeartbeatService } from './services/heartbeat';
import { MetricsEndpoint } from './services/metrics-endpoint';
import { OperationLoop } from './services/operation-loop';
import { Reconciler } from './services/reconciler';
import { OpJournal } from './state/op-journal';
import { PauseJournal } from './state/pause-journal';

export const EXECUTOR_VERSION = '0.1.0';

export interface ExecutorOptions {
  /** Fault injection for tests: hold a snapshot's pause this long before the commit. */
  holdPausedMs?: number;
  /** Fault injection for tests: fail this many create_sandbox operations (the first ones) before creating anything. */
  failCreates?: number;
}

type Handlers = { [K in OperationKind]: (op: OperationOf<K>, log: Logger, progress: ProgressSink) => Promise<OperationResultOf<K>> };

export class Executor {
  private readonly server: ServerClient;
  private readonly ops: OpJournal;
  private readonly loop: OperationLoop;
  private readonly heartbeat: HeartbeatService;
  private readonly reconciler: Reconciler;
  private readonly busy = new BusySandboxes();
  private readonly clip: ClipArtifacts;
  private readonly clipCache: ClipCacheService;
  /** Every way this executor can run sandboxes, the lazy one first (its `owns` is a directory check). */
  private readonly drivers: DriverSet;
  private failCreates: number;
  readonly metrics = new ExecutorMetrics();
  private readonly lazy: RuncLazyDriver;
  private readonly metricsEndpoint: MetricsEndpoint | undefined;

  constructor(private readonly config: ExecutorConfig, private readonly log: Logger, opts: ExecutorOptions = {}) {
    this.failCreates = opts.failCreates ?? 0;
    this.server = new ServerClient(serverUrls(config), config.executor_id, config.token, log);
    this.ops = new OpJournal(config.state_dir);
    // One registry-access policy (@cryo/registry-auth) for every client of this executor.
    const access: RegistryAccessSettings = {
      ...(config.snapshot_registry === undefined ? {} : { snapshot_registry: config.snapshot_registry }),
      ...(config.docker_config === undefined ? {} : { docker_config: resolve(config.docker_config) }),
      ...(config.clip.zone_cache === undefined ? {} : { zone_cache: config.clip.zone_cache }),
    };
    const credentials = new RegistryCredentialSource(access);
    this.clip = new ClipArtifacts(access, join(config.state_dir, 'clip'), {
      onPublished: (built) => this.metrics.indexBuilt(built.index_ms, built.index_size_bytes),
      log: log.child({ component: 'clip-artifacts' }),
    });
    const clipCacheDir = resolve(config.clip.cache.dir ?? join(config.state_dir, 'clip-cache'));
    this.clipCache = new ClipCacheService({
      dir: clipCacheDir,
      maxBytes: config.clip.cache.max_bytes,
      intervalMs: config.clip.cache.gc_interval_secs * 1000,
      log: log.child({ service: 'clip-cache' }),
    });
    this.lazy = new RuncLazyDriver({
      stateDir: config.state_dir,
      executorId: config.executor_id,
      access,
      clipIndexes: this.clip,
      maxLayers: config.snapshots.max_layers,
      clipCacheDir,
      backgroundFillBytesPerSec: config.clip.background_fill.bytes_per_sec,
      // a fill never takes the shared span cache past half its budget (clip.cache.max_bytes)
      backgroundFillMaxBytes: () => this.clipCache.fillAllowance(),
      onMountStopped: (statusFile, status) => this.metrics.mountStats([{ key: mountKey(statusFile, status.pid), fetch: status.fetch ?? {} }], true),
      log,
    });
    this.drivers = new DriverSet([
      this.lazy,
      new DockerDriver({
        docker: dockerFromHost(config.docker.host),
        executorId: config.executor_id,
        network: config.docker.network,
        mounts: config.docker.mounts.map((m) => ({
          Type: m.type, Target: m.target, ReadOnly: m.read_only, Source: m.source ?? '',
        })),
        registry: config.snapshot_registry,
        credentials,
        access,
        clip: this.clip,
        stateDir: config.state_dir,
        snapshots: {
          method: config.snapshots.method,
          compressionLevel: config.snapshots.compression_level,
          maxRunningPasses: config.snapshots.max_running_passes,
          settledBytes: config.snapshots.settled_bytes,
          maxLayers: config.snapshots.max_layers,
        },
        pauseJournal: new PauseJournal(config.state_dir),
        log,
        ...(opts.holdPausedMs === undefined ? {} : { holdPausedMs: opts.holdPausedMs }),
      }),
    ], config.executor_id);
    this.loop = new OperationLoop(this.server, this.ops, (op, opLog) => this.handle(op, opLog), log);
    const target = {
      observe: () => this.observeSandboxes(),
      remove: async (id: string) => (await this.drivers.owner(id))?.remove(id) ?? false,
    };
    this.reconciler = new Reconciler(target, (id) => this.busy.has(id), log);
    this.heartbeat = new HeartbeatService(this.server, () => this.observe(), async (res) => {
      this.metrics.heartbeatAccepted();
      await this.reconciler.reconcile(res.desired_sandboxes);
    }, log);
    if (config.metrics !== undefined) {
      const { host, port } = parseListen(config.metrics.listen);
      this.metricsEndpoint = new MetricsEndpoint({ host, port, metrics: this.metrics, refresh: () => this.refreshMetrics(), log });
    }
  }

  /**
   * Reads what the metrics cannot see happen: mount processes' fetch counts (every call), the
   * span cache's size (as the ClipCacheService last measured it, every clip.cache.gc_interval_secs).
   */
  private async refreshMetrics(): Promise<void> {
    const mounts = await this.lazy.mountStatuses();
    this.metrics.mountStats(mounts.map(({ statusFile, status }) => ({ key: mountKey(statusFile, status.pid), fetch: status.fetch ?? {} })));
    this.metrics.spanCache(this.clipCache.observe());
  }

  async start(): Promise<void> {
    if (this.metricsEndpoint !== undefined) {
      const address = await this.metricsEndpoint.start().catch((err: unknown) => {
        throw new Error(`metrics.listen ${this.config.metrics?.listen}: cannot listen: ${err instanceof Error ? err.message : String(err)}`);
      });
      this.log.info({ metrics: `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}/metrics` }, 'serving metrics');
    }
    await this.drivers.probe(this.log);
    await this.recover();
    // Register before taking work; keep trying while the server is not up yet.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.heartbeat.beat();
        break;
      } catch (err) {
        if (attempt % 10 === 0) this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'server not reachable yet; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    this.clipCache.start();
    this.heartbeat.start();
    this.loop.start();
    this.log.info({ executor_id: this.config.executor_id, servers: serverUrls(this.config) }, 'executor ready');
  }

  async stop(): Promise<void> {
    await Promise.all([this.heartbeat.stop(), this.loop.stop(), this.metricsEndpoint?.stop(), this.clipCache.stop()]);
    await Promise.all([this.clip.close(), ...this.drivers.all.map((d) => d.close?.())]);
  }

  /** Undo what a crash left half-done: paused sandboxes, broken mounts, operations that never finished. */
  private async recover(): Promise<void> {
    const recovered: Recovery[] = [];
    for (const driver of this.drivers.active) recovered.push(...await driver.recover());
    const unpaused = new Set(recovered.filter((r) => r.action === 'unpaused' || r.action === 'resumed').map((r) => r.sandbox_id));
    for (const record of this.ops.all()) {
      if (record.state === 'running' && record.pid !== process.pid) {
        const sandboxNote = record.sandbox_id !== null && unpaused.has(record.sandbox_id)
          ? `; sandbox ${record.sandbox_id} was unpaused and keeps running` : '';
        const message = `executor ${this.config.executor_id} restarted while this ${record.kind} operation was running${sandboxNote}`;
        this.log.warn({ op_id: record.op_id }, message);
        const result = { ok: false as const, error: { code: 'UNAVAILABLE', message } };
        this.ops.finished(record.op_id, record.kind, result, false);
        void this.loop.report(record, result);
      } else if (record.state === 'done' && !record.reported) {
        void this.loop.report(record, record.result);
      } else if (record.state === 'done' && Date.parse(record.finished_at) < Date.now() - 24 * 3600_000) {
        this.ops.forget(record.op_id);
      }
    }
  }

  private async observe(): Promise<HeartbeatBody> {
    const [sandboxes, images] = await Promise.all([
      this.observeSandboxes(),
      Promise.all(this.drivers.active.map((d) => d.images?.list() ?? [])).then((lists) => lists.flat()),
    ]);
    const lazy = this.drivers.capabilitiesFor('lazy');
    // One image under several refs (a snapshot's local twin and its registry ref) counts once.
    const imageBytes = new Map(images.map((image) => [image.snapshot_id ?? image.ref, image.size_bytes ?? 0]));
    this.metrics.observed(sandboxes, [...imageBytes.values()].reduce((sum, bytes) => sum + bytes, 0));
    return {
      host: hostname(),
      version: EXECUTOR_VERSION,
      labels: this.config.labels,
      capacity: {
        cpus: this.config.capacity.cpus ?? cpus().length,
        memory_mb: this.config.capacity.memory_mb ?? Math.floor(totalmem() / 1024 / 1024),
        max_sandboxes: this.config.capacity.max_sandboxes,
        ...(lazy?.available === true ? { clip_cache: this.clipCache.observe() } : {}),
      },
      capabilities: { lazy: lazy?.available === true, lazy_unavailable_reason: lazy?.available === true ? null : lazy?.reason ?? 'no lazy runtime driver' },
      registry: this.config.snapshot_registry === undefined ? null
        : { url: this.config.snapshot_registry.url, repository: this.config.snapshot_registry.repository },
      sandboxes,
      images,
    };
  }

  private async observeSandboxes(): Promise<ObservedSandbox[]> {
    return (await Promise.all(this.drivers.active.map((d) => d.observe()))).flat();
  }

  private progressSink(opId: string, log: Logger): ProgressSink {
    return (progress: Progress) => {
      this.server.progress(opId, progress).catch((err: unknown) => {
        log.debug({ err: err instanceof Error ? err.message : String(err) }, 'progress report failed');
      });
    };
  }

  private handle(op: Operation, log: Logger): Promise<unknown> {
    // `op.kind` picks the handler of the same kind: the pair always agrees.
    const handler = this.handlers[op.kind] as (op: Operation, log: Logger, progress: ProgressSink) => Promise<unknown>;
    const started = performance.now();
    const outcome = handler(op, log, this.progressSink(op.op_id, log));
    const seconds = (): number => (performance.now() - started) / 1000;
    outcome.then(() => this.metrics.operationEnded(op.kind, 'done', seconds()), () => this.metrics.operationEnded(op.kind, 'failed', seconds()));
    return outcome;
  }

  /**
   * Create (or recreate, for a rollback) a sandbox with `driver`; a restore's time to running
   * and, for an eager one, whether the engine had its image, go to the metrics.
   */
  private async createWith(driver: RuntimeDriver, spec: SandboxSpec, progress: ProgressSink): Promise<string> {
    const started = performance.now();
    let pulled: Progress | undefined;
    const containerId = await driver.create(spec, (p) => {
      if (p.phase === 'pull') pulled = p;
      progress(p);
    });
    if (spec.restore !== null) {
      this.metrics.restoreStarted(spec.sandboxId, spec.restore.mode, started);
      if (spec.restore.mode === 'eager') this.metrics.imageCache(pulled === undefined, pulled?.bytes_total ?? pulled?.bytes_done ?? 0);
    }
    return containerId;
  }

  private readonly handlers: Handlers = {
    create_sandbox: ({ payload: p }, _log, progress) => this.busy.hold(p.sandbox_id, async () => {
      if (this.failCreates > 0) {
        this.failCreates -= 1;
        throw new CryoError('UNAVAILABLE', `fault injected (CRYO_FAULT_FAIL_CREATES): create of sandbox ${p.sandbox_id} refused on executor ${this.config.executor_id}`);
      }
      const spec = sandboxSpecOf(p);
      const driver = await this.drivers.forSpec(spec);
      const containerId = await this.createWith(driver, spec, progress);
      this.heartbeat.nudge();
      return { container_id: containerId, runtime: driver.name };
    }),
    // Rollback in place: the old container goes, one restored from the snapshot comes (operations/rollback-sandbox.ts).
    rollback_sandbox: ({ payload: p }, log, progress) => rollbackSandbox({
      drivers: this.drivers,
      busy: this.busy,
      create: (driver, spec, sink) => this.createWith(driver, spec, sink),
      changed: () => this.heartbeat.nudge(),
    }, p, log, progress),
    delete_sandbox: async ({ payload: p }) => {
      const removed = (await (await this.drivers.owner(p.sandbox_id))?.remove(p.sandbox_id)) ?? false;
      this.metrics.sandboxRemoved(p.sandbox_id);
      this.heartbeat.nudge();
      return { removed };
    },
    exec: async ({ payload: p }) => {
      const result = await (await this.drivers.owning(p.sandbox_id)).exec(p.sandbox_id, p.command, p.timeout_secs);
      this.metrics.execEnded(p.sandbox_id);
      return result;
    },
    snapshot: ({ op_id: opId, payload: p }, log, progress) => this.busy.hold(p.sandbox_id, async () => {
      const driver = await this.drivers.owning(p.sandbox_id);
      const outcome = await driver.snapshot({
        opId, sandboxId: p.sandbox_id, snapshotId: p.snapshot_id, namespace: p.namespace, tag: p.tag, baseImage: p.base_image,
      }, progress);
      log.info({ image_ref: outcome.imageRef, digest: outcome.digest, layers: outcome.layers, flattened: outcome.flattened, timings: outcome.timings }, 'snapshot taken');
      this.metrics.snapshotTimings(outcome.timings);
      this.heartbeat.nudge();
      return {
        image_ref: outcome.imageRef, digest: outcome.digest, size_bytes: outcome.sizeBytes, layers: outcome.layers, flattened: outcome.flattened, timings: outcome.timings,
        clip_index_ref: outcome.clipIndexRef ?? null, capture: outcome.capture ?? null, excluded_mounts: outcome.excludedMounts ?? [],
      };
    }),
    delete_image: async ({ payload: p }) => {
      const removed = new Set<string>();
      for (const driver of this.drivers.active) for (const ref of await driver.images?.remove(p.image_refs) ?? []) removed.add(ref);
      this.heartbeat.nudge();
      return { removed: [...removed] };
    },
    build_index: async ({ payload: p }, log) => {
      const { layers_read: layersRead, thread_id: _thread, ...result } = await this.clip.publish(p.image_ref, p.digest);
      log.info({ clip_index_ref: result.clip_index_ref, index_ms: result.index_ms, index_size_bytes: result.index_size_bytes, layers_read: layersRead }, 'clip index pushed');
      return result;
    },
  };
}

/** Tells mount processes apart in the metrics: a new process behind the same status file counts anew. */
function mountKey(statusFile: string, pid: number): string {
  return `${statusFile}#${pid}`;
}

