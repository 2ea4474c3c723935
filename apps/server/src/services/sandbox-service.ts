/** Sandboxes: create (placed on an executor through a create_sandbox operation), delete, exec. */
import type { Logger } from 'pino';
import {
  CryoError,
  newSandboxId,
  notFound,
  type CreateSandboxBody,
  type ExecBody,
  type ExecResult,
  type ListQuery,
  type RestoreMode,
  type Sandbox,
  type SandboxListItem,
} from '@cryo/snapshot';
import type { Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import type { NamespaceStore } from '../store/namespaces';
import type { OperationStore } from '../store/operations';
import type { Page } from '../store/pagination';
import { toSandboxView, type SandboxRow, type SandboxStore } from '../store/sandboxes';
import { assertWithinLimit } from './duration-limits';
import { executorFailure } from './executor-failures';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';
import type { OperationSignals } from './operation-signals';
import type { Placement } from './placement';

/** Everything needed to start a sandbox, fresh or restored. */
export interface LaunchSpec {
  image: string;
  baseImage: string;
  command: string[] | null;
  env: Record<string, string>;
  labels: Record<string, string>;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  timeoutSecs: number | undefined;
  executorId: string | undefined;
  restore: {
    snapshotId: string;
    imageRef: string;
    digest: string | null;
    clipIndexRef: string | null;
    mode: RestoreMode;
    /** The executor holding a local-only snapshot image, if that is where it must run. */
    onlyOn: string | null;
  } | null;
}

export interface SandboxServiceDeps {
  db: Database;
  namespaces: NamespaceStore;
  sandboxes: SandboxStore;
  operations: OperationStore;
  queue: OperationQueue;
  signals: OperationSignals;
  placement: Placement;
  metrics: Metrics;
  clock: Clock;
  config: ServerConfig;
  logger: Logger;
}

export class SandboxService {
  constructor(private readonly deps: SandboxServiceDeps) {}

  create(namespace: string, body: CreateSandboxBody): SandboxRow {
    return this.launch(namespace, {
      image: body.image,
      baseImage: body.image,
      command: body.command ?? null,
      env: body.env ?? {},
      labels: body.labels ?? {},
      resources: body.resources ?? {},
      timeoutSecs: body.timeout_secs,
      executorId: body.executor_id,
      restore: null,
    });
  }

  launch(namespace: string, spec: LaunchSpec): SandboxRow {
    const { db, namespaces, sandboxes, placement, queue, clock } = this.deps;
    const timeoutSecs = this.checkTimeout(spec.timeoutSecs);
    const id = newSandboxId();
    const row = db.transaction(() => {
      const now = clock.now();
      const executor = placement.choose({
        pinned: spec.executorId,
        resources: spec.resources,
        ...(spec.restore === null
          ? {}
          : {
              restore: {
                snapshotId: spec.restore.snapshotId,
                imageRef: spec.restore.imageRef,
                mode: spec.restore.mode,
                onlyOn: spec.restore.onlyOn,
              },
            }),
      });
      namespaces.ensure(namespace, now);
      sandboxes.insert({
        id,
        namespace,
        image: spec.image,
        baseImage: spec.baseImage,
        command: spec.command,
        labels: spec.labels,
        resources: spec.resources,
        timeoutSecs,
        executorId: executor.id,
        pinned: spec.executorId !== undefined || (spec.restore?.onlyOn ?? null) !== null,
        pendingReason: `waiting for executor ${executor.id} to start the container`,
        restoredFromSnapshot: spec.restore?.snapshotId ?? null,
        restoreMode: spec.restore?.mode ?? null,
        now,
      });
      queue.enqueue(
        'create_sandbox',
        executor.id,
        {
          sandbox_id: id,
          namespace,
          image: spec.image,
          command: spec.command,
          env: spec.env,
          labels: spec.labels,
          resources: spec.resources,
          restore:
            spec.restore === null
              ? null
              : {
                  snapshot_id: spec.restore.snapshotId,
                  image_ref: spec.restore.imageRef,
                  digest: spec.restore.digest,
                  clip_index_ref: spec.restore.clipIndexRef,
                  mode: spec.restore.mode,
                },
        },
        { sandboxId: id, snapshotId: spec.restore?.snapshotId ?? null },
      );
      return sandboxes.get(id);
    })();
    if (row === undefined) throw new Error(`sandbox ${id} vanished right after it was created`);
    this.deps.logger.info({ sandbox_id: id, executor_id: row.executor_id, namespace }, 'sandbox placed');
    return row;
  }

  get(namespace: string, id: string): Sandbox {
    return toSandboxView(this.row(namespace, id));
  }

  list(namespace: string, query: ListQuery): Page<SandboxListItem> {
    return this.deps.sandboxes.list(namespace, query);
  }

  /** Ends a sandbox at the user's request. Deleting an ended sandbox changes nothing. */
  delete(namespace: string, id: string): Sandbox {
    const { db, sandboxes, operations, queue, clock } = this.deps;
    return db.transaction(() => {
      const row = this.row(namespace, id);
      if (row.status === 'terminated') return toSandboxView(row);
      const now = clock.now();
      sandboxes.terminate(id, { kind: 'user' }, now);
      // A create the executor has not picked up yet is simply withdrawn.
      let delivered = row.status !== 'pending';
      for (const op of operations.openForSandbox(id, 'create_sandbox')) {
        if (op.state !== 'queued') delivered = true;
        else if (operations.finish(op.id, { state: 'cancelled', message: 'sandbox deleted' }, now)) {
          this.deps.metrics.operationEnded(op.kind, 'cancelled', (now - op.created_at) / 1000);
        }
      }
      if (delivered && row.executor_id !== null) {
        queue.enqueue('delete_sandbox', row.executor_id, { sandbox_id: id }, { sandboxId: id });
      }
      this.deps.logger.info({ sandbox_id: id }, 'sandbox deleted by user');
      return toSandboxView(this.row(namespace, id));
    })();
  }

  async exec(namespace: string, id: string, body: ExecBody): Promise<ExecResult> {
    const { operations, queue, signals, metrics, clock, config } = this.deps;
    const row = this.row(namespace, id);
    if ((row.status !== 'running' && row.status !== 'snapshotting') || row.executor_id === null) {
      throw new CryoError('CONFLICT', `sandbox ${id} is ${row.status}; exec needs a running sandbox`, {
        status: row.status,
      });
    }
    const timeoutSecs = body.timeout_secs ?? config.sandboxes.exec_default_timeout_secs;
    const enqueuedAt = clock.now();
    const opId = queue.enqueue(
      'exec',
      row.executor_id,
      { sandbox_id: id, command: body.command, timeout_secs: timeoutSecs },
      { sandboxId: id },
    );
    const waitMs = (timeoutSecs + config.operations.exec_lease_grace_secs) * 1000;
    const end = await signals.waitForEnd(opId, waitMs);
    if (end === 'timeout') {
      const now = clock.now();
      if (operations.finish(opId, { state: 'cancelled', message: 'no result before the exec timeout' }, now)) {
        metrics.operationEnded('exec', 'cancelled', (now - enqueuedAt) / 1000);
      }
      throw new CryoError(
        'TIMEOUT',
        `exec in sandbox ${id} did not finish within ${timeoutSecs}s (plus ${config.operations.exec_lease_grace_secs}s for executor ${row.executor_id} to answer)`,
      );
    }
    if (end.state === 'done') {
      if (end.kind === 'exec') return end.result;
      throw new CryoError('INTERNAL', `operation ${opId} of sandbox ${id} is a ${end.kind}, not an exec`);
    }
    if (end.state === 'cancelled') throw new CryoError('UNAVAILABLE', `exec in sandbox ${id} was cancelled: ${end.message}`);
    throw executorFailure(row.executor_id, end.code, end.message, `exec in sandbox ${id}`);
  }

  private row(namespace: string, id: string): SandboxRow {
    const row = this.deps.sandboxes.getInNamespace(namespace, id);
    if (row === undefined) throw notFound('sandbox', id);
    return row;
  }

  private checkTimeout(requested: number | undefined): number {
    const { default_timeout_secs: fallback, max_timeout_secs: max } = this.deps.config.sandboxes;
    return assertWithinLimit(requested ?? fallback, {
      field: 'timeout_secs',
      limit: 'sandboxes.max_timeout_secs',
      max,
      zeroMeans: 'no timeout',
    });
  }
}
