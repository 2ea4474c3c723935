/** Snapshots: create (a snapshot operation on the sandbox's executor), TTL changes, delete, restore. */
import type { Logger } from 'pino';
import {
  CryoError,
  isLocalSnapshotRef,
  localSnapshotRef,
  newSnapshotId,
  notFound,
  registrySnapshotRef,
  snapshotTag,
  type CreateSnapshotBody,
  type ListQuery,
  type RestoreBody,
  type Snapshot,
} from '@cryo/snapshot';
import { toIso, type Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import type { Page } from '../store/pagination';
import type { SandboxRow } from '../store/sandboxes';
import { expiresAtFor, toSnapshotView, type SnapshotRow } from '../store/snapshots';
import type { Stores } from '../store/stores';
import { assertWithinLimit } from './duration-limits';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';
import type { LaunchSpec, SandboxService } from './sandbox-service';

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
}

export class SnapshotService {
  constructor(private readonly deps: SnapshotServiceDeps) {}

  async create(namespace: string, sandboxId: string, body: CreateSnapshotBody): Promise<SnapshotRow> {
    const { db, queue, clock, config } = this.deps;
    const ttlSecs = this.checkTtl(body.ttl_secs ?? config.snapshots.default_ttl_secs);
    const id = newSnapshotId();
    const row = await db.transaction(async (tx) => {
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
      // A generated tag holds the new snapshot id: only a user's tag can be taken already.
      const tag = body.tag ?? snapshotTag(sandbox.id, id);
      if (body.tag !== undefined) {
        await tx.lock(`cryo.tag.${tag}`); // two replicas checking the same tag at once: one after the other
        const holder = await snapshots.tagHolder(tag);
        if (holder !== undefined) {
          throw new CryoError('CONFLICT', `tag ${tag} is already used by snapshot ${holder.id} (${holder.status})`);
        }
      }
      const registry = (await executors.get(executorId))?.registry ?? null;
      // The namespace exists: the sandbox is in it.
      const inserted = await snapshots.insert({
        id,
        namespace,
        sandboxId: sandbox.id,
        executorId,
        tag,
        userTag: body.tag !== undefined,
        labels: body.labels ?? {},
        plannedRef: registry === null ? localSnapshotRef(tag) : registrySnapshotRef(registry, tag),
        baseImage: sandbox.base_image,
        ttlSecs,
        now,
      });
      await queue.enqueue(
        tx,
        'snapshot',
        executorId,
        { sandbox_id: sandbox.id, snapshot_id: id, namespace, tag, base_image: sandbox.base_image },
        { sandboxId: sandbox.id, snapshotId: id },
      );
      return inserted;
    });
    this.deps.logger.info({ snapshot_id: id, sandbox_id: sandboxId, ttl_secs: ttlSecs }, 'snapshot requested');
    return row;
  }

  async get(namespace: string, id: string): Promise<Snapshot> {
    return toSnapshotView(await this.row(this.deps.db.stores, namespace, id));
  }

  async list(namespace: string, query: ListQuery, sandboxId?: string): Promise<Page<Snapshot>> {
    const { sandboxes, snapshots } = this.deps.db.stores;
    if (sandboxId !== undefined && (await sandboxes.getInNamespace(namespace, sandboxId)) === undefined) {
      throw notFound('sandbox', sandboxId);
    }
    return snapshots.list(namespace, query, sandboxId);
  }

  /** A new TTL, counted (like the first one) from when the snapshot was created. */
  async setTtl(namespace: string, id: string, ttlSecs: number): Promise<Snapshot> {
    const { clock } = this.deps;
    const { snapshots } = this.deps.db.stores;
    const row = await this.row(this.deps.db.stores, namespace, id);
    this.assertNotGone(row);
    if (row.status === 'failed') throw new CryoError('CONFLICT', `snapshot ${id} failed; its TTL cannot be changed`);
    this.checkTtl(ttlSecs);
    const now = clock.now();
    const expiresAt = expiresAtFor(row.created_at, ttlSecs);
    if (expiresAt !== null && expiresAt <= now) {
      const ageSecs = Math.floor((now - row.created_at) / 1000);
      throw new CryoError(
        'UNPROCESSABLE',
        `ttl_secs ${ttlSecs} would make snapshot ${id} expire at ${toIso(expiresAt)}, which is already past ` +
          `(it was created at ${toIso(row.created_at)}, ${ageSecs}s ago); use a ttl_secs above ${ageSecs}, or 0 for never`,
        { created_at: toIso(row.created_at), expires_at: toIso(expiresAt) },
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
      if (await snapshots.requestDelete(id, 'deleted', now)) {
        for (const op of await operations.openForSnapshot(id, 'snapshot')) {
          if (op.state !== 'queued') continue;
          if (await operations.finish(op.id, { state: 'cancelled', message: 'snapshot deleted before it started' }, now)) {
            tx.afterCommit(() => this.deps.metrics.operationEnded(op.kind, 'cancelled', (now - op.created_at) / 1000));
            await sandboxes.setStatus(row.sandbox_id, 'snapshotting', 'running', now);
          }
        }
        this.deps.logger.info({ snapshot_id: id, was: row.status }, 'snapshot deletion requested');
      }
      await this.deps.onDeleteRequested(tx);
      return toSnapshotView(await this.row(tx, namespace, id));
    });
  }

  /** `resources` come from `POST /sandboxes {snapshot_id, resources}`; a restore request has none. */
  async restore(namespace: string, id: string, body: RestoreBody, resources: LaunchSpec['resources'] = {}): Promise<SandboxRow> {
    const row = await this.row(this.deps.db.stores, namespace, id);
    this.assertNotGone(row);
    if (row.status === 'creating') {
      throw new CryoError('CONFLICT', `snapshot ${id} is still creating; restore it once it is active`, {
        status: row.status,
      });
    }
    if (row.status === 'failed') {
      throw new CryoError('CONFLICT', `snapshot ${id} failed and cannot be restored: ${row.error ?? 'no error recorded'}`, {
        status: row.status,
      });
    }
    if (row.image_ref === null) throw new CryoError('CONFLICT', `snapshot ${id} has no image to restore`);
    const mode = body.mode ?? 'eager';
    if (mode === 'lazy' && row.clip_index_ref === null) {
      throw new CryoError(
        'UNPROCESSABLE',
        `snapshot ${id} has no clip index, so it cannot be restored lazily` +
          `${row.clip_error === null ? '' : ` (indexing failed: ${row.clip_error})`}; restore it with mode "eager"`,
      );
    }
    return this.deps.sandboxService.launch(namespace, {
      image: row.image_ref,
      baseImage: row.base_image,
      command: body.command ?? null,
      env: body.env ?? {},
      labels: body.labels ?? {},
      resources,
      timeoutSecs: body.timeout_secs,
      executorId: body.executor_id,
      restore: {
        snapshotId: row.id,
        imageRef: row.image_ref,
        digest: row.digest,
        clipIndexRef: row.clip_index_ref,
        mode,
        onlyOn: isLocalSnapshotRef(row.image_ref) ? row.executor_id : null,
      },
    });
  }

  private async row(stores: Stores, namespace: string, id: string): Promise<SnapshotRow> {
    const row = await stores.snapshots.getInNamespace(namespace, id);
    if (row === undefined) throw notFound('snapshot', id);
    return row;
  }

  /** 410 for a snapshot that is gone or going, saying when it expired or was deleted. */
  private assertNotGone(row: SnapshotRow): void {
    const now = this.deps.clock.now();
    const expired = row.status === 'expired' || (row.status === 'deleting' && row.delete_reason === 'expired') ||
      (row.status === 'active' && row.expires_at !== null && row.expires_at <= now);
    if (expired) {
      const at = row.expires_at ?? row.expired_at ?? row.delete_requested_at ?? now;
      throw new CryoError(
        'GONE',
        `snapshot ${row.id} expired at ${toIso(at)} (ttl_secs ${row.ttl_secs}) and can no longer be restored or changed`,
        { expired_at: toIso(at), status: row.status },
      );
    }
    if (row.status === 'deleted' || row.status === 'deleting') {
      const at = row.deleted_at ?? row.delete_requested_at ?? now;
      const verb = row.status === 'deleted' ? 'was deleted' : 'is being deleted (requested';
      throw new CryoError(
        'GONE',
        `snapshot ${row.id} ${verb} at ${toIso(at)}${row.status === 'deleting' ? ')' : ''} and can no longer be restored or changed`,
        { deleted_at: toIso(at), status: row.status },
      );
    }
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
