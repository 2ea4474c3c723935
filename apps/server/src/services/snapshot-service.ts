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
import type { ExecutorStore } from '../store/executors';
import type { NamespaceStore } from '../store/namespaces';
import type { OperationStore } from '../store/operations';
import type { Page } from '../store/pagination';
import type { SandboxRow, SandboxStore } from '../store/sandboxes';
import { expiresAtFor, toSnapshotView, type SnapshotRow, type SnapshotStore } from '../store/snapshots';
import { assertWithinLimit } from './duration-limits';
import type { Metrics } from './metrics';
import type { OperationQueue } from './operation-queue';
import type { LaunchSpec, SandboxService } from './sandbox-service';

export interface SnapshotServiceDeps {
  db: Database;
  namespaces: NamespaceStore;
  sandboxes: SandboxStore;
  snapshots: SnapshotStore;
  executors: ExecutorStore;
  operations: OperationStore;
  queue: OperationQueue;
  sandboxService: SandboxService;
  metrics: Metrics;
  clock: Clock;
  config: ServerConfig;
  logger: Logger;
  /** Asks the reaper to look at deletions now rather than at its next interval. */
  onDeleteRequested: () => void;
}

export class SnapshotService {
  constructor(private readonly deps: SnapshotServiceDeps) {}

  create(namespace: string, sandboxId: string, body: CreateSnapshotBody): SnapshotRow {
    const { db, namespaces, sandboxes, snapshots, executors, queue, clock, config } = this.deps;
    const ttlSecs = this.checkTtl(body.ttl_secs ?? config.snapshots.default_ttl_secs);
    const id = newSnapshotId();
    const row = db.transaction(() => {
      const sandbox = sandboxes.getInNamespace(namespace, sandboxId);
      if (sandbox === undefined) throw notFound('sandbox', sandboxId);
      const executorId = this.checkSnapshottable(sandbox);
      const max = config.snapshots.max_per_namespace;
      if (max > 0) {
        const live = snapshots.countLive(namespace);
        if (live >= max) {
          throw new CryoError(
            'LIMIT_EXCEEDED',
            `namespace ${namespace} already has ${live} snapshots; the limit snapshots.max_per_namespace is ${max} ` +
              '(delete snapshots or wait for them to expire)',
            { limit: 'snapshots.max_per_namespace', value: max },
          );
        }
      }
      const tag = body.tag ?? snapshotTag(sandbox.id, id);
      const holder = snapshots.tagHolder(tag);
      if (holder !== undefined) {
        throw new CryoError('CONFLICT', `tag ${tag} is already used by snapshot ${holder.id} (${holder.status})`);
      }
      const registry = executors.get(executorId)?.registry ?? null;
      const now = clock.now();
      namespaces.ensure(namespace, now);
      snapshots.insert({
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
      sandboxes.setStatus(sandbox.id, 'running', 'snapshotting', now);
      queue.enqueue(
        'snapshot',
        executorId,
        { sandbox_id: sandbox.id, snapshot_id: id, namespace, tag, base_image: sandbox.base_image },
        { sandboxId: sandbox.id, snapshotId: id },
      );
      return snapshots.get(id);
    })();
    if (row === undefined) throw new Error(`snapshot ${id} vanished right after it was created`);
    this.deps.logger.info({ snapshot_id: id, sandbox_id: sandboxId, ttl_secs: ttlSecs }, 'snapshot requested');
    return row;
  }

  get(namespace: string, id: string): Snapshot {
    return toSnapshotView(this.row(namespace, id));
  }

  list(namespace: string, query: ListQuery, sandboxId?: string): Page<Snapshot> {
    if (sandboxId !== undefined && this.deps.sandboxes.getInNamespace(namespace, sandboxId) === undefined) {
      throw notFound('sandbox', sandboxId);
    }
    return this.deps.snapshots.list(namespace, query, sandboxId);
  }

  /** A new TTL, counted (like the first one) from when the snapshot was created. */
  setTtl(namespace: string, id: string, ttlSecs: number): Snapshot {
    const { snapshots, clock } = this.deps;
    const row = this.row(namespace, id);
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
    snapshots.setTtl(id, ttlSecs, expiresAt, now);
    this.deps.logger.info({ snapshot_id: id, ttl_secs: ttlSecs }, 'snapshot TTL changed');
    return this.get(namespace, id);
  }

  /**
   * Starts deleting a snapshot: 202 now, `deleted` once the registry manifest and local copies
   * are gone. A snapshot still being created is deleted once its push ends (or at once if the
   * executor has not started it). Deleting again changes nothing.
   */
  delete(namespace: string, id: string): Snapshot {
    const { db, snapshots, sandboxes, operations, clock } = this.deps;
    const view = db.transaction(() => {
      const row = this.row(namespace, id);
      const now = clock.now();
      if (snapshots.requestDelete(id, 'deleted', now)) {
        for (const op of operations.openForSnapshot(id, 'snapshot')) {
          if (op.state !== 'queued') continue;
          if (operations.finish(op.id, { state: 'cancelled', message: 'snapshot deleted before it started' }, now)) {
            this.deps.metrics.operationEnded(op.kind, 'cancelled', (now - op.created_at) / 1000);
          }
          sandboxes.setStatus(row.sandbox_id, 'snapshotting', 'running', now);
        }
        this.deps.logger.info({ snapshot_id: id, was: row.status }, 'snapshot deletion requested');
      }
      return this.get(namespace, id);
    })();
    this.deps.onDeleteRequested();
    return view;
  }

  /** `resources` come from `POST /sandboxes {snapshot_id, resources}`; a restore request has none. */
  restore(namespace: string, id: string, body: RestoreBody, resources: LaunchSpec['resources'] = {}): SandboxRow {
    const row = this.row(namespace, id);
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

  private row(namespace: string, id: string): SnapshotRow {
    const row = this.deps.snapshots.getInNamespace(namespace, id);
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
