/**
 * Where a sandbox runs. Among ready executors with room, the one with the most free capacity
 * wins (spreading load); a restore prefers executors that already hold the snapshot's image.
 * The forks of one call (`spread`) go first to the executor with the fewest of them, so N forks
 * spread evenly, holders of the image first. Every refusal says why, so a user can act on it.
 */
import { CryoError, type RestoreMode } from '@cryo/snapshot';
import { toIso } from '../clock';
import { holdsSnapshotImage, type Executor } from '../store/executors';
import type { Stores } from '../store/stores';

export interface PlacementRequest {
  /** executor_id given by the user: that one or an error. */
  pinned?: string | undefined;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  restore?: {
    snapshotId: string;
    imageRef: string;
    mode: RestoreMode;
    /** A snapshot kept only in its executor's local image store can only be restored there. */
    onlyOn: string | null;
    /** Executors known to hold the image that their heartbeats do not list yet (a snapshot still being pushed). */
    heldBy?: readonly string[];
  };
  /** Executors not to consider (re-placing away from a lost one). */
  exclude?: readonly string[];
  /** Only these executors (a fork's executor_ids). */
  among?: readonly string[];
  /** Sandboxes already placed per executor by the same call (forks): fewest first. */
  spread?: ReadonlyMap<string, number>;
}

interface Candidate {
  executor: Executor;
  freeShare: number;
  holdsImage: boolean;
}

export class Placement {
  /**
   * Chooses in `tx`. On PostgreSQL the choice is serialized among replicas (an advisory lock held
   * until `tx` ends), so two creates at once cannot both take an executor's last free place.
   */
  async choose(tx: Stores, request: PlacementRequest): Promise<Executor> {
    await tx.lock('cryo.placement');
    if (request.pinned !== undefined) return this.checkPinned(tx, request.pinned, request);
    const onlyOn = request.restore?.onlyOn ?? null;
    if (onlyOn !== null) return this.checkPinned(tx, onlyOn, request);

    const reasons = new Map<string, string>();
    let ready = (await tx.executors.ready()).filter((e) => !(request.exclude ?? []).includes(e.id));
    if (request.among !== undefined) {
      const among = request.among;
      for (const id of among) if (!ready.some((e) => e.id === id)) reasons.set(id, 'not a ready executor');
      ready = ready.filter((e) => among.includes(e.id));
    }
    if (ready.length === 0 && reasons.size === 0) {
      throw new CryoError('UNAVAILABLE', 'no executor is ready to run sandboxes; start cryo-executor on a host');
    }
    const candidates: Candidate[] = [];
    const reserved = await tx.sandboxes.reservationsByExecutor();
    for (const executor of ready) {
      const unfit = this.unfitReason(executor, request, reserved);
      if (unfit !== null) {
        reasons.set(executor.id, unfit);
        continue;
      }
      const used = reserved.get(executor.id)?.sandboxes ?? 0;
      candidates.push({
        executor,
        freeShare: (executor.capacity.max_sandboxes - used) / Math.max(1, executor.capacity.max_sandboxes),
        holdsImage:
          request.restore !== undefined &&
          (holdsSnapshotImage(executor, request.restore.snapshotId, request.restore.imageRef) ||
            (request.restore.heldBy ?? []).includes(executor.id)),
      });
    }
    const placed = (c: Candidate): number => request.spread?.get(c.executor.id) ?? 0;
    candidates.sort(
      (a, b) =>
        placed(a) - placed(b) ||
        Number(b.holdsImage) - Number(a.holdsImage) ||
        b.freeShare - a.freeShare ||
        a.executor.id.localeCompare(b.executor.id),
    );
    const best = candidates[0];
    if (best === undefined) {
      const why = [...reasons].map(([id, reason]) => `${id}: ${reason}`).join('; ');
      throw new CryoError('UNAVAILABLE', `no ready executor can take this sandbox (${why})`, {
        executors: Object.fromEntries(reasons),
      });
    }
    return best.executor;
  }

  private async checkPinned(tx: Stores, id: string, request: PlacementRequest): Promise<Executor> {
    const onlyOn = request.restore?.onlyOn ?? null;
    if (request.among !== undefined && !request.among.includes(id)) {
      throw new CryoError(
        'UNPROCESSABLE',
        `snapshot ${request.restore?.snapshotId ?? ''} is stored only on executor ${id}, which is not among executor_ids ` +
          `(${request.among.join(', ')})`,
      );
    }
    if (onlyOn !== null && onlyOn !== id && request.restore !== undefined) {
      throw new CryoError(
        'UNPROCESSABLE',
        `snapshot ${request.restore.snapshotId} is stored only on executor ${onlyOn} ` +
          `(image ${request.restore.imageRef}; no snapshot_registry was configured when it was taken), ` +
          `so it cannot be restored on executor ${id}`,
      );
    }
    const executor = await tx.executors.get(id);
    if (executor === undefined) {
      throw new CryoError('UNPROCESSABLE', `executor ${id} is not registered; GET /v1/executors lists the known ones`);
    }
    if (executor.state !== 'ready') {
      throw new CryoError(
        'UNAVAILABLE',
        `executor ${id} is ${executor.state} (last heartbeat ${toIso(executor.lastHeartbeatAt)})`,
      );
    }
    const unfit = this.unfitReason(executor, request, await tx.sandboxes.reservationsByExecutor());
    if (unfit !== null) {
      const lazy = request.restore?.mode === 'lazy' && !executor.capabilities.lazy;
      throw new CryoError(lazy ? 'UNPROCESSABLE' : 'UNAVAILABLE', `executor ${id} cannot take this sandbox: ${unfit}`);
    }
    return executor;
  }

  private unfitReason(
    executor: Executor,
    request: PlacementRequest,
    reserved: Map<string, { sandboxes: number; cpus: number; memoryMb: number }>,
  ): string | null {
    if (request.restore?.mode === 'lazy' && !executor.capabilities.lazy) {
      return `lazy restore is unavailable (${executor.capabilities.lazy_unavailable_reason ?? 'not supported'})`;
    }
    const used = reserved.get(executor.id) ?? { sandboxes: 0, cpus: 0, memoryMb: 0 };
    const { capacity } = executor;
    if (used.sandboxes >= capacity.max_sandboxes) {
      return `full (${used.sandboxes} of max_sandboxes ${capacity.max_sandboxes})`;
    }
    const cpus = request.resources.cpus ?? 0;
    if (cpus > 0 && capacity.cpus > 0 && used.cpus + cpus > capacity.cpus) {
      return `not enough CPUs (${capacity.cpus - used.cpus} free, ${cpus} requested)`;
    }
    const memory = request.resources.memory_mb ?? 0;
    if (memory > 0 && capacity.memory_mb > 0 && used.memoryMb + memory > capacity.memory_mb) {
      return `not enough memory (${capacity.memory_mb - used.memoryMb} MB free, ${memory} MB requested)`;
    }
    return null;
  }
}
