import { z } from 'zod';
import {
  CachedImageSchema,
  HeartbeatBodySchema,
  ObservedSandboxSchema,
  ReportedRegistrySchema,
  type ExecutorView,
  type HeartbeatBody,
} from '@cryo/snapshot';
import { toIso } from '../clock';
import type { ExecutorState, ExecutorTable } from '../db/schema';
import { lit } from './sql-dialect';
import { changedRows, type SqlContext } from './sql';
import { decodeJson, decodeJsonOrNull, StringMapSchema } from './columns';

export type { ExecutorState } from '../db/schema';

type ExecutorRow = ExecutorTable;

/** An executor as the server last observed it, JSON columns decoded. */
export interface Executor {
  id: string;
  host: string;
  version: string;
  labels: Record<string, string>;
  capacity: HeartbeatBody['capacity'];
  capabilities: HeartbeatBody['capabilities'];
  registry: HeartbeatBody['registry'];
  state: ExecutorState;
  sandboxes: HeartbeatBody['sandboxes'];
  images: HeartbeatBody['images'];
  lastHeartbeatAt: number;
  lostAt: number | null;
}

const CapacitySchema = HeartbeatBodySchema.shape.capacity;
const CapabilitiesSchema = HeartbeatBodySchema.shape.capabilities;

function decode(row: ExecutorRow): Executor {
  return {
    id: row.id,
    host: row.host,
    version: row.version,
    labels: decodeJson(StringMapSchema, row.labels, 'executors.labels'),
    capacity: decodeJson(CapacitySchema, row.capacity, 'executors.capacity'),
    capabilities: decodeJson(CapabilitiesSchema, row.capabilities, 'executors.capabilities'),
    registry: decodeJsonOrNull(ReportedRegistrySchema, row.registry, 'executors.registry'),
    state: row.state,
    sandboxes: decodeJson(z.array(ObservedSandboxSchema), row.observed_sandboxes, 'executors.observed_sandboxes'),
    images: decodeJson(z.array(CachedImageSchema), row.images, 'executors.images'),
    lastHeartbeatAt: row.last_heartbeat_at,
    lostAt: row.lost_at,
  };
}

export function toExecutorView(executor: Executor, liveSandboxes: number, warnings: string[] = []): ExecutorView {
  return {
    executor_id: executor.id,
    host: executor.host,
    labels: executor.labels,
    state: executor.state,
    last_heartbeat_at: toIso(executor.lastHeartbeatAt),
    version: executor.version,
    capacity: executor.capacity,
    capabilities: executor.capabilities,
    sandboxes: liveSandboxes,
    cached_snapshot_images: executor.images.filter((i) => i.snapshot_id !== null).map((i) => i.ref),
    warnings,
  };
}

/** Does this executor hold a local copy of the snapshot (by id label or by ref)? */
export function holdsSnapshotImage(executor: Executor, snapshotId: string, imageRef: string | null): boolean {
  return executor.images.some((i) => i.snapshot_id === snapshotId || (imageRef !== null && i.ref === imageRef));
}

export class ExecutorStore {
  constructor(private readonly ctx: SqlContext) {}

  /** Records a heartbeat; returns the state the executor was in before (undefined if new). */
  async recordHeartbeat(id: string, body: HeartbeatBody, now: number): Promise<ExecutorState | undefined> {
    const { db } = this.ctx;
    const before = await db.selectFrom('executors').select('state').where('id', '=', id).executeTakeFirst();
    const fields = {
      host: body.host,
      version: body.version,
      labels: JSON.stringify(body.labels),
      capacity: JSON.stringify(body.capacity),
      capabilities: JSON.stringify(body.capabilities),
      registry: body.registry === null ? null : JSON.stringify(body.registry),
      state: 'ready' as const,
      observed_sandboxes: JSON.stringify(body.sandboxes),
      images: JSON.stringify(body.images),
      last_heartbeat_at: now,
      lost_at: null,
    };
    await db.insertInto('executors')
      .values({ id, ...fields, registered_at: now })
      .onConflict((oc) => oc.column('id').doUpdateSet(fields))
      .execute();
    return before?.state;
  }

  async get(id: string): Promise<Executor | undefined> {
    const row = await this.ctx.db.selectFrom('executors').selectAll().where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : decode(row);
  }

  async list(): Promise<Executor[]> {
    return (await this.ctx.db.selectFrom('executors').selectAll().orderBy('id').execute()).map(decode);
  }

  async ready(): Promise<Executor[]> {
    return (await this.ctx.db.selectFrom('executors').selectAll().where('state', '=', lit('ready')).orderBy('id').execute()).map(decode);
  }

  /** Ready executors whose last heartbeat is older than `before`. */
  async silentSince(before: number): Promise<Executor[]> {
    return (
      await this.ctx.db.selectFrom('executors').selectAll()
        .where('state', '=', lit('ready')).where('last_heartbeat_at', '<', before).execute()
    ).map(decode);
  }

  /** Compare-and-set: true only for the one call that moved the executor from ready to lost. */
  async markLost(id: string, now: number): Promise<boolean> {
    const result = await this.ctx.db.updateTable('executors').set({ state: 'lost', lost_at: now })
      .where('id', '=', id).where('state', '=', lit('ready')).executeTakeFirst();
    return changedRows(result) === 1;
  }

  countByState(): Promise<Array<{ state: string; count: number }>> {
    return this.ctx.db.selectFrom('executors')
      .select((eb) => ['state', eb.fn.countAll<number>().as('count')])
      .groupBy('state')
      .execute();
  }
}
