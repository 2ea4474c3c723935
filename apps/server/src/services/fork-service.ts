/**
 * Fork (issue 12): `count` sandboxes from one snapshot in one call, spread over executors (those
 * holding the image first), each running or failing on its own; or, from a running sandbox,
 * a snapshot and its forks in one call, the forks starting once the snapshot is pushed.
 */
import type { Logger } from 'pino';
import { CryoError, isLocalSnapshotRef, type ForkResponse, type ForkSandboxBody, type ForkSnapshotBody } from '@cryo/snapshot';
import type { Database } from '../db/database';
import type { SandboxRow } from '../store/sandboxes';
import type { SandboxService } from './sandbox-service';
import type { SnapshotService } from './snapshot-service';

export interface ForkServiceDeps {
  db: Database;
  sandboxService: SandboxService;
  snapshotService: SnapshotService;
  logger: Logger;
}

export class ForkService {
  constructor(private readonly deps: ForkServiceDeps) {}

  /** POST /snapshots/{id}/fork. */
  async forkSnapshot(namespace: string, snapshotId: string, body: ForkSnapshotBody): Promise<ForkResponse> {
    const { db, sandboxService, snapshotService } = this.deps;
    const plan = await snapshotService.plan(namespace, snapshotId, {
      mode: body.mode ?? 'eager',
      onExpired: body.on_expired ?? 'fail',
      command: body.command,
      env: body.env,
      labels: body.labels,
      timeoutSecs: body.timeout_secs,
      executorId: undefined,
      resources: {},
    });
    const rows = await db.transaction(async (tx) => {
      await plan.beforeInsert(tx);
      return sandboxService.launchManyIn(tx, namespace, plan.spec, body.count, { among: body.executor_ids });
    });
    if (plan.fallback !== null) snapshotService.fellBack(snapshotId, rows.map((r) => r.id), plan.fallback);
    this.logForks(snapshotId, rows);
    return {
      snapshot_id: snapshotId,
      restored_from_snapshot: plan.fallback === null ? snapshotId : null,
      ...(plan.fallback === null ? {} : { fallback: plan.fallback }),
      sandboxes: rows.map(forkView),
    };
  }

  /**
   * POST /sandboxes/{id}/fork: snapshots the sandbox (the server's default TTL) and places the
   * forks in the same transaction; each fork's create_sandbox is queued once the snapshot is
   * active (a lazy fork's once its clip index is there), and a fork ends with the reason when the
   * snapshot fails.
   */
  async forkSandbox(namespace: string, sandboxId: string, body: ForkSandboxBody): Promise<ForkResponse> {
    const { db, sandboxService, snapshotService } = this.deps;
    const mode = body.mode ?? 'eager';
    const { snapshot, rows } = await db.transaction(async (tx) => {
      const created = await snapshotService.createIn(tx, namespace, sandboxId, {});
      const executorId = created.executor_id;
      if (executorId === null) throw new Error(`snapshot ${created.id} was made without an executor`);
      const local = isLocalSnapshotRef(created.planned_ref);
      if (local && mode === 'lazy') {
        throw new CryoError(
          'UNPROCESSABLE',
          `sandbox ${sandboxId} runs on executor ${executorId}, which keeps snapshots local (no snapshot_registry): ` +
            'a lazy fork reads from a registry; fork with mode "eager"',
        );
      }
      const placed = await sandboxService.launchManyIn(tx, namespace, {
        image: created.planned_ref,
        baseImage: created.base_image,
        command: body.command ?? null,
        env: body.env ?? {},
        labels: body.labels ?? {},
        resources: {},
        timeoutSecs: body.timeout_secs,
        executorId: undefined,
        restore: {
          snapshotId: created.id, imageRef: created.planned_ref, digest: null, clipIndexRef: null, mode,
          onlyOn: local ? executorId : null,
        },
      }, body.count, { among: body.executor_ids, heldBy: [executorId], deferred: true });
      return { snapshot: created, rows: placed };
    });
    this.deps.logger.info({ snapshot_id: snapshot.id, sandbox_id: sandboxId, forks: rows.length }, 'sandbox snapshotted for a fork');
    this.logForks(snapshot.id, rows);
    return { snapshot_id: snapshot.id, restored_from_snapshot: snapshot.id, sandboxes: rows.map(forkView) };
  }

  private logForks(snapshotId: string, rows: SandboxRow[]): void {
    const byExecutor: Record<string, number> = {};
    for (const row of rows) byExecutor[row.executor_id ?? 'unplaced'] = (byExecutor[row.executor_id ?? 'unplaced'] ?? 0) + 1;
    this.deps.logger.info({ snapshot_id: snapshotId, count: rows.length, executors: byExecutor }, 'forks placed');
  }
}

function forkView(row: SandboxRow): ForkResponse['sandboxes'][number] {
  return { sandbox_id: row.id, status: row.status, executor_id: row.executor_id };
}
