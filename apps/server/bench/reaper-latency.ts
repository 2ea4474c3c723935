/**
 * Measures what reaping many snapshots at once does to API latency: the server runs in-process
 * (real HTTP, a real SQLite file or, with --postgres, a real PostgreSQL started for the run), N
 * active snapshots all expire at the same moment, and a load
 * generator keeps requesting `GET /snapshots` and `GET /healthz` while the reaper works. The
 * registry is simulated in-process with a fixed delay per call (REGISTRY_DELAY_MS), so the
 * figures show the server's own cost, not a registry's.
 *
 *   npx tsx apps/server/bench/reaper-latency.ts [--snapshots 10000] [--postgres] [--json]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { ManualClock } from '../src/clock';
import { serverConfig } from '../src/config';
import { createLogger } from '../src/logger';
import { CryoServer } from '../src/server';
import { FakeRegistry } from '../src/testing/fake-registry';
import { startPostgres } from '../src/testing/postgres';

const { values } = parseArgs({
  options: {
    snapshots: { type: 'string', default: '10000' },
    'registry-delay-ms': { type: 'string', default: '2' },
    'idle-secs': { type: 'string', default: '5' },
    json: { type: 'boolean', default: false },
    postgres: { type: 'boolean', default: false },
  },
});
const count = Number(values.snapshots);
const registryDelayMs = Number(values['registry-delay-ms']);
const idleSecs = Number(values['idle-secs']);

const API_KEY = 'bench-key';
const dir = mkdtempSync(join(tmpdir(), 'cryo-reaper-bench-'));
const clock = new ManualClock(Date.now());
const registry = new FakeRegistry();
const slow = <T>(fn: () => Promise<T>): Promise<T> =>
  new Promise((resolve, reject) => setTimeout(() => fn().then(resolve, reject), registryDelayMs));
const realDelete = registry.deleteManifest.bind(registry);
registry.deleteManifest = (ref, digest) => slow(() => realDelete(ref, digest));

// PostgreSQL as a production server would run it: fsync on; synchronous_commit off matches
// SQLite's WAL + synchronous=NORMAL (a crash may lose the last commits, never corrupts).
const postgres = values.postgres ? await startPostgres({ settings: { synchronous_commit: 'off' } }) : null;
const config = serverConfig({
  listen: { host: '127.0.0.1', port: 0 },
  database: postgres === null ? join(dir, 'server.db') : postgres.url,
  log_level: 'warn',
  auth: { api_keys: [API_KEY], executor_token: 'bench-token' },
  snapshot_registry: { url: '127.0.0.1:5001', repository: 'cryo/snapshots' },
});
const server = await CryoServer.create(config, { clock, registry, logger: createLogger('warn') });
const url = await server.listen();

// Seed N active snapshots with a 60 s TTL, all created at the same instant.
const { namespaces } = server.stores;
const now = clock.now();
await namespaces.ensure('bench', now);
await server.db.transaction(async (tx) => {
  for (let i = 0; i < count; i += 1) {
    const id = `snap-bench${String(i).padStart(6, '0')}`;
    const tag = `sb-sbx-bench-${id}`;
    const ref = `127.0.0.1:5001/cryo/snapshots:${tag}`;
    const digest = `sha256:${String(i).padStart(64, '0')}`;
    await tx.snapshots.insert({
      id, namespace: 'bench', sandboxId: 'sbx-bench', executorId: 'exec-bench', tag, userTag: false,
      labels: { batch: String(i % 10) }, plannedRef: ref, baseImage: 'busybox', ttlSecs: 60, now,
    });
    await tx.snapshots.recordPushed(id, {
      image_ref: ref, digest, size_bytes: 1_000_000, timings: { pause_ms: 1, commit_ms: 1, push_ms: 1, index_ms: null, precopy_ms: null, flatten_ms: null },
      clip_index_ref: null, capture: null, excluded_mounts: [], layers: 2, flattened: false,
    }, now);
    registry.push(ref, digest);
  }
});

const paths = ['/v1/namespaces/bench/snapshots?limit=50', '/v1/namespaces/bench/snapshots?limit=50&label=batch=3', '/healthz'];

/**
 * The load generator runs in a worker thread, so that its own work does not count as server
 * latency: `workers` clients issue requests back to back until told to stop.
 */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
let stop = false;
parentPort.on('message', () => { stop = true; });
(async () => {
  const latencies = [];
  await Promise.all(Array.from({ length: workerData.workers }, async (_, w) => {
    let i = w;
    while (!stop) {
      const path = workerData.paths[i % workerData.paths.length];
      i += 1;
      const started = performance.now();
      const res = await fetch(workerData.url + path, { headers: { authorization: 'Bearer ' + workerData.key } });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(path + ' answered ' + res.status);
      latencies.push(performance.now() - started);
    }
  }));
  parentPort.postMessage(latencies);
})();
`;

function startLoad(workers: number): { stop(): Promise<number[]> } {
  const worker = new Worker(LOAD_WORKER, { eval: true, workerData: { workers, paths, url, key: API_KEY } });
  const done = new Promise<number[]>((resolve, reject) => {
    worker.once('message', (latencies: number[]) => resolve(latencies));
    worker.once('error', reject);
  });
  return {
    async stop() {
      worker.postMessage('stop');
      const latencies = await done;
      await worker.terminate();
      return latencies;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function summary(latencies: number[]) {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    requests: sorted.length,
    p50_ms: Number(percentile(sorted, 50).toFixed(2)),
    p99_ms: Number(percentile(sorted, 99).toFixed(2)),
    max_ms: Number((sorted.at(-1) ?? Number.NaN).toFixed(2)),
  };
}

const WORKERS = 4;
// Warm-up, then idle: the same load with nothing to reap.
await (startLoad(WORKERS)).stop();
const idleLoad = startLoad(WORKERS);
await sleep(idleSecs * 1000);
const idle = summary(await idleLoad.stop());

// Everything expires at once; run reaper passes until all are gone, under the same load.
clock.advance(61_000);
const busyLoad = startLoad(WORKERS);
const reapStarted = performance.now();
let passes = 0;
let finished = 0;
while (finished < count) {
  const pass = await server.reaper.runOnce();
  passes += 1;
  finished += pass.finished;
  if (pass.finished === 0 && pass.markedExpired === 0) break;
}
const reapMs = performance.now() - reapStarted;
const busy = summary(await busyLoad.stop());

const expired = await server.db.kysely.selectFrom('snapshots').select((eb) => eb.fn.countAll<number>().as('n'))
  .where('status', '=', 'expired').executeTakeFirstOrThrow();
const result = {
  database: postgres === null ? 'sqlite' : 'postgres',
  snapshots: count,
  registry_delay_ms: registryDelayMs,
  reaper: {
    batch_size: config.snapshots.reaper_batch_size,
    concurrency: config.snapshots.reaper_concurrency,
    passes,
    expired: expired.n,
    manifests_left: registry.manifests.size,
    seconds: Number((reapMs / 1000).toFixed(2)),
    per_second: Math.round(count / (reapMs / 1000)),
  },
  api_idle: idle,
  api_while_reaping: busy,
  p99_ratio: Number((busy.p99_ms / idle.p99_ms).toFixed(2)),
};

await server.close();
await postgres?.stop();
rmSync(dir, { recursive: true, force: true });

if (values.json) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  process.stdout.write(
    `${result.database}: reaped ${result.reaper.expired}/${count} snapshots in ${result.reaper.seconds}s (${result.reaper.per_second}/s, ` +
      `${passes} passes, ${result.reaper.manifests_left} manifests left)\n` +
      `API idle:          p50 ${idle.p50_ms} ms  p99 ${idle.p99_ms} ms  (${idle.requests} requests)\n` +
      `API while reaping: p50 ${busy.p50_ms} ms  p99 ${busy.p99_ms} ms  (${busy.requests} requests)\n` +
      `p99 ratio: ${result.p99_ratio} (target <= 2)\n`,
  );
}
