/**
 * Snapshots: create (a snapshot operation on the sandbox's executor), TTL changes, delete,
 * restore. Issue 12: names unique per namespace, retention (keep_last), TTLs counted from the last
 * use (ttl_from), and restores of expired snapshots from their base image (on_expired).
 */
import type { Logger } from 'pino';
import {
  CryoError,
  localSnapshotRef,
  newSnapshotId,
  notFound,
  registrySnapshotRef,
  snapshotTag,
  type CreateSnapshotBody,
  type Fallback,
  type OnExpired,
  type RestoreBody,
  type RestoreMode,
  type Snapshot,
  type SnapshotListQuery,
} from '@cryo/snapshot';
import { toIso, type Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import { decodeJsonOrNull, StringListSchema } from '../store/columns';
import type { Page } from '../store/pagination';
import type { SandboxRow } from '../store/sandboxes';
import { expiresAtFor, toSnapshotView, ttlBase, type SnapshotRow } from '../store/snapshots';
import type { Stores } from '../store/stores';
import { assertWithinLimit } from './duration-limits';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';
import type { SnapshotFollowUps } from './snapshot-follow-ups';
import type { LaunchSpec, SandboxService } from './sandbox-service';
import { goneError, goneMeanwhile, restoreSource } from './snapshot-source';

/** What a restore (or fork) starts from: the snapshot, or (on_expired base_image) its base image. */
export interface LaunchPlan {
  spec: LaunchSpec;
  /** Set when the snapshot was gone and the base image runs instead. */
  fallback: Fallback | null;
  /** In the launch's transaction: marks the snapshot used (sliding TTL); 410 if it went meanwhile. */
  beforeInsert: (tx: Stores) => Promise<void>;
}

/** A restore's answer: the new sandbox, and the fallback when the snapshot's base image ran instead. */
export interface Restored {
  sandbox: SandboxRow;
  fallback: Fallback | null;
}

export interface SnapshotServiceDeps {
  db: Database;
  queue: OperationQueue;
  sandboxService: SandboxService;
  metrics: Metrics;
  clock: Clock;
  config: ServerConfig;
  logger: Logger;
  /** Asks the reaper (on whichever replica runs it) to look at deletions now, once `tx` commits. */
  onDeleteRequested: (tx: Stores) => Promise<void>;
  /** Ends the forks still waiting for a snapshot deleted before it was ready. */
  followUps: SnapshotFollowUps;
}

export class SnapshotService {
  constructor(private readonly deps: SnapshotServiceDeps) {}

  async create(namespace: string, sandboxId: string, body: CreateSnapshotBody): Promise<SnapshotRow> {
    const row = await this.deps.db.transaction((tx) => this.createIn(tx, namespace, sandboxId, body));
    this.deps.logger.info({ snapshot_id: row.id, sandbox_id: sandboxId, ttl_secs: row.ttl_secs }, 'snapshot requested');
    return row;
  }

  /** Starts a snapshot in `tx` (a fork of the sandbox may place its forks in the same transaction). */
  async createIn(tx: Stores, namespace: string, sandboxId: string, body: CreateSnapshotBody): Promise<SnapshotRow> {
    const { queue, clock, config } = this.deps;
    const ttlSecs = this.checkTtl(body.ttl_secs ?? config.snapshots.default_ttl_secs);
    const id = newSnapshotId();
    const { sandboxes, snapshots, executors } = tx;
    const now = clock.now();
    // Compare-and-set running -> snapshotting first: of two requests at once (on two replicas),
    // one gets the sandbox; any refusal below rolls the move back.
    const sandbox = await sandboxes.beginSnapshot(namespace, sandboxId, now);
    if (sandbox === undefined) {
      const current = await sandboxes.getInNamespace(namespace, sandboxId);
      if (current === undefined) throw notFound('sandbox', sandboxId);
      this.checkSnapshottable(current);
      throw new CryoError('CONFLICT', `sandbox ${sandboxId} changed state while the snapshot was requested; try again`);
    }
    const executorId = this.checkSnapshottable({ ...sandbox, status: 'running' });
    const max = config.snapshots.max_per_namespace;
    if (max > 0) {
      const live = await snapshots.countLive(namespace);
      if (live >= max) {
        throw new CryoError(
          'LIMIT_EXCEEDED',
          `namespace ${namespace} already has ${live} snapshots; the limit snapshots.max_per_namespace is ${max} ` +
            '(delete snapshots or wait for them to expire)',
          { limit: 'snapshots.max_per_namespace', value: max },
        );
      }
    }
    // The image tag is made of ids, so it is unique in the registry; a user's tag is a name,
    // unique among the namespace's creating and active snapshots.
    const imageTag = snapshotTag(sandbox.id, id);
    if (body.tag !== undefined) {
      await tx.lock(`cryo.tag.${namespace}.${body.tag}`); // two replicas checking the same name at once: one after the other
      const holder = await snapshots.tagHolder(namespace, body.tag);
      if (holder !== undefined) {
        throw new CryoError(
          'CONFLICT',
          `tag ${body.tag} is already used by snapshot ${holder.id} (${holder.status}) in namespace ${namespace}; ` +
            'delete that snapshot or choose another tag',
          { holder: holder.id, status: holder.status },
        );
      }
    }
    const registry = (await executors.get(executorId))?.registry ?? null;
    // The namespace exists: the sandbox is in it.
    const inserted = await snapshots.insert({
      id,
      namespace,
      sandboxId: sandbox.id,
      executorId,
      tag: body.tag ?? imageTag,
      userTag: body.tag !== undefined,
      labels: body.labels ?? {},
      plannedRef: registry === null ? localSnapshotRef(imageTag) : registrySnapshotRef(registry, imageTag),
      baseImage: sandbox.base_image,
      ttlSecs,
      now,
      ttlFrom: body.ttl_from ?? 'created',
      keepLast: body.keep_last ?? null,
    });
    await queue.enqueue(
      tx,
      'snapshot',
      executorId,
      { sandbox_id: sandbox.id, snapshot_id: id, namespace, tag: imageTag, base_image: sandbox.base_image },
      { sandboxId: sandbox.id, snapshotId: id },
    );
    return inserted;
  }

  async get(namespace: string, id: string): Promise<Snapshot> {
    return toSnapshotView(await this.row(this.deps.db.stores, namespace, id));
  }

  async list(namespace: string, query: SnapshotListQuery, sandboxId?: string): Promise<Page<Snapshot>> {
    const { sandboxes, snapshots } = this.deps.db.stores;
    if (sandboxId !== undefined && (await sandboxes.getInNamespace(namespace, sandboxId)) === undefined) {
      throw notFound('sandbox', sandboxId);
    }
    return snapshots.list(namespace, query, sandboxId);
  }

  /** A new TTL, counted (like the first one) from when the snapshot was created, or last used with ttl_from last_use. */
  async setTtl(namespace: string, id: string, ttlSecs: number): Promise<Snapshot> {
    const { clock } = this.deps;
    const { snapshots } = this.deps.db.stores;
    const row = await this.row(this.deps.db.stores, namespace, id);
    this.assertNotGone(row);
    if (row.status === 'failed') throw new CryoError('CONFLICT', `snapshot ${id} failed; its TTL cannot be changed`);
    this.checkTtl(ttlSecs);
    const now = clock.now();
    const base = ttlBase(row);
    const expiresAt = expiresAtFor(base, ttlSecs);
    if (expiresAt !== null && expiresAt <= now) {
      const ageSecs = Math.floor((now - base) / 1000);
      const since = base === row.created_at ? 'it was created' : 'it was last used';
      throw new CryoError(
        'UNPROCESSABLE',
        `ttl_secs ${ttlSecs} would make snapshot ${id} expire at ${toIso(expiresAt)}, which is already past ` +
          `(${since} at ${toIso(base)}, ${ageSecs}s ago); use a ttl_secs above ${ageSecs}, or 0 for never`,
        { created_at: toIso(row.created_at), last_used_at: row.last_used_at === null ? null : toIso(row.last_used_at), expires_at: toIso(expiresAt) },
      );
    }
    await snapshots.setTtl(id, ttlSecs, expiresAt, now);
    this.deps.logger.info({ snapshot_id: id, ttl_secs: ttlSecs }, 'snapshot TTL changed');
    return this.get(namespace, id);
  }

  /**
   * Starts deleting a snapshot: 202 now, `deleted` once the registry manifest and local copies
   * are gone. A snapshot still being created is deleted once its push ends (or at once if the
   * executor has not started it). Deleting again changes nothing.
   */
  async delete(namespace: string, id: string): Promise<Snapshot> {
    const { db, clock } = this.deps;
    return db.transaction(async (tx) => {
      const { snapshots, sandboxes, operations } = tx;
      const row = await this.row(tx, namespace, id);
      const now = clock.now();
      if (await snapshots.requestDelete(id, 'user', now)) {
        for (const op of await operations.openForSnapshot(id, 'snapshot')) {
          if (op.state !== 'queued') continue;
          if (await operations.finish(op.id, { state: 'cancelled', message: 'snapshot deleted before it started' }, now)) {
            tx.afterCommit(() => this.deps.metrics.operationEnded(op.kind, 'cancelled', (now - op.created_at) / 1000));
            await sandboxes.setStatus(row.sandbox_id, 'snapshotting', 'running', now);
          }
        }
        this.deps.logger.info({ snapshot_id: id, was: row.status }, 'snapshot deletion requested');
        if (row.status === 'creating') await this.deps.followUps.deleted(tx, id);
      }
      await this.deps.onDeleteRequested(tx);
      return toSnapshotView(await this.row(tx, namespace, id));
    });
  }

  /** `resources` come from `POST /sandboxes {snapshot_id, resources}`; a restore request has none. */
  async restore(namespace: string, id: string, body: RestoreBody, resources: LaunchSpec['resources'] = {}): Promise<Restored> {
    const plan = await this.plan(namespace, id, {
      mode: body.mode ?? 'eager',
      onExpired: body.on_expired ?? 'fail',
      command: body.command,
      env: body.env,
      labels: body.labels,
      timeoutSecs: body.timeout_secs,
      executorId: body.executor_id,
      resources,
    });
    const sandbox = await this.deps.sandboxService.launch(namespace, plan.spec, plan.beforeInsert);
    if (plan.fallback !== null) this.fellBack(id, [sandbox.id], plan.fallback);
    return { sandbox, fallback: plan.fallback };
  }

  /**
   * What starting from snapshot `id` takes (a restore, or the forks of one): the snapshot's image,
   * or when it is gone and `onExpired` is base_image, its base image with the request's command
   * (else the command its sandbox ran) and the request's env. 410 when gone otherwise; 409/422
   * when it cannot be restored (snapshot-source.ts).
   */
  async plan(namespace: string, id: string, request: {
    mode: RestoreMode;
    onExpired: OnExpired;
    command: string[] | undefined;
    env: Record<string, string> | undefined;
    labels: Record<string, string> | undefined;
    timeoutSecs: number | undefined;
    executorId: string | undefined;
    resources: LaunchSpec['resources'];
  }): Promise<LaunchPlan> {
    const { db, clock } = this.deps;
    const row = await this.row(db.stores, namespace, id);
    const common = {
      env: request.env ?? {},
      labels: request.labels ?? {},
      resources: request.resources,
      timeoutSecs: request.timeoutSecs,
      executorId: request.executorId,
    };
    const gone = goneError(row, clock.now());
    if (gone !== null) {
      if (request.onExpired !== 'base_image') throw gone;
      const source = await db.stores.sandboxes.get(row.sandbox_id);
      const command = request.command ??
        (source === undefined ? null : decodeJsonOrNull(StringListSchema, source.command, 'sandboxes.command'));
      return {
        spec: { ...common, image: row.base_image, baseImage: row.base_image, command, restore: null },
        fallback: { reason: `${gone.message}; started from its base image ${row.base_image} instead (on_expired: base_image)` },
        beforeInsert: async () => undefined,
      };
    }
    const restore = restoreSource(row, request.mode);
    return {
      spec: { ...common, image: restore.imageRef, baseImage: row.base_image, command: request.command ?? null, restore },
      fallback: null,
      beforeInsert: async (tx) => {
        if (!(await tx.snapshots.touch(row.id, clock.now()))) throw goneMeanwhile(row.id);
      },
    };
  }

  /** A fallback is never silent: the answer carries it, and so do the log and a counter. */
  fellBack(snapshotId: string, sandboxIds: string[], fallback: Fallback): void {
    this.deps.metrics.inc('cryo_restore_fallbacks_total', sandboxIds.length);
    this.deps.logger.warn({ snapshot_id: snapshotId, sandbox_ids: sandboxIds, reason: fallback.reason }, 'snapshot gone: started from its base image');
  }

  private async row(stores: Stores, namespace: string, id: string): Promise<SnapshotRow> {
    const row = await stores.snapshots.getInNamespace(namespace, id);
    if (row === undefined) throw notFound('snapshot', id);
    return row;
  }

  /** 410 for a snapshot that is gone or going, saying when it expired or was deleted. */
  private assertNotGone(row: SnapshotRow): void {
    const gone = goneError(row, this.deps.clock.now());
    if (gone !== null) throw gone;
  }

  private checkSnapshottable(sandbox: SandboxRow): string {
    if (sandbox.status === 'snapshotting') {
      throw new CryoError('CONFLICT', `sandbox ${sandbox.id} is already snapshotting; wait for that snapshot to finish`, {
        status: sandbox.status,
      });
    }
    if (sandbox.status !== 'running' || sandbox.executor_id === null) {
      throw new CryoError('CONFLICT', `sandbox ${sandbox.id} is ${sandbox.status}; only a running sandbox can be snapshotted`, {
        status: sandbox.status,
      });
    }
    return sandbox.executor_id;
  }

  private checkTtl(ttlSecs: number): number {
    return assertWithinLimit(ttlSecs, {
      field: 'ttl_secs',
      limit: 'snapshots.max_ttl_secs',
      max: this.deps.config.snapshots.max_ttl_secs,
      zeroMeans: 'never expire',
    });
  }
}
