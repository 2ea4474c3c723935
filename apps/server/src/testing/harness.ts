/**
 * A whole server for unit tests: a temporary SQLite file — or, in the `unit-pg` test project
 * (CRYO_TEST_DATABASE=postgres), its own schema in the real PostgreSQL that project started — a
 * manual clock, a fake registry, and fake executors that speak the real protocol over HTTP
 * (fastify.inject). Logs are captured so tests can check that no secret is ever written.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { inject } from 'vitest';
import {
  HeartbeatResponseSchema,
  OperationsResponseSchema,
  type HeartbeatBody,
  type ObservedSandbox,
  type Operation,
} from '@cryo/snapshot';
import { ManualClock } from '../clock';
import { serverConfig, type ServerConfigInput } from '../config';
import { createLogger } from '../logger';
import { CryoServer } from '../server';
import { FakeRegistry } from './fake-registry';

export const API_KEY = 'test-api-key-0123456789';
export const EXECUTOR_TOKEN = 'test-executor-token-abcdef';
export const REGISTRY = { url: '127.0.0.1:5001', repository: 'cryo/snapshots' };

export interface Reply {
  status: number;
  body: unknown;
  json: Record<string, unknown>;
  headers: Record<string, unknown>;
}

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'PUT';
type Overrides = Omit<Partial<ServerConfigInput>, 'auth'> & { auth?: Partial<ServerConfigInput['auth']> };

/** Which database the server tests run against: `sqlite` (default) or `postgres` (project unit-pg). */
export const TEST_DATABASE: 'sqlite' | 'postgres' = process.env.CRYO_TEST_DATABASE === 'postgres' ? 'postgres' : 'sqlite';

/** The PostgreSQL the unit-pg project started (postgres-setup.ts); only there. */
export function testPostgresUrl(): string {
  const url = inject('cryoPostgresUrl');
  if (typeof url !== 'string') throw new Error('no test PostgreSQL: run the unit-pg project (vitest --project unit-pg)');
  return url;
}

/** A fresh schema name for one server's tables in the shared test PostgreSQL. */
export function newTestSchema(): string {
  return `t_${randomBytes(6).toString('hex')}`;
}

/** Drops a test schema (and everything in it). */
export async function dropTestSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: testPostgresUrl() });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

interface HarnessState {
  dir: string;
  clock: ManualClock;
  registry: FakeRegistry;
  /** PostgreSQL only: the schema this server's tables live in. */
  schema: string | null;
  /** False for a second replica: the first one drops the schema when it closes. */
  ownsSchema?: boolean;
}

export class Harness {
  readonly logs: string[] = [];

  private constructor(
    readonly server: CryoServer,
    readonly clock: ManualClock,
    readonly registry: FakeRegistry,
    readonly dir: string,
    /** PostgreSQL only: this server's schema (kept across restart()). */
    readonly schema: string | null,
    private readonly ownsSchema: boolean,
    private readonly overrides: Overrides,
    logs: string[],
  ) {
    this.logs = logs;
  }

  static async start(overrides: Overrides = {}, state?: HarnessState): Promise<Harness> {
    const dir = state?.dir ?? mkdtempSync(join(tmpdir(), 'cryo-server-test-'));
    const schema = TEST_DATABASE === 'postgres' ? (state?.schema ?? newTestSchema()) : null;
    const clock = state?.clock ?? new ManualClock();
    const registry = state?.registry ?? new FakeRegistry();
    const logs: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logs.push(chunk.toString('utf8'));
        callback();
      },
    });
    const config = serverConfig({
      ...overrides,
      database: schema === null ? join(dir, 'server.db') : testPostgresUrl(),
      log_level: 'debug',
      auth: { api_keys: [API_KEY], executor_token: EXECUTOR_TOKEN, ...overrides.auth },
      snapshot_registry: { ...REGISTRY, username: 'myuser', password: 'registry-secret-pw' },
    });
    const server = await CryoServer.create(config, {
      clock, registry, logger: createLogger('debug', sink), ...(schema === null ? {} : { pgSchema: schema }),
    });
    return new Harness(server, clock, registry, dir, schema, state?.ownsSchema ?? true, overrides, logs);
  }

  /** Closes this server and opens a new one on the same database file (a restart). */
  async restart(): Promise<Harness> {
    await this.server.close();
    return Harness.start(this.overrides, {
      dir: this.dir, clock: this.clock, registry: this.registry, schema: this.schema, ownsSchema: this.ownsSchema,
    });
  }

  /**
   * Another server replica on the same PostgreSQL schema, with the same clock and registry (and
   * its own log); close it before this one.
   */
  async replica(): Promise<Harness> {
    if (this.schema === null) throw new Error('replicas share a PostgreSQL database: run in the unit-pg project');
    const dir = mkdtempSync(join(tmpdir(), 'cryo-server-test-'));
    return Harness.start(this.overrides, { dir, clock: this.clock, registry: this.registry, schema: this.schema, ownsSchema: false });
  }

  async close(): Promise<void> {
    await this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
    if (this.schema !== null && this.ownsSchema) await dropTestSchema(this.schema);
  }

  /** `body` is sent as JSON; a string is sent as it is (to test malformed JSON). */
  async request(method: Method, url: string, body?: unknown, token: string | null = API_KEY): Promise<Reply> {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await this.server.app.inject({
      method,
      url,
      headers,
      ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    let parsed: unknown = null;
    try {
      parsed = response.json();
    } catch {
      parsed = response.body;
    }
    return {
      status: response.statusCode,
      body: parsed,
      json: typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {},
      headers: response.headers,
    };
  }

  api(method: Method, path: string, body?: unknown): Promise<Reply> {
    return this.request(method, `/v1/namespaces/test${path}`, body);
  }

  executor(id: string, options: Partial<HeartbeatBody> = {}): FakeExecutor {
    return new FakeExecutor(this, id, options);
  }
}

/** An executor that speaks the protocol over HTTP and does whatever the test tells it to. */
export class FakeExecutor {
  readonly containers = new Map<string, ObservedSandbox>();
  images: HeartbeatBody['images'] = [];

  constructor(
    private harness: Harness,
    readonly id: string,
    private readonly options: Partial<HeartbeatBody>,
  ) {}

  /** Talks to another harness from now on (the server after a restart). */
  attach(harness: Harness): void {
    this.harness = harness;
  }

  body(): HeartbeatBody {
    return {
      host: `${this.id}.local`,
      version: 'test',
      labels: {},
      capacity: { cpus: 4, memory_mb: 8192, max_sandboxes: 10 },
      capabilities: { lazy: false, lazy_unavailable_reason: 'no FUSE in tests' },
      registry: REGISTRY,
      ...this.options,
      sandboxes: [...this.containers.values()],
      images: this.images,
    };
  }

  async heartbeat(): Promise<{ status: number; desired: string[] }> {
    const reply = await this.harness.request('POST', `/internal/v1/executors/${this.id}/heartbeat`, this.body(), EXECUTOR_TOKEN);
    if (reply.status !== 200) return { status: reply.status, desired: [] };
    return { status: 200, desired: HeartbeatResponseSchema.parse(reply.body).desired_sandboxes };
  }

  async poll(waitMs = 0): Promise<Operation[]> {
    const reply = await this.harness.request(
      'GET', `/internal/v1/executors/${this.id}/operations?wait_ms=${waitMs}`, undefined, EXECUTOR_TOKEN,
    );
    if (reply.status !== 200) throw new Error(`poll answered ${reply.status}: ${JSON.stringify(reply.body)}`);
    return OperationsResponseSchema.parse(reply.body).operations;
  }

  async pollOne<K extends Operation['kind']>(kind: K, waitMs = 0): Promise<Extract<Operation, { kind: K }>> {
    const ops = await this.poll(waitMs);
    const op = ops.find((o): o is Extract<Operation, { kind: K }> => o.kind === kind);
    if (op === undefined) throw new Error(`expected a ${kind} operation, got ${JSON.stringify(ops.map((o) => o.kind))}`);
    return op;
  }

  ok(opId: string, result: unknown): Promise<Reply> {
    return this.harness.request('POST', `/internal/v1/operations/${opId}/result`, { ok: true, result }, EXECUTOR_TOKEN);
  }

  fail(opId: string, code: string, message: string): Promise<Reply> {
    return this.harness.request('POST', `/internal/v1/operations/${opId}/result`, { ok: false, error: { code, message } }, EXECUTOR_TOKEN);
  }

  progress(opId: string, body: { phase: string; bytes_done: number; bytes_total: number | null }): Promise<Reply> {
    return this.harness.request('POST', `/internal/v1/operations/${opId}/progress`, body, EXECUTOR_TOKEN);
  }

  /** Takes the next create_sandbox operation and reports the container running. */
  async startNext(): Promise<string> {
    const op = await this.pollOne('create_sandbox');
    const sandboxId = op.payload.sandbox_id;
    this.containers.set(sandboxId, {
      sandbox_id: sandboxId, container_id: `ctr-${sandboxId}`, state: 'running', exit_code: null, runtime: 'docker',
    });
    await this.ok(op.op_id, { container_id: `ctr-${sandboxId}`, runtime: 'docker' });
    return sandboxId;
  }

  /** Takes the next snapshot operation and reports it pushed to the (fake) registry (and indexed, with `clip`). */
  async pushNext(options: { sizeBytes?: number; clip?: boolean } = {}): Promise<{ snapshotId: string; digest: string; ref: string }> {
    const op = await this.pollOne('snapshot');
    const ref = `${REGISTRY.url}/${REGISTRY.repository}:${op.payload.tag}`;
    const digest = `sha256:${op.payload.snapshot_id.replace(/[^0-9a-z]/g, '').padEnd(64, '0').slice(0, 64)}`;
    this.harness.registry.push(ref, digest);
    this.images.push({ ref: `cryo-snapshots:${op.payload.tag}`, snapshot_id: op.payload.snapshot_id, size_bytes: options.sizeBytes ?? 1000 });
    await this.ok(op.op_id, {
      image_ref: ref,
      digest,
      size_bytes: options.sizeBytes ?? 1000,
      timings: { pause_ms: 15, commit_ms: 70, push_ms: 300, index_ms: null },
    });
    if (options.clip === true) {
      // The server asks the pushing executor to index the image next (lazy restore needs it).
      const index = await this.pollOne('build_index');
      await this.ok(index.op_id, { clip_index_ref: `${ref}.clip`, index_ms: 40, index_size_bytes: 2000, image_size_bytes: options.sizeBytes ?? 1000 });
    }
    return { snapshotId: op.payload.snapshot_id, digest, ref };
  }
}

/** One registered executor with one running sandbox: the starting point of most tests. */
export async function runningSandbox(h: Harness, executorId = 'exec-a'): Promise<{ executor: FakeExecutor; sandboxId: string }> {
  const executor = h.executor(executorId);
  await executor.heartbeat();
  const created = await h.api('POST', '/sandboxes', { image: 'busybox:latest', command: ['sleep', '1000'] });
  if (created.status !== 202) throw new Error(`create answered ${created.status}: ${JSON.stringify(created.body)}`);
  const sandboxId = await executor.startNext();
  return { executor, sandboxId };
}
