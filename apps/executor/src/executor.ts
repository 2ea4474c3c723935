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
import { join } from 'node:path';

export const EXECUTOR_VERSION = '0.1.0';

export interface ExecutorOptions {
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
    this.loop = new OperationLoop(this.server, this.ops, (op, opLog) => this.handle(op, opLog), log);
    this.reconciler = new Reconciler(this.driver, (id) => (this.busySandboxes.get(id) ?? 0) > 0, log);
    this.heartbeat = new HeartbeatService(this.server, () => this.observe(), async (res) => {
      await this.reconciler.reconcile(res.desired_sandboxes);
    }, log);
  }

  async start(): Promise<void> {
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
    const [sandboxes, images] = await Promise.all([this.driver.observe(), this.driver.cachedSnapshotImages()]);
    return {
      host: hostname(),
      version: EXECUTOR_VERSION,
      labels: this.config.labels,
      capacity: {
        cpus: this.config.capacity.cpus ?? cpus().length,
        memory_mb: this.config.capacity.memory_mb ?? Math.floor(totalmem() / 1024 / 1024),
        max_sandboxes: this.config.capacity.max_sandboxes,
      },
      capabilities: { lazy: false, lazy_unavailable_reason: 'lazy restore (runc-lazy driver) is not available on this executor' },
      registry: this.config.snapshot_registry === undefined ? null
        : { url: this.config.snapshot_registry.url, repository: this.config.snapshot_registry.repository },
      sandboxes,
      images,
    };
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
          let image = p.image;
          if (p.restore !== null) {
            if (p.restore.mode === 'lazy') {
              throw new CryoError('UNPROCESSABLE', `executor ${this.config.executor_id} cannot restore lazily: the runc-lazy driver is not available`);
            }
            image = await this.driver.ensureSnapshotImage(p.restore.image_ref, p.restore.digest, progress);
          }
          const containerId = await this.driver.create({
            sandboxId: p.sandbox_id, namespace: p.namespace, image, command: p.command, env: p.env, labels: p.labels, resources: p.resources,
          }, progress);
          this.heartbeat.nudge();
          return { container_id: containerId, runtime: this.driver.name };
        });
      }
      case 'delete_sandbox': {
        const removed = await this.driver.remove(op.payload.sandbox_id);
        this.heartbeat.nudge();
        return { removed };
      }
      case 'exec': {
        const p = op.payload;
        return this.driver.exec(p.sandbox_id, p.command, p.timeout_secs);
      }
      case 'snapshot': {
        const p = op.payload;
        return this.withBusy(p.sandbox_id, async (): Promise<SnapshotResult> => {
          const outcome = await this.driver.snapshot({
            opId: op.op_id, sandboxId: p.sandbox_id, snapshotId: p.snapshot_id, namespace: p.namespace, tag: p.tag, baseImage: p.base_image,
          }, progress);
          log.info({ image_ref: outcome.imageRef, digest: outcome.digest, timings: outcome.timings }, 'snapshot taken');
          this.heartbeat.nudge();
          return {
            image_ref: outcome.imageRef, digest: outcome.digest, size_bytes: outcome.sizeBytes, timings: outcome.timings,
            clip_index_ref: null, clip_error: null,
          };
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
