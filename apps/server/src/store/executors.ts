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
import type { Database } from '../db/database';
import { statement } from '../db/statements';
import { decodeJson, decodeJsonOrNull, StringMapSchema } from './columns';

export type ExecutorState = ExecutorView['state'];

interface ExecutorRow {
  id: string;
  host: string;
  version: string;
  labels: string;
  capacity: string;
  capabilities: string;
  registry: string | null;
  state: ExecutorState;
  observed_sandboxes: string;
  images: string;
  registered_at: number;
  last_heartbeat_at: number;
  lost_at: number | null;
}

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
  constructor(private readonly db: Database) {}

  /** Records a heartbeat; returns the state the executor was in before (undefined if new). */
  recordHeartbeat(id: string, body: HeartbeatBody, now: number): ExecutorState | undefined {
    const before = statement(this.db, 'SELECT state FROM executors WHERE id = ?').get(id) as
      | { state: ExecutorState }
      | undefined;
    statement(this.db, 
      `INSERT INTO executors (id, host, version, labels, capacity, capabilities, registry, state, observed_sandboxes,
         images, registered_at, last_heartbeat_at, lost_at)
       VALUES (@id, @host, @version, @labels, @capacity, @capabilities, @registry, 'ready', @sandboxes, @images,
         @now, @now, NULL)
       ON CONFLICT (id) DO UPDATE SET host = @host, version = @version, labels = @labels, capacity = @capacity,
         capabilities = @capabilities, registry = @registry, state = 'ready', observed_sandboxes = @sandboxes,
         images = @images, last_heartbeat_at = @now, lost_at = NULL`,
    ).run({
      id,
      host: body.host,
      version: body.version,
      labels: JSON.stringify(body.labels),
      capacity: JSON.stringify(body.capacity),
      capabilities: JSON.stringify(body.capabilities),
      registry: body.registry === null ? null : JSON.stringify(body.registry),
      sandboxes: JSON.stringify(body.sandboxes),
      images: JSON.stringify(body.images),
      now,
    });
    return before?.state;
  }

  get(id: string): Executor | undefined {
    const row = statement(this.db, 'SELECT * FROM executors WHERE id = ?').get(id) as ExecutorRow | undefined;
    return row === undefined ? undefined : decode(row);
  }

  list(): Executor[] {
    return (statement(this.db, 'SELECT * FROM executors ORDER BY id').all() as ExecutorRow[]).map(decode);
  }

  ready(): Executor[] {
    return (statement(this.db, `SELECT * FROM executors WHERE state = 'ready' ORDER BY id`).all() as ExecutorRow[]).map(
      decode,
    );
  }

  /** Ready executors whose last heartbeat is older than `before`. */
  silentSince(before: number): Executor[] {
    return (
      statement(this.db, `SELECT * FROM executors WHERE state = 'ready' AND last_heartbeat_at < ?`).all(before) as ExecutorRow[]
    ).map(decode);
  }

  markLost(id: string, now: number): boolean {
    return statement(this.db, `UPDATE executors SET state = 'lost', lost_at = ? WHERE id = ? AND state = 'ready'`)
      .run(now, id).changes === 1;
  }

  countByState(): Array<{ state: string; count: number }> {
    return statement(this.db, 'SELECT state, COUNT(*) AS count FROM executors GROUP BY state').all() as Array<{
      state: string;
      count: number;
    }>;
  }
}
