/**
 * API throughput and latency on SQLite, PostgreSQL with one replica and PostgreSQL with two
 * replicas: the same load generator, the same run. Servers are the real binaries (separate
 * processes); a fake executor speaks the real protocol (heartbeats, leases, results) so the
 * server has running sandboxes to snapshot. PostgreSQL is Debian's, started here (fsync on,
 * synchronous_commit off: the same durability as SQLite's WAL with synchronous=NORMAL).
 *
 * Then, with two replicas under load, the elected replica is killed (-9): the load generator
 * retries a request that found no server on the other replica, as a client behind a load
 * balancer (or the CLI pointed at another replica) would, and counts requests that failed anyway.
 *
 * Every configuration is up for the whole run; each operation is measured on each in turn, three
 * rounds, and the round with the median p99 is reported (the machine's other load then falls on
 * all of them alike).
 *
 *   npx tsx apps/server/bench/api-throughput.ts [--secs 5] [--clients 16] [--sandboxes 800] [--json]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startPostgres } from '../src/testing/postgres';

const { values } = parseArgs({
  options: {
    secs: { type: 'string', default: '5' },
    clients: { type: 'string', default: '16' },
    sandboxes: { type: 'string', default: '800' },
    json: { type: 'boolean', default: false },
  },
});
const SECS = Number(values.secs);
const CLIENTS = Number(values.clients);
const SANDBOXES = Number(values.sandboxes);
const ROUNDS = 3;
const API_KEY = 'bench-api-key';
const TOKEN = 'bench-executor-token';
const NS = '/v1/namespaces/bench';
const BIN = resolve(import.meta.dirname, '..', 'bin', 'cryo-server.js');
const dir = mkdtempSync(join(tmpdir(), 'cryo-api-bench-'));

interface Replica { url: string; child: ChildProcess; log: string }

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => res(typeof a === 'object' && a !== null ? a.port : 0));
    });
    srv.on('error', rej);
  });
}

async function startReplica(name: string, database: string): Promise<Replica> {
  const port = await freePort();
  const config = join(dir, `${name}.yaml`);
  writeFileSync(config, `listen:\n  host: 127.0.0.1\n  port: ${port}\ndatabase: "${database}"\nlog_level: warn\n` +
    `auth:\n  api_keys: ["${API_KEY}"]\n  executor_token: "${TOKEN}"\nsnapshots:\n  max_per_namespace: 0\n` +
    'snapshot_registry:\n  url: "127.0.0.1:5999"\n  repository: "cryo/snapshots"\n  insecure: true\n');
  const log = join(dir, `${name}.log`);
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, [BIN, '--config', config], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i += 1) {
    if (child.exitCode !== null) throw new Error(`${name} exited: ${readFileSync(log, 'utf8').slice(-2000)}`);
    if ((await fetch(`${url}/healthz`).catch(() => undefined))?.ok === true) break;
    if (i > 300) throw new Error(`${name} did not start`);
    await sleep(100);
  }
  return { url, child, log };
}

async function stop(replica: Replica, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (replica.child.exitCode !== null || replica.child.signalCode !== null) return;
  const exited = new Promise((r) => replica.child.once('exit', r));
  replica.child.kill(signal);
  await exited;
}

async function call(base: string, method: string, path: string, body?: unknown, token = API_KEY): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

/**
 * A fake executor: heartbeats every 3 s (the default interval) with every sandbox it started
 * reported running, as a real one does, and starts every sandbox it is asked to.
 */
function fakeExecutor(urls: () => string[]): { stop(): Promise<void> } {
  let stopped = false;
  let current = 0;
  const base = (): string => urls()[current % urls().length] ?? '';
  const started: Array<{ sandbox_id: string; container_id: string; state: 'running'; exit_code: null; runtime: 'docker' }> = [];
  const body = () => ({
    host: 'bench', version: 'bench', labels: {}, capacity: { cpus: 0, memory_mb: 0, max_sandboxes: 1_000_000 },
    capabilities: { lazy: false, lazy_unavailable_reason: 'bench' }, registry: { url: '127.0.0.1:5999', repository: 'cryo/snapshots' },
    sandboxes: started, images: [],
  });
  const withFailover = async <T>(work: (b: string) => Promise<T>): Promise<T> => {
    for (let i = 0; ; i += 1) {
      try {
        return await work(base());
      } catch (err) {
        if (i >= urls().length) throw err;
        current += 1;
      }
    }
  };
  const beats = (async () => {
    while (!stopped) {
      await withFailover((b) => call(b, 'POST', '/internal/v1/executors/bench-exec/heartbeat', body(), TOKEN)).catch(() => undefined);
      await sleep(3000);
    }
  })();
  const polls = (async () => {
    while (!stopped) {
      const res = await withFailover((b) => call(b, 'GET', '/internal/v1/executors/bench-exec/operations?wait_ms=1000', undefined, TOKEN)).catch(() => undefined);
      for (const op of (res?.json.operations as Array<{ op_id: string; kind: string; payload: { sandbox_id: string } }> | undefined) ?? []) {
        if (op.kind !== 'create_sandbox') continue; // snapshots stay `creating`: only the API call is measured
        const containerId = `ctr-${op.payload.sandbox_id}`;
        started.push({ sandbox_id: op.payload.sandbox_id, container_id: containerId, state: 'running', exit_code: null, runtime: 'docker' });
        await withFailover((b) => call(b, 'POST', `/internal/v1/operations/${op.op_id}/result`,
          { ok: true, result: { container_id: containerId, runtime: 'docker' } }, TOKEN));
      }
    }
  })();
  return { async stop() { stopped = true; await Promise.all([beats, polls]); } };
}

interface Stats { requests: number; failed: number; retried: number; rps: number; p50_ms: number; p99_ms: number }

function stats(latencies: number[], failed: number, retried: number, secs: number): Stats {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (p: number): number => Number((sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN).toFixed(2));
  return { requests: sorted.length, failed, retried, rps: Math.round(sorted.length / secs), p50_ms: at(0.5), p99_ms: at(0.99) };
}

/**
 * `clients` loops issue `request(i)` back to back for `secs` (or until `request` returns null),
 * spreading over the replicas; a request that finds no server is retried on the next replica.
 */
async function load(urls: () => string[], secs: number, request: (i: number) => { method: string; path: string; body?: unknown } | null): Promise<Stats> {
  const latencies: number[] = [];
  let failed = 0;
  let retried = 0;
  let next = 0;
  const until = performance.now() + secs * 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, async (_, client) => {
    while (performance.now() < until) {
      const spec = request(next);
      next += 1;
      if (spec === null) return;
      const t0 = performance.now();
      let ok = false;
      for (let attempt = 0; attempt < 3 && !ok; attempt += 1) {
        const list = urls();
        const base = list[(client + attempt) % list.length] ?? '';
        try {
          const res = await call(base, spec.method, spec.path, spec.body);
          ok = res.status < 300;
          if (!ok && res.status !== 503) break;
        } catch {
          // connection refused/reset: this replica is gone, try the next
        }
        if (!ok) retried += 1;
      }
      if (ok) latencies.push(performance.now() - t0);
      else failed += 1;
    }
  }));
  return stats(latencies, failed, retried, (performance.now() - started) / 1000);
}

interface Setup { label: string; replicas: Replica[]; urls: () => string[]; executor: { stop(): Promise<void> }; pool: string[]; readable: string[] }
interface ConfigResult { database: string; replicas: number; list: Stats; get: Stats; create_snapshot: Stats }
type Op = 'list' | 'get' | 'create_snapshot';

async function setUp(label: string, database: string, replicaCount: number): Promise<Setup> {
  const replicas = await Promise.all(Array.from({ length: replicaCount }, (_, i) => startReplica(`${label}-${i}`, database)));
  const urls = (): string[] => replicas.filter((r) => r.child.exitCode === null && r.child.signalCode === null).map((r) => r.url);
  const executor = fakeExecutor(urls);
  await sleep(1500);
  // Seed: running sandboxes to snapshot, and snapshots to read.
  const seed = await load(urls, 3600, (i) => (i < SANDBOXES ? { method: 'POST', path: `${NS}/sandboxes`, body: { image: 'busybox', labels: { n: String(i % 10) } } } : null));
  if (seed.failed > 0) throw new Error(`${label}: ${seed.failed} sandbox creates failed`);
  const first = replicas[0]?.url ?? '';
  let pool: string[] = [];
  for (;;) {
    pool = await allSandboxIds(first);
    if (pool.length >= SANDBOXES) break;
    await sleep(200);
  }
  const readable: string[] = [];
  for (const id of pool.splice(0, 50)) readable.push(String((await call(first, 'POST', `${NS}/sandboxes/${id}/snapshots`, {})).json.snapshot_id));
  return { label, replicas, urls, executor, pool, readable };
}

function run(setup: Setup, op: Op, secs: number): Promise<Stats> {
  const { urls, readable, pool } = setup;
  if (op === 'list') return load(urls, secs, () => ({ method: 'GET', path: `${NS}/snapshots?limit=50` }));
  if (op === 'get') return load(urls, secs, (i) => ({ method: 'GET', path: `${NS}/snapshots/${readable[i % readable.length] ?? ''}` }));
  let quota = Math.floor((SANDBOXES - 50) / ROUNDS); // each round its share of the sandboxes
  return load(urls, secs, () => {
    quota -= 1;
    const id = quota < 0 ? undefined : pool.shift(); // each running sandbox is snapshotted once
    return id === undefined ? null : { method: 'POST', path: `${NS}/sandboxes/${id}/snapshots`, body: { ttl_secs: 3600 } };
  });
}

async function allSandboxIds(base: string): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const page = await call(base, 'GET', `${NS}/sandboxes?status=running&limit=500${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
    ids.push(...(page.json.items as Array<{ sandbox_id: string }>).map((s) => s.sandbox_id));
    cursor = page.json.next_cursor as string | null;
  } while (cursor !== null);
  return ids;
}

/** The round with the median p99 (its throughput and p50 with it). */
function median(rounds: Stats[]): Stats {
  const sorted = [...rounds].sort((a, b) => a.p99_ms - b.p99_ms);
  const mid = sorted[Math.floor(sorted.length / 2)];
  if (mid === undefined) throw new Error('no rounds');
  return { ...mid, failed: rounds.reduce((n, r) => n + r.failed, 0), retried: rounds.reduce((n, r) => n + r.retried, 0) };
}

/** Who holds the duties lease now (unexpired), read straight from the database. */
async function leaseHolder(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const row = (await client.query<{ holder: string; expires_at: string }>("SELECT holder, expires_at FROM leases WHERE name = 'duties'")).rows[0];
    return row !== undefined && Number(row.expires_at) > Date.now() ? row.holder : undefined;
  } finally {
    await client.end();
  }
}

const postgres = await startPostgres({ settings: { synchronous_commit: 'off' } });
const results: ConfigResult[] = [];
let failover: Record<string, unknown> = {};
const setups: Setup[] = [];
try {
  const urlOf = (db: string): string => postgres.url.replace(/\/[^/]*$/, `/${db}`);
  await postgres.query('CREATE DATABASE bench_pg1');
  await postgres.query('CREATE DATABASE bench_pg2');
  // All configurations are up for the whole run; each operation is measured on each in turn,
  // round after round, so that the machine's other load falls on all of them alike.
  setups.push(await setUp('sqlite', join(dir, 'server.db'), 1));
  setups.push(await setUp('postgres', urlOf('bench_pg1'), 1));
  setups.push(await setUp('postgres-2', urlOf('bench_pg2'), 2));
  const measured = new Map<string, Stats[]>();
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const op of ['list', 'get', 'create_snapshot'] as const) {
      for (const setup of setups) {
        const key = `${setup.label}/${op}`;
        measured.set(key, [...(measured.get(key) ?? []), await run(setup, op, SECS)]);
      }
    }
  }
  for (const setup of setups) {
    const of = (op: Op): Stats => median(measured.get(`${setup.label}/${op}`) ?? []);
    results.push({ database: setup.label, replicas: setup.replicas.length, list: of('list'), get: of('get'), create_snapshot: of('create_snapshot') });
  }

  // Kill the elected replica of the two in the middle of a mixed read load.
  const two = setups[2];
  if (two !== undefined) {
    const lease = await leaseHolder(urlOf('bench_pg2'));
    const leader = two.replicas.find((r) => lease !== undefined && lease.includes(`-${r.child.pid}-`));
    const mixed = load(two.urls, SECS, (i) => ({ method: 'GET', path: i % 2 === 0 ? `${NS}/snapshots?limit=50` : `${NS}/sandboxes?limit=20` }));
    await sleep((SECS * 1000) / 3);
    const killedAt = performance.now();
    if (leader !== undefined) await stop(leader, 'SIGKILL');
    let takeoverMs = Number.NaN;
    while (performance.now() - killedAt < 60_000) {
      const now = await leaseHolder(urlOf('bench_pg2'));
      if (now !== undefined && now !== lease) {
        takeoverMs = Math.round(performance.now() - killedAt);
        break;
      }
      await sleep(50);
    }
    const during = await mixed;
    failover = { killed: leader === undefined ? 'none found' : 'elected replica', load: during, takeover_ms: takeoverMs };
  }
} finally {
  for (const setup of setups) {
    await setup.executor.stop();
    for (const r of setup.replicas) await stop(r);
  }
  await postgres.stop();
  rmSync(dir, { recursive: true, force: true });
}

if (values.json) {
  process.stdout.write(`${JSON.stringify({ clients: CLIENTS, secs: SECS, results, failover })}\n`);
} else {
  const row = (r: ConfigResult, op: 'list' | 'get' | 'create_snapshot'): string => {
    const s = r[op];
    return `${`${r.database} (${r.replicas})`.padEnd(16)} ${op.padEnd(16)} ${String(s.rps).padStart(6)} req/s  p50 ${String(s.p50_ms).padStart(7)} ms  p99 ${String(s.p99_ms).padStart(7)} ms  failed ${s.failed}`;
  };
  process.stdout.write(`${CLIENTS} clients; medians of ${ROUNDS} interleaved rounds\n`);
  for (const op of ['list', 'get', 'create_snapshot'] as const) for (const r of results) process.stdout.write(`${row(r, op)}\n`);
  process.stdout.write(`elected replica killed under load: ${JSON.stringify(failover)}\n`);
}
