/** Wires the executor: driver, journals, heartbeat, operation loop, reconciler, recovery. */
import { hostname, cpus, totalmem } from 'node:os';
import type { Logger } from 'pino';
import {
  CryoError,
  localSnapshotRef,
  type HeartbeatBody,
  type Operation,
  type Progress,
  type SnapshotResult,
} from '@cryo/snapshot';
import type { DataplaneConfig } from './config';
import { DockerDriver, dockerFromHost } from './runtime/docker';
import { ServerClient } from './server-client';
import { PauseJournal } from './state/pause-journal';
import { OpJournal } from './state/op-journal';
import { OperationLoop } from './services/operation-loop';
import { HeartbeatService } from './services/heartbeat';
import { Reconciler } from './services/reconciler';
import { RegistryCredentialSource } from './registry-credentials';
import { ClipArtifacts } from './clip-artifacts';
import { join, resolve } from 'node:path';
import { RuncLazyDriver } from './runtime/runc-lazy';
import { lazyCapabilities, type LazyCapabilities } from './runtime/lazy-capabilities';
import type { RuntimeDriver } from './runtime/driver';

export const EXECUTOR_VERSION = '0.1.0';

export interface ExecutorOptions {
  /** The config file path: lazy mount processes read registry credentials from it themselves. */
  configFile?: string;
  /** Fault injection for tests: hold a snapshot's pause this long before the commit. */
  holdPausedMs?: number;
}

export class Executor {
  private readonly server: ServerClient;
  private readonly driver: DockerDriver;
  private readonly ops: OpJournal;
  private readonly loop: OperationLoop;
  private readonly heartbeat: HeartbeatService;
  private readonly reconciler: Reconciler;
  private readonly busySandboxes = new Map<string, number>();
  private readonly clip: ClipArtifacts;
  private readonly lazy: RuncLazyDriver;
  private capabilities: LazyCapabilities = { lazy: false, lazy_unavailable_reason: 'not checked yet' };

  constructor(private readonly config: DataplaneConfig, private readonly log: Logger, opts: ExecutorOptions = {}) {
    this.server = new ServerClient(config.server_url, config.executor_id, config.token);
    this.ops = new OpJournal(config.state_dir);
    const credentials = new RegistryCredentialSource(config);
    this.clip = new ClipArtifacts(config.snapshot_registry, credentials, join(config.state_dir, 'clip'));
    this.driver = new DockerDriver({
      docker: dockerFromHost(config.docker.host),
      executorId: config.executor_id,
      network: config.docker.network,
      registry: config.snapshot_registry,
      credentials,
      pauseJournal: new PauseJournal(config.state_dir),
      log,
      ...(opts.holdPausedMs === undefined ? {} : { holdPausedMs: opts.holdPausedMs }),
    });
    this.lazy = new RuncLazyDriver({
      stateDir: config.state_dir,
      executorId: config.executor_id,
      registry: config.snapshot_registry,
      dockerConfig: config.docker_config,
      configFile: opts.configFile === undefined ? undefined : resolve(opts.configFile),
      log,
    });
    this.loop = new OperationLoop(this.server, this.ops, (op, opLog) => this.handle(op, opLog), log);
    const drivers = { observe: () => this.observeSandboxes(), remove: (id: string) => this.driverFor(id).remove(id) };
    this.reconciler = new Reconciler(drivers, (id) => (this.busySandboxes.get(id) ?? 0) > 0, log);
    this.heartbeat = new HeartbeatService(this.server, () => this.observe(), async (res) => {
      await this.reconciler.reconcile(res.desired_sandboxes);
    }, log);
  }

  async start(): Promise<void> {
    this.capabilities = await lazyCapabilities();
    if (!this.capabilities.lazy) this.log.warn({ reason: this.capabilities.lazy_unavailable_reason }, 'lazy restore unavailable on this host');
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
    this.heartbeat.start();
    this.loop.start();
    this.log.info({ executor_id: this.config.executor_id, server: this.config.server_url }, 'executor ready');
  }

  async stop(): Promise<void> {
    await Promise.all([this.heartbeat.stop(), this.loop.stop()]);
  }

  /** Undo what a crash left half-done: paused containers, operations that never finished. */
  private async recover(): Promise<void> {
    const unpaused = new Set(await this.driver.recoverPaused());
    if (this.capabilities.lazy) {
      for (const r of await this.lazy.recover()) this.log.warn({ sandbox_id: r.sandbox_id, action: r.action, reason: r.reason }, 'lazy sandbox recovered');
    }
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
    const [sandboxes, images] = await Promise.all([this.observeSandboxes(), this.driver.cachedSnapshotImages()]);
    return {
      host: hostname(),
      version: EXECUTOR_VERSION,
      labels: this.config.labels,
      capacity: {
        cpus: this.config.capacity.cpus ?? cpus().length,
        memory_mb: this.config.capacity.memory_mb ?? Math.floor(totalmem() / 1024 / 1024),
        max_sandboxes: this.config.capacity.max_sandboxes,
      },
      capabilities: this.capabilities.lazy && this.config.snapshot_registry !== undefined ? this.capabilities
        : { lazy: false, lazy_unavailable_reason: this.capabilities.lazy_unavailable_reason ?? 'lazy restore needs snapshot_registry in the dataplane config' },
      registry: this.config.snapshot_registry === undefined ? null
        : { url: this.config.snapshot_registry.url, repository: this.config.snapshot_registry.repository },
      sandboxes,
      images,
    };
  }

  private async observeSandboxes() {
    const [docker, lazy] = await Promise.all([this.driver.observe(), this.capabilities.lazy ? this.lazy.observe() : Promise.resolve([])]);
    return [...docker, ...lazy];
  }

  /** The driver that runs a sandbox: lazy sandboxes are known to the runc-lazy driver. */
  private driverFor(sandboxId: string): RuntimeDriver {
    return this.lazy.owns(sandboxId) ? this.lazy : this.driver;
  }

  private progressSink(opId: string, log: Logger): (p: Progress) => void {
    return (progress) => {
      this.server.progress(opId, progress).catch((err: unknown) => {
        log.debug({ err: err instanceof Error ? err.message : String(err) }, 'progress report failed');
      });
    };
  }

  private async withBusy<T>(sandboxId: string, work: () => Promise<T>): Promise<T> {
    this.busySandboxes.set(sandboxId, (this.busySandboxes.get(sandboxId) ?? 0) + 1);
    try {
      return await work();
    } finally {
      this.busySandboxes.set(sandboxId, (this.busySandboxes.get(sandboxId) ?? 1) - 1);
    }
  }

  private async handle(op: Operation, log: Logger): Promise<unknown> {
    const progress = this.progressSink(op.op_id, log);
    switch (op.kind) {
      case 'create_sandbox': {
        const p = op.payload;
        return this.withBusy(p.sandbox_id, async () => {
          const spec = { sandboxId: p.sandbox_id, namespace: p.namespace, image: p.image, command: p.command, env: p.env, labels: p.labels, resources: p.resources };
          if (p.restore !== null && p.restore.mode === 'lazy') {
            if (!this.capabilities.lazy) {
              throw new CryoError('UNPROCESSABLE', `executor ${this.config.executor_id} cannot restore lazily: ${this.capabilities.lazy_unavailable_reason ?? 'unavailable'}`);
            }
            if (p.restore.clip_index_ref === null) throw new CryoError('UNPROCESSABLE', `snapshot ${p.restore.snapshot_id} has no clip index`);
            progress({ phase: 'fetch-index', bytes_done: 0, bytes_total: null });
            const indexPath = await this.clip.fetch(p.restore.clip_index_ref, p.restore.digest);
            const containerId = await this.lazy.create({ ...spec, image: p.restore.image_ref, lazy: { indexPath, imageRef: p.restore.image_ref, digest: p.restore.digest } }, progress);
            this.heartbeat.nudge();
            return { container_id: containerId, runtime: this.lazy.name };
          }
          const image = p.restore === null ? p.image : await this.driver.ensureSnapshotImage(p.restore.image_ref, p.restore.digest, progress);
          const containerId = await this.driver.create({ ...spec, image }, progress);
          this.heartbeat.nudge();
          return { container_id: containerId, runtime: this.driver.name };
        });
      }
      case 'delete_sandbox': {
        const removed = await this.driverFor(op.payload.sandbox_id).remove(op.payload.sandbox_id);
        this.heartbeat.nudge();
        return { removed };
      }
      case 'exec': {
        const p = op.payload;
        return this.driverFor(p.sandbox_id).exec(p.sandbox_id, p.command, p.timeout_secs);
      }
      case 'snapshot': {
        const p = op.payload;
        return this.withBusy(p.sandbox_id, async (): Promise<SnapshotResult> => {
          const outcome = await this.driverFor(p.sandbox_id).snapshot({
            opId: op.op_id, sandboxId: p.sandbox_id, snapshotId: p.snapshot_id, namespace: p.namespace, tag: p.tag, baseImage: p.base_image,
          }, progress);
          log.info({ image_ref: outcome.imageRef, digest: outcome.digest, timings: outcome.timings }, 'snapshot taken');
          this.heartbeat.nudge();
          return { image_ref: outcome.imageRef, digest: outcome.digest, size_bytes: outcome.sizeBytes, timings: outcome.timings };
        });
      }
      case 'delete_image': {
        const refs = new Set(op.payload.image_refs);
        for (const ref of op.payload.image_refs) {
          const tag = ref.slice(ref.lastIndexOf(':') + 1);
          refs.add(localSnapshotRef(tag));
        }
        const removed = await this.driver.removeImages([...refs]);
        this.heartbeat.nudge();
        return { removed };
      }
      case 'build_index': {
        const result = await this.clip.publish(op.payload.image_ref, op.payload.digest);
        log.info({ clip_index_ref: result.clip_index_ref, index_ms: result.index_ms, index_size_bytes: result.index_size_bytes }, 'clip index pushed');
        return result;
      }
    }
  }
}
