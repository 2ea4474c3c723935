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
import { operationEnd, type OperationEnd } from '../store/operations';
import type { Page } from '../store/pagination';
import { toSandboxView, type SandboxRow } from '../store/sandboxes';
import type { Stores } from '../store/stores';
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

/** How `count` sandboxes of one call (a fork) are placed and started. */
export interface LaunchManyOptions {
  /** Spread over these executors only (a fork's executor_ids). */
  among?: readonly string[] | undefined;
  /** Executors holding the image that heartbeats do not show yet (the snapshot is still being pushed). */
  heldBy?: readonly string[];
  /**
   * The snapshot is not pushed yet: the sandboxes are placed and pending, and their
   * create_sandbox operations are queued when it is ready (pending_launches, snapshot-follow-ups.ts).
   */
  deferred?: boolean;
}

export interface SandboxServiceDeps {
  db: Database;
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

  create(namespace: string, body: CreateSandboxBody): Promise<SandboxRow> {
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

  /**
   * Places and starts one sandbox; a placement refusal is the caller's error. `beforeInsert` runs
   * in the same transaction first (a compare-and-set on the snapshot restored from).
   */
  async launch(namespace: string, spec: LaunchSpec, beforeInsert?: (tx: Stores) => Promise<void>): Promise<SandboxRow> {
    const rows = await this.deps.db.transaction(async (tx) => {
      await beforeInsert?.(tx);
      return this.launchManyIn(tx, namespace, spec, 1, {});
    });
    const row = rows[0];
    if (row === undefined) throw new Error('a launch of one sandbox placed none');
    return row;
  }

  /**
   * Places `count` sandboxes of one spec in `tx`, spread over executors (the holders of the image
   * first), and queues each one's create_sandbox operation. Each then runs or fails on its own.
   * When the first cannot be placed the whole call is refused with the reason; a later one that
   * cannot (the executors filled up) is recorded `terminated` with the reason, the others go on.
   */
  async launchManyIn(tx: Stores, namespace: string, spec: LaunchSpec, count: number, options: LaunchManyOptions): Promise<SandboxRow[]> {
    const { placement, clock } = this.deps;
    const timeoutSecs = this.checkTimeout(spec.timeoutSecs);
    await tx.namespaces.ensure(namespace, clock.now());
    const spread = new Map<string, number>();
    const rows: SandboxRow[] = [];
    for (let i = 0; i < count; i += 1) {
      const id = newSandboxId();
      let executorId: string;
      try {
        const executor = await placement.choose(tx, {
          pinned: spec.executorId,
          resources: spec.resources,
          among: options.among,
          spread,
          ...(spec.restore === null
            ? {}
            : {
                restore: {
                  snapshotId: spec.restore.snapshotId,
                  imageRef: spec.restore.imageRef,
                  mode: spec.restore.mode,
                  onlyOn: spec.restore.onlyOn,
                  heldBy: options.heldBy ?? [],
                },
              }),
        });
        executorId = executor.id;
      } catch (err) {
        if (i === 0 || !(err instanceof CryoError)) throw err;
        rows.push(await this.insertUnplaced(tx, id, namespace, spec, timeoutSecs, err.message));
        continue;
      }
      spread.set(executorId, (spread.get(executorId) ?? 0) + 1);
      rows.push(await this.insertPlaced(tx, id, namespace, spec, timeoutSecs, executorId, options.deferred === true));
    }
    tx.afterCommit(() => {
      for (const row of rows) {
        this.deps.logger.info({ sandbox_id: row.id, executor_id: row.executor_id, namespace, status: row.status }, 'sandbox placed');
      }
    });
    return rows;
  }

  private async insertPlaced(
    tx: Stores, id: string, namespace: string, spec: LaunchSpec, timeoutSecs: number, executorId: string, deferred: boolean,
  ): Promise<SandboxRow> {
    const { queue, clock } = this.deps;
    const now = clock.now();
    const restore = spec.restore;
    await tx.sandboxes.insert({
      id,
      namespace,
      image: spec.image,
      baseImage: spec.baseImage,
      command: spec.command,
      labels: spec.labels,
      resources: spec.resources,
      timeoutSecs,
      executorId,
      pinned: spec.executorId !== undefined || (restore?.onlyOn ?? null) !== null,
      pendingReason: deferred && restore !== null
        ? `waiting for snapshot ${restore.snapshotId} to be ${restore.mode === 'lazy' ? 'pushed and indexed' : 'pushed'}; then executor ${executorId} starts it`
        : `waiting for executor ${executorId} to start the container`,
      restoredFromSnapshot: restore?.snapshotId ?? null,
      restoreMode: restore?.mode ?? null,
      now,
    });
    const payload = {
      sandbox_id: id, namespace, image: spec.image, command: spec.command, env: spec.env, labels: spec.labels, resources: spec.resources,
    };
    if (deferred && restore !== null) {
      await tx.launches.insert({ sandboxId: id, snapshotId: restore.snapshotId, mode: restore.mode, payload }, now);
    } else {
      await queue.enqueue(tx, 'create_sandbox', executorId, {
        ...payload,
        restore: restore === null ? null : {
          snapshot_id: restore.snapshotId,
          image_ref: restore.imageRef,
          digest: restore.digest,
          clip_index_ref: restore.clipIndexRef,
          mode: restore.mode,
        },
      }, { sandboxId: id, snapshotId: restore?.snapshotId ?? null });
    }
    return this.inserted(tx, id);
  }

  /** A fork no executor could take: recorded, and ended at once with the reason. */
  private async insertUnplaced(
    tx: Stores, id: string, namespace: string, spec: LaunchSpec, timeoutSecs: number, reason: string,
  ): Promise<SandboxRow> {
    const now = this.deps.clock.now();
    await tx.sandboxes.insert({
      id, namespace, image: spec.image, baseImage: spec.baseImage, command: spec.command, labels: spec.labels,
      resources: spec.resources, timeoutSecs, executorId: null, pinned: false, pendingReason: 'placing',
      restoredFromSnapshot: spec.restore?.snapshotId ?? null, restoreMode: spec.restore?.mode ?? null, now,
    });
    await tx.sandboxes.terminate(id, { kind: 'failed', reason: `not placed: ${reason}` }, now);
    return this.inserted(tx, id);
  }

  private async inserted(tx: Stores, id: string): Promise<SandboxRow> {
    const row = await tx.sandboxes.get(id);
    if (row === undefined) throw new Error(`sandbox ${id} vanished right after it was created`);
    return row;
  }

  async get(namespace: string, id: string): Promise<Sandbox> {
    return toSandboxView(await this.row(this.deps.db.stores, namespace, id));
  }

  list(namespace: string, query: ListQuery): Promise<Page<SandboxListItem>> {
    return this.deps.db.stores.sandboxes.list(namespace, query);
  }

  /** Ends a sandbox at the user's request. Deleting an ended sandbox changes nothing. */
  async delete(namespace: string, id: string): Promise<Sandbox> {
    const { db, queue, clock } = this.deps;
    return db.transaction(async (tx) => {
      const { sandboxes, operations } = tx;
      const row = await this.row(tx, namespace, id);
      if (row.status === 'terminated') return toSandboxView(row);
      const now = clock.now();
      // Compare-and-set: of two deletes at once (on two replicas), one ends the sandbox.
      if (!(await sandboxes.terminate(id, { kind: 'user' }, now))) return toSandboxView(await this.row(tx, namespace, id));
      // A fork still waiting for its snapshot has nothing on an executor yet.
      await tx.launches.drop(id);
      // A create the executor has not picked up yet is simply withdrawn.
      let delivered = row.status !== 'pending';
      for (const op of await operations.openForSandbox(id, 'create_sandbox')) {
        if (op.state === 'queued' && (await operations.finish(op.id, { state: 'cancelled', message: 'sandbox deleted' }, now))) {
          tx.afterCommit(() => this.deps.metrics.operationEnded(op.kind, 'cancelled', (now - op.created_at) / 1000));
          continue;
        }
        delivered = true;
      }
      if (delivered && row.executor_id !== null) {
        await queue.enqueue(tx, 'delete_sandbox', row.executor_id, { sandbox_id: id }, { sandboxId: id });
      }
      this.deps.logger.info({ sandbox_id: id }, 'sandbox deleted by user');
      return toSandboxView(await this.row(tx, namespace, id));
    });
  }

  async exec(namespace: string, id: string, body: ExecBody): Promise<ExecResult> {
    const { db, queue, metrics, clock, config } = this.deps;
    const { operations } = db.stores;
    const row = await this.row(db.stores, namespace, id);
    if ((row.status !== 'running' && row.status !== 'snapshotting') || row.executor_id === null) {
      throw new CryoError('CONFLICT', `sandbox ${id} is ${row.status}; exec needs a running sandbox`, {
        status: row.status,
      });
    }
    const timeoutSecs = body.timeout_secs ?? config.sandboxes.exec_default_timeout_secs;
    const enqueuedAt = clock.now();
    const opId = await queue.enqueue(
      db.stores,
      'exec',
      row.executor_id,
      { sandbox_id: id, command: body.command, timeout_secs: timeoutSecs },
      { sandboxId: id },
    );
    const waitMs = (timeoutSecs + config.operations.exec_lease_grace_secs) * 1000;
    const end = await this.awaitEnd(opId, waitMs);
    if (end === undefined) {
      const now = clock.now();
      if (await operations.finish(opId, { state: 'cancelled', message: 'no result before the exec timeout' }, now)) {
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

  /**
   * How the operation ended, or undefined when it is still open after `waitMs`. The result may
   * reach any replica: a wake-up (local, or NOTIFY from another replica) says "look again", and
   * the operation's row says how it ended. The waiter is registered before each look, so an end
   * between the look and the wait is not missed.
   */
  private async awaitEnd(opId: string, waitMs: number): Promise<OperationEnd | undefined> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const abort = new AbortController();
      const woke = this.deps.signals.waitForEnd(opId, Math.max(0, deadline - Date.now()), abort.signal);
      const end = await this.ended(opId);
      if (end !== undefined) {
        abort.abort();
        return end;
      }
      const why = await woke;
      if (why === 'closed') return { state: 'cancelled', message: 'server is shutting down' };
      if (why === 'timeout') return this.ended(opId);
    }
  }

  private async ended(opId: string): Promise<OperationEnd | undefined> {
    const op = await this.deps.db.stores.operations.get(opId);
    return op === undefined ? { state: 'cancelled', message: 'operation was pruned' } : operationEnd(op);
  }

  private async row(stores: Stores, namespace: string, id: string): Promise<SandboxRow> {
    const row = await stores.sandboxes.getInNamespace(namespace, id);
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
