/**
 * Does the executor protocol keep answering while the public API is hammered? (issue 15 item 10)
 *
 * Starts the real server binary (real HTTP, SQLite file) as a child process, registers an
 * executor, creates N sandboxes with C-byte commands, and then, while a load generator in a
 * worker thread hammers the public API, sends an executor heartbeat and a `GET /healthz` every
 * 200 ms from the main thread and records how long each took. Phases:
 *
 *   idle    no load
 *   lists   10 clients (--list-clients) back to back: GET /v1/namespaces/bench/sandboxes?limit=500
 *   bodies  2 clients back to back: POST /sandboxes with an ~8 MiB body (a command of ~840k elements)
 *
 * With `--compare REF` (repeatable) the server of each git revision REF (extracted with `git
 * archive` into a temporary directory that borrows this checkout's node_modules) runs next to
 * this checkout's; each phase is split into --rounds windows that alternate between the servers,
 * so load from elsewhere on the machine falls on all of them alike.
 *
 *   npx tsx apps/server/bench/heartbeat-under-load.ts [--compare REF]... [--sandboxes 500]
 *       [--command-bytes 20000] [--secs 15] [--rounds 3] [--list-clients 10] [--json]
 *
 * Results print as a table and are kept in bench/results/heartbeat-under-load.json.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { percentile, writeResult } from '../../../bench/report';

const { values } = parseArgs({
  options: {
    compare: { type: 'string', multiple: true },
    sandboxes: { type: 'string', default: '500' },
    'command-bytes': { type: 'string', default: '20000' },
    secs: { type: 'string', default: '15' },
    'list-clients': { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    json: { type: 'boolean', default: false },
  },
});
const SANDBOXES = Number(values.sandboxes);
const COMMAND_BYTES = Number(values['command-bytes']);
const PHASE_SECS = Number(values.secs);
const LIST_CLIENTS = Number(values['list-clients']);
const ROUNDS = Number(values.rounds);
const PROBE_INTERVAL_MS = 200;
const API_KEY = 'bench-api-key';
const EXECUTOR_TOKEN = 'bench-executor-token';
const EXECUTOR_ID = 'bench-exec';
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** A checkout of `ref` in a temporary directory whose node_modules are this checkout's, except the workspaces. */
function materialize(ref: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cryo-bench-checkout-'));
  const tar = join(dir, 'source.tar');
  execFileSync('git', ['-C', ROOT, 'archive', '--format=tar', '-o', tar, ref]);
  execFileSync('tar', ['-xf', tar, '-C', dir]);
  rmSync(tar);
  const modules = join(dir, 'node_modules');
  mkdirSync(join(modules, '@cryo'), { recursive: true });
  for (const entry of readdirSync(join(ROOT, 'node_modules'))) {
    if (entry !== '@cryo') symlinkSync(join(ROOT, 'node_modules', entry), join(modules, entry));
  }
  for (const workspace of readdirSync(join(ROOT, 'node_modules', '@cryo'))) {
    const home = ['cli', 'executor', 'server'].includes(workspace) ? 'apps' : 'libs';
    symlinkSync(join(dir, home, workspace), join(modules, '@cryo', workspace));
  }
  return dir;
}

interface RunningServer {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

async function startServer(checkout: string, work: string): Promise<RunningServer> {
  const port = await freePort();
  const config = join(work, 'server.yaml');
  writeFileSync(config, [
    `listen: { host: "127.0.0.1", port: ${port} }`,
    `database: "${join(work, 'server.db')}"`,
    'log_level: warn',
    `auth: { api_keys: ["${API_KEY}"], executor_token: "${EXECUTOR_TOKEN}" }`,
    'sandboxes: { retention_secs: 604800 }',
    '',
  ].join('\n'));
  const child = spawn(process.execPath, ['--import', 'tsx', join(checkout, 'apps/server/src/main.ts'), '--config', config], {
    cwd: checkout,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i += 1) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (i > 300) throw new Error('server did not answer /healthz within 60 s');
    await sleep(200);
  }
  return {
    url,
    child,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

const heartbeatBody = JSON.stringify({
  host: 'bench.local',
  version: 'bench',
  labels: {},
  capacity: { cpus: 0, memory_mb: 0, max_sandboxes: 1_000_000 },
  capabilities: { lazy: false, lazy_unavailable_reason: 'bench' },
  registry: null,
  sandboxes: [],
  images: [],
});

async function timed(url: string, init: RequestInit): Promise<{ ms: number; status: number }> {
  const started = performance.now();
  const res = await fetch(url, init);
  await res.arrayBuffer();
  return { ms: performance.now() - started, status: res.status };
}

function heartbeat(url: string): Promise<{ ms: number; status: number }> {
  return timed(`${url}/internal/v1/executors/${EXECUTOR_ID}/heartbeat`, {
    method: 'POST',
    headers: { authorization: `Bearer ${EXECUTOR_TOKEN}`, 'content-type': 'application/json' },
    body: heartbeatBody,
  });
}

async function seed(url: string): Promise<void> {
  const hb = await heartbeat(url);
  if (hb.status !== 200) throw new Error(`heartbeat answered ${hb.status}`);
  const body = JSON.stringify({ image: 'busybox:latest', command: ['sh', '-c', `: ${'x'.repeat(COMMAND_BYTES)}`], labels: { bench: 'yes' } });
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < SANDBOXES) {
      next += 1;
      const reply = await timed(`${url}/v1/namespaces/bench/sandboxes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body,
      });
      if (reply.status !== 202) throw new Error(`create answered ${reply.status}`);
    }
  }));
}

/** The load generator: `clients` loops of one request kind, in a worker thread so its work is not the probe's. */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
let stop = false;
parentPort.on('message', () => { stop = true; });
(async () => {
  const latencies = [];
  const statuses = {};
  let bytes = 0;
  const body = workerData.body === null ? undefined : Buffer.from(workerData.body);
  await Promise.all(Array.from({ length: workerData.clients }, async () => {
    while (!stop) {
      const started = performance.now();
      try {
        const res = await fetch(workerData.url, {
          method: workerData.method,
          headers: { authorization: 'Bearer ' + workerData.key, ...(body ? { 'content-type': 'application/json' } : {}) },
          body,
        });
        const received = await res.arrayBuffer();
        bytes += received.byteLength;
        statuses[res.status] = (statuses[res.status] || 0) + 1;
      } catch (err) {
        statuses.error = (statuses.error || 0) + 1;
      }
      latencies.push(performance.now() - started);
    }
  }));
  parentPort.postMessage({ latencies, statuses, bytes });
})();
`;

interface LoadResult {
  latencies: number[];
  statuses: Record<string, number>;
  bytes: number;
}

function startLoad(url: string, method: string, clients: number, body: string | null): { stop(): Promise<LoadResult> } {
  const worker = new Worker(LOAD_WORKER, { eval: true, workerData: { url, method, clients, body, key: API_KEY } });
  const done = new Promise<LoadResult>((resolveLoad, reject) => {
    worker.once('message', (result: LoadResult) => resolveLoad(result));
    worker.once('error', reject);
  });
  return {
    async stop() {
      worker.postMessage('stop');
      const result = await done;
      await worker.terminate();
      return result;
    },
  };
}

function stats(latencies: number[]) {
  const round = (n: number): number => Math.round(n * 10) / 10;
  return {
    n: latencies.length,
    p50_ms: round(percentile(latencies, 50)),
    p99_ms: round(percentile(latencies, 99)),
    max_ms: round(Math.max(...latencies)),
  };
}

/** Heartbeats and /healthz every PROBE_INTERVAL_MS (each loop waits for its answer) until `until` resolves. */
interface Samples {
  heartbeat: number[];
  healthz: number[];
  failedHeartbeats: number;
  load: number[];
  statuses: Record<string, number>;
  bytes: number;
}

const noSamples = (): Samples => ({ heartbeat: [], healthz: [], failedHeartbeats: 0, load: [], statuses: {}, bytes: 0 });

/** Heartbeats and /healthz every PROBE_INTERVAL_MS (each loop waits for its answer) until `until` resolves. */
async function probe(url: string, until: Promise<unknown>, into: Samples): Promise<void> {
  let done = false;
  void until.then(() => {
    done = true;
  });
  const loop = async (fn: () => Promise<{ ms: number; status: number }>, samples: number[], onFail: () => void) => {
    while (!done) {
      const reply = await fn();
      samples.push(reply.ms);
      if (reply.status !== 200) onFail();
      await sleep(PROBE_INTERVAL_MS);
    }
  };
  await Promise.all([
    loop(() => heartbeat(url), into.heartbeat, () => {
      into.failedHeartbeats += 1;
    }),
    loop(() => timed(`${url}/healthz`, {}), into.healthz, () => undefined),
  ]);
}

interface Load {
  method: string;
  path: string;
  clients: number;
  body: string | null;
}

/** One window of a phase against one server; samples are added to `into`. */
async function window(url: string, load: Load | null, secs: number, into: Samples): Promise<void> {
  const generator = load === null ? null : startLoad(`${url}${load.path}`, load.method, load.clients, load.body);
  await probe(url, sleep(secs * 1000), into);
  const result = generator === null ? null : await generator.stop();
  if (result === null) return;
  into.load.push(...result.latencies);
  for (const [status, count] of Object.entries(result.statuses)) into.statuses[status] = (into.statuses[status] ?? 0) + count;
  into.bytes += result.bytes;
}

function summarize(samples: Samples, hasLoad: boolean) {
  return {
    heartbeat: stats(samples.heartbeat),
    healthz: stats(samples.healthz),
    failed_heartbeats: samples.failedHeartbeats,
    load: hasLoad ? { ...stats(samples.load), statuses: samples.statuses, mb_received: Math.round(samples.bytes / 1e5) / 10 } : null,
  };
}

function bigBody(): string {
  // Just under the old 8 MiB body limit, so the server before this change parses and validates it.
  const element = 'abcdefg';
  const count = Math.floor((8 * 1024 * 1024 - 1024) / (element.length + 3));
  return JSON.stringify({ image: 'busybox:latest', command: Array.from({ length: count }, () => element) });
}

const PHASES = ['idle', 'lists', 'bodies'] as const;
const loads: Record<(typeof PHASES)[number], Load | null> = {
  idle: null,
  lists: { method: 'GET', path: '/v1/namespaces/bench/sandboxes?limit=500', clients: LIST_CLIENTS, body: null },
  bodies: { method: 'POST', path: '/v1/namespaces/bench/sandboxes', clients: 2, body: bigBody() },
};

// Every server runs at once; each phase is split into ROUNDS windows that take turns across the
// servers, so a burst of load from elsewhere on the machine falls on all of them alike.
const servers: Array<{ label: string; checkout: string; work: string; server: RunningServer | null; seedSecs: number; samples: Record<string, Samples> }> = [];
try {
  for (const ref of values.compare ?? []) {
    servers.push({ label: ref, checkout: materialize(ref), work: '', server: null, seedSecs: 0, samples: {} });
  }
  servers.push({ label: 'this checkout', checkout: ROOT, work: '', server: null, seedSecs: 0, samples: {} });
  for (const entry of servers) {
    entry.work = mkdtempSync(join(tmpdir(), 'cryo-bench-hb-'));
    entry.server = await startServer(entry.checkout, entry.work);
    const started = performance.now();
    await seed(entry.server.url);
    entry.seedSecs = Math.round((performance.now() - started) / 100) / 10;
    entry.samples = Object.fromEntries(PHASES.map((name) => [name, noSamples()]));
  }
  for (const name of PHASES) {
    for (let round = 0; round < ROUNDS; round += 1) {
      for (const entry of servers) {
        const samples = entry.samples[name];
        if (entry.server === null || samples === undefined) throw new Error('server not started');
        await window(entry.server.url, loads[name], PHASE_SECS / ROUNDS, samples);
      }
    }
  }
} finally {
  for (const entry of servers) {
    await entry.server?.stop();
    if (entry.work !== '') rmSync(entry.work, { recursive: true, force: true });
    if (entry.checkout !== ROOT) rmSync(entry.checkout, { recursive: true, force: true });
  }
}

const runs = servers.map((entry) => ({
  label: entry.label,
  seed_secs: entry.seedSecs,
  ...Object.fromEntries(PHASES.map((name) => [name, summarize(entry.samples[name] ?? noSamples(), loads[name] !== null)])),
})) as Array<{ label: string; seed_secs: number } & Record<(typeof PHASES)[number], ReturnType<typeof summarize>>>;

writeResult('heartbeat-under-load', { sandboxes: SANDBOXES, command_bytes: COMMAND_BYTES, phase_secs: PHASE_SECS, rounds: ROUNDS, list_clients: LIST_CLIENTS, runs });
if (values.json) {
  process.stdout.write(`${JSON.stringify(runs, null, 2)}\n`);
} else {
  console.log(`${SANDBOXES} sandboxes with ${COMMAND_BYTES}-byte commands; ${PHASE_SECS} s per phase and server in ${ROUNDS} interleaved windows; ${LIST_CLIENTS} list clients; probes every ${PROBE_INTERVAL_MS} ms`);
  for (const run of runs) {
    console.log(`\n== ${run.label} (seeded in ${run.seed_secs} s)`);
    console.log('phase   | heartbeat p50 / p99 / max ms | healthz p50 / p99 / max ms | load requests, p50 ms, statuses, MB received');
    for (const name of PHASES) {
      const p = run[name];
      const load = p.load === null ? '-' : `${p.load.n}, ${p.load.p50_ms}, ${JSON.stringify(p.load.statuses)}, ${p.load.mb_received}`;
      console.log(`${name.padEnd(7)} | ${p.heartbeat.p50_ms} / ${p.heartbeat.p99_ms} / ${p.heartbeat.max_ms} (${p.heartbeat.n}, ${p.failed_heartbeats} failed) | ${p.healthz.p50_ms} / ${p.healthz.p99_ms} / ${p.healthz.max_ms} | ${load}`);
    }
  }
}
