/**
 * Heartbeats: each one carries an executor's full observed state. The server records it,
 * reconciles its own view against it (a sandbox whose container is gone has ended; a local image
 * of a snapshot that no longer exists should go) and answers with the sandboxes it wants kept.
 */
import type { Logger } from 'pino';
import type { ExecutorView, HeartbeatBody, HeartbeatResponse, ObservedSandbox, ReportedRegistry } from '@cryo/snapshot';
import type { Clock } from '../clock';
import type { ServerConfig } from '../config';
import type { Database } from '../db/database';
import { toExecutorView } from '../store/executors';
import type { SandboxRow } from '../store/sandboxes';
import type { Stores } from '../store/stores';
import type { OperationQueue } from './operation-queue';

/** After a failed removal, the same image is not asked for again before this long. */
const IMAGE_REMOVAL_RETRY_MS = 10 * 60 * 1000;

export interface ExecutorServiceDeps {
  db: Database;
  queue: OperationQueue;
  clock: Clock;
  config: ServerConfig;
  logger: Logger;
}

export class ExecutorService {
  /** The registry warning last logged per executor: logged when it appears or changes, not every beat. */
  private readonly registryWarned = new Map<string, string | null>();

  constructor(private readonly deps: ExecutorServiceDeps) {}

  async heartbeat(id: string, body: HeartbeatBody): Promise<HeartbeatResponse> {
    const { db, clock, config } = this.deps;
    const desired = await db.transaction(async (tx) => {
      const now = clock.now();
      const before = await tx.executors.recordHeartbeat(id, body, now);
      if (before === undefined) this.deps.logger.info({ executor_id: id, host: body.host }, 'executor registered');
      if (before === 'lost') this.deps.logger.info({ executor_id: id }, 'executor is back after being declared lost');
      await this.reconcileSandboxes(tx, id, body.sandboxes, now);
      await this.reconcileImages(tx, id, body.images, now);
      return (await tx.sandboxes.liveOnExecutor(id)).map((s) => s.id);
    });
    this.logRegistryWarning(id, body.registry);
    return {
      executor_id: id,
      heartbeat_interval_ms: Math.round(config.executors.heartbeat_interval_secs * 1000),
      desired_sandboxes: desired,
    };
  }

  async list(): Promise<ExecutorView[]> {
    const { executors, sandboxes } = this.deps.db.stores;
    const reserved = await sandboxes.reservationsByExecutor();
    return (await executors.list()).map((e) => {
      const warning = registryWarning(e.id, e.registry, this.deps.config.snapshot_registry);
      return toExecutorView(e, reserved.get(e.id)?.sandboxes ?? 0, warning === null ? [] : [warning]);
    });
  }

  private logRegistryWarning(id: string, reported: ReportedRegistry | null): void {
    const warning = registryWarning(id, reported, this.deps.config.snapshot_registry);
    if (this.registryWarned.has(id) && this.registryWarned.get(id) === warning) return;
    const hadWarning = (this.registryWarned.get(id) ?? null) !== null;
    this.registryWarned.set(id, warning);
    if (warning !== null) this.deps.logger.warn({ executor_id: id, registry: reported, snapshot_registry: this.serverRegistry() }, warning);
    else if (hadWarning) this.deps.logger.info({ executor_id: id }, "executor now pushes to the server's snapshot_registry");
  }

  private serverRegistry(): ReportedRegistry | null {
    const own = this.deps.config.snapshot_registry;
    return own === undefined ? null : { url: own.url, repository: own.repository };
  }

  /** Running sandboxes whose container the executor no longer has (or that exited) have ended. */
  private async reconcileSandboxes(tx: Stores, executorId: string, observed: ObservedSandbox[], now: number): Promise<void> {
    const byId = new Map(observed.map((o) => [o.sandbox_id, o]));
    const graceMs = this.deps.config.executors.reconcile_grace_secs * 1000;
    for (const sandbox of await tx.sandboxes.liveOnExecutor(executorId)) {
      if (sandbox.status === 'pending' || sandbox.status === 'restoring') continue; // its create or rollback result will tell
      const seen = byId.get(sandbox.id);
      if (seen !== undefined && seen.state !== 'missing' && seen.state !== 'exited') continue;
      // A heartbeat composed just before the container started (or a rollback's replaced it) may not show it yet.
      const startedAt = Math.max(sandbox.started_at ?? 0, sandbox.restored_at ?? 0);
      if (startedAt > 0 && now - startedAt < graceMs) continue;
      const reason = endedReason(sandbox, executorId, seen);
      if (await tx.sandboxes.terminate(sandbox.id, { kind: 'failed', reason }, now)) {
        this.deps.logger.warn({ sandbox_id: sandbox.id, executor_id: executorId, reason }, 'sandbox ended on its executor');
      }
    }
  }

  /** Local copies of snapshots that failed, expired or were deleted are asked to go. */
  private async reconcileImages(tx: Stores, executorId: string, images: HeartbeatBody['images'], now: number): Promise<void> {
    const { snapshots, operations } = tx;
    const { queue } = this.deps;
    const refsBySnapshot = new Map<string, string[]>();
    for (const image of images) {
      if (image.snapshot_id === null) continue;
      refsBySnapshot.set(image.snapshot_id, [...(refsBySnapshot.get(image.snapshot_id) ?? []), image.ref]);
    }
    for (const [snapshotId, refs] of refsBySnapshot) {
      const snapshot = await snapshots.get(snapshotId);
      if (snapshot === undefined) continue; // not ours, or pruned long ago: leave it alone
      const dead = snapshot.status === 'failed' || snapshot.status === 'expired' || snapshot.status === 'deleted' ||
        (snapshot.status === 'deleting' && snapshot.local_cleanup_at !== null);
      if (!dead) continue;
      const last = await operations.lastForSnapshotOnExecutor(snapshotId, 'delete_image', executorId);
      if (last !== undefined && (last.open || now - last.updatedAt < IMAGE_REMOVAL_RETRY_MS)) continue;
      await queue.enqueue(tx, 'delete_image', executorId, { snapshot_id: snapshotId, image_refs: refs }, { snapshotId });
      this.deps.logger.info({ snapshot_id: snapshotId, executor_id: executorId, refs }, 'asking executor to remove a stale snapshot image');
    }
  }
}

/**
 * An executor that pushes snapshots somewhere else than the server's `snapshot_registry` leaves
 * the reaper without the registry settings it needs to delete them (it deletes with the server's
 * own settings). Null when they agree, or when the executor keeps snapshots local.
 */
export function registryWarning(
  executorId: string,
  reported: ReportedRegistry | null,
  own: { url: string; repository: string } | undefined,
): string | null {
  if (reported === null) return null;
  const theirs = `${reported.url}/${reported.repository}`;
  if (own === undefined) {
    return `executor ${executorId} pushes snapshots to ${theirs}, but the server has no snapshot_registry: ` +
      'expired and deleted snapshots cannot be removed from that registry; give the server the same snapshot_registry block';
  }
  if (own.url === reported.url && own.repository === reported.repository) return null;
  return `executor ${executorId} pushes snapshots to ${theirs}, not to the server's snapshot_registry ${own.url}/${own.repository}: ` +
    "the reaper deletes snapshots with the server's registry settings and may fail on this executor's; configure the same snapshot_registry on both";
}

function endedReason(sandbox: SandboxRow, executorId: string, seen: ObservedSandbox | undefined): string {
  if (seen === undefined || seen.state === 'missing') {
    return `container of sandbox ${sandbox.id} is missing on executor ${executorId}`;
  }
  return `container exited${seen.exit_code === null ? '' : ` with code ${seen.exit_code}`}`;
}
