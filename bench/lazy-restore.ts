/**
 * Issue 5 benchmark: time to first exec of a restored snapshot of a large image, lazy (clip index
 * over FUSE + overlay + runc) against eager (docker pull + create + start), on a host whose Docker
 * engine holds none of the image's layers, measured as API restore call -> exit of
 * `python3 -c 'print(1)'` (POST .../exec), with the registry on loopback and again behind a
 * ~100 Mbit/s link. Also the bytes fetched from the registry for each.
 *
 * The registry sits behind a TCP proxy written here: it counts the bytes in both directions and,
 * for the throttled link, limits each direction with a token bucket. Every cryo process and both
 * Docker engines know the registry only by the proxy's address (it is the `snapshot_registry.url`
 * and the host in every image reference), so all registry traffic, docker pull and clip range
 * reads alike, crosses it. The cluster is set up here from test/support pieces rather than with
 * startCluster, whose registry address cannot be redirected.
 *
 * Before every round host B is made cold: its sandbox deleted, every image removed from its
 * engine (`docker rmi`), its clip index cache (state_dir/clip) and span cache
 * (state_dir/clip-cache) emptied. Eager and lazy rounds alternate.
 *
 *   npx tsx bench/lazy-restore.ts [rounds]        (default 3 rounds per mode and link)
 *
 * The image: the cached debootstrap bookworm + python3 root filesystem
 * (libs/clip/src/testing/debian.ts) with more packages installed on top (apt-get in a container
 * on host A's engine, exported once and cached as a tarball under /var/tmp/cryo-test-cache).
 * The first run builds it (a few minutes, needs Debian's mirror); later runs reuse it.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { listMounts, mountsUnder, readMountStatus, stopMountProcess, unmountPath } from '@cryo/clip/fuse';
import { TEST_CACHE_DIR, debianRootfsTar } from '../libs/clip/src/testing/debian';
import { DOCKER_BIN, startDockerd, type TestDockerd } from '../test/support/dockerd';
import { startRegistry, type TestRegistry } from '../test/support/registry';
import { freePort, killAll, spawnCryo, waitFor, writeYaml, type CryoProcess } from '../test/support/processes';
import { median, printTable, writeResult } from './report';

const rounds = Number(process.argv[2] ?? 3);
const LINK_MBIT = 100;
const NS = '/v1/namespaces/bench-lazy';
/** Installed on top of debootstrap minbase + python3 to make a large, realistic image. */
const EXTRA_PACKAGES = ['python3-numpy', 'python3-pip', 'python3-venv', 'git', 'curl', 'ca-certificates', 'gcc', 'libc6-dev', 'make', 'xz-utils'];
const LARGE_TAR = join(TEST_CACHE_DIR, 'debian-bookworm-python3-large.tar');
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// ---- a counting, throttling TCP proxy -----------------------------------------------------------

/**
 * One direction of the link: a token bucket (GCRA form) of `rate` bytes/s with `burst` bytes of
 * depth, shared by every connection, so that parallel connections share the bandwidth as on a
 * real link. No rate: no limit.
 */
class Direction {
  bytes = 0;
  private rate: number | undefined;
  private readonly burst = 64 * 1024;
  private free = 0; // time (ms) at which everything sent so far has left the bucket

  setRate(bytesPerSec: number | undefined): void {
    this.rate = bytesPerSec;
    this.free = 0;
  }

  /** Resolves when `n` bytes may go out. */
  async take(n: number): Promise<void> {
    this.bytes += n;
    if (this.rate === undefined) return;
    const now = performance.now();
    const perByteMs = 1000 / this.rate;
    this.free = Math.max(this.free, now - this.burst * perByteMs) + n * perByteMs;
    const wait = this.free - now;
    if (wait >= 1) await sleep(wait);
  }
}

interface ProxyCounters { down: number; up: number; connections: number }

class LinkProxy {
  readonly down = new Direction(); // registry -> clients
  readonly up = new Direction(); // clients -> registry
  connections = 0;
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  port = 0;

  constructor(private readonly upstreamPort: number) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  setLimit(mbit: number | undefined): void {
    const rate = mbit === undefined ? undefined : (mbit * 1e6) / 8;
    this.down.setRate(rate);
    this.up.setRate(rate);
  }

  counters(): ProxyCounters {
    return { down: this.down.bytes, up: this.up.bytes, connections: this.connections };
  }

  async start(): Promise<void> {
    this.server = createServer({ allowHalfOpen: true }, (client) => this.accept(client));
    this.port = await freePort();
    await new Promise<void>((resolve, reject) => {
      this.server?.once('error', reject);
      this.server?.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  private accept(client: Socket): void {
    this.connections++;
    const upstream = createConnection({ host: '127.0.0.1', port: this.upstreamPort, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.once('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    pump(client, upstream, this.up);
    pump(upstream, client, this.down);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server === undefined ? resolve() : this.server.close(() => resolve())));
  }
}

/** Copies `src` to `dst` through the direction's bucket, with backpressure and half-close. */
function pump(src: Socket, dst: Socket, dir: Direction): void {
  let chain = Promise.resolve();
  src.on('data', (chunk: Buffer) => {
    src.pause();
    chain = chain.then(async () => {
      await dir.take(chunk.length);
      if (dst.destroyed) return;
      if (!dst.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            dst.off('drain', done);
            dst.off('close', done);
            resolve();
          };
          dst.on('drain', done);
          dst.on('close', done);
        });
      }
      src.resume();
    });
  });
  src.on('end', () => { void chain.then(() => { if (!dst.destroyed) dst.end(); }); });
}

// ---- the image ----------------------------------------------------------------------------------

/** debootstrap minbase + python3 (the shared cached build) + EXTRA_PACKAGES, flattened to one tar. */
function largeDebianRootfsTar(engine: TestDockerd, logDir: string): string {
  if (existsSync(LARGE_TAR)) return LARGE_TAR;
  const base = 'cryo-bench/debian-base:build';
  const name = `cryo-bench-build-${randomBytes(4).toString('hex')}`;
  const log = join(logDir, 'image-build.log');
  const docker = (args: string[]): void => {
    const fd = openSync(log, 'a');
    try {
      execFileSync(DOCKER_BIN, ['-H', engine.host, ...args], { stdio: ['ignore', fd, fd], timeout: 900_000 });
    } finally {
      closeSync(fd);
    }
  };
  console.error(`building ${LARGE_TAR} (once): debian+python3 + ${EXTRA_PACKAGES.join(' ')}; log ${log}`);
  docker(['import', '-c', `ENV ${PATH_ENV}`, debianRootfsTar(), base]);
  try {
    docker(['run', '--name', name, '--network', 'host', '-e', 'DEBIAN_FRONTEND=noninteractive', base, 'sh', '-ec',
      `apt-get update; apt-get install -y --no-install-recommends ${EXTRA_PACKAGES.join(' ')}; apt-get clean; rm -rf /var/lib/apt/lists/*`]);
    docker(['export', '-o', `${LARGE_TAR}.tmp`, name]);
    execFileSync('mv', [`${LARGE_TAR}.tmp`, LARGE_TAR]);
  } finally {
    try { docker(['rm', '-f', name]); } catch { /* never created */ }
    try { docker(['rmi', '-f', base]); } catch { /* already gone */ }
    rmSync(`${LARGE_TAR}.tmp`, { force: true });
  }
  return LARGE_TAR;
}

// ---- a two-host cluster whose registry address is the proxy --------------------------------------

interface Obj { [k: string]: unknown }
const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null ? v as Obj : {});
const secret = (prefix: string): string => `${prefix}-${randomBytes(12).toString('hex')}`;

interface Bench {
  dir: string;
  registry: TestRegistry;
  proxy: LinkProxy;
  engines: Map<string, TestDockerd>;
  procs: CryoProcess[];
  stateDir(host: string): string;
  registryUser: string;
  registryPassword: string;
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: Obj }>;
}

async function startBench(dir: string, cleanups: Array<() => Promise<void>>): Promise<Bench> {
  const apiKey = secret('apikey');
  const executorToken = secret('exectoken');
  const registryUser = 'cryouser';
  const registryPassword = secret('regpass');
  const registry = await startRegistry({ htpasswd: { username: registryUser, password: registryPassword } });
  cleanups.push(() => registry.destroy());
  const proxy = new LinkProxy(registry.port);
  await proxy.start();
  cleanups.push(() => proxy.stop());
  const port = await freePort();
  const serverUrl = `http://127.0.0.1:${port}`;
  const registryBlock = (password: string): string => `
snapshot_registry:
  url: "${proxy.host}"
  repository: "cryo/snapshots"
  username: "${registryUser}"
  password: "${password}"
  insecure: true
`;
  const procs: CryoProcess[] = [];
  const engines = new Map<string, TestDockerd>();
  cleanups.push(async () => {
    for (const p of [...procs].reverse()) await p.kill();
    for (const e of engines.values()) {
      await e.stop();
      rmSync(e.root, { recursive: true, force: true });
    }
  });
  for (const name of ['A', 'B']) engines.set(name, await startDockerd(`lz${name}-${port}`));

  const serverConfig = writeYaml(join(dir, 'server-config.yaml'), `
listen:
  host: 127.0.0.1
  port: ${port}
database: ${join(dir, 'server.db')}
auth:
  api_keys: ["${apiKey}"]
  executor_token: "\${CRYO_BENCH_EXECUTOR_TOKEN}"
executors:
  heartbeat_timeout_secs: 30
log_level: info
${registryBlock('${CRYO_BENCH_REGISTRY_PASSWORD}')}
`);
  procs.push(spawnCryo('server', 'cryo-server', serverConfig, dir, {
    CRYO_BENCH_EXECUTOR_TOKEN: executorToken,
    CRYO_BENCH_REGISTRY_PASSWORD: registryPassword,
  }));
  const api = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: Obj }> => {
    const res = await fetch(`${serverUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try { parsed = JSON.parse(text); } catch { /* keep the text */ }
    return { status: res.status, body: typeof parsed === 'object' && parsed !== null ? parsed as Obj : { text: parsed } };
  };
  await waitFor('server /healthz', async () => ((await fetch(`${serverUrl}/healthz`).catch(() => undefined))?.ok === true ? true : undefined), 60_000);

  const stateDir = (name: string): string => join(dir, `state-${name}`);
  for (const [name, engine] of engines) {
    const config = writeYaml(join(dir, `dataplane-${name}.yaml`), `
server_url: ${serverUrl}
executor_id: ${name}
token: "${executorToken}"
docker:
  host: ${engine.host}
  network: none
labels:
  host: ${name}
state_dir: ${stateDir(name)}
log_level: info
${registryBlock(registryPassword)}
`);
    procs.push(spawnCryo(`executor-${name}`, 'cryo-executor', config, dir));
  }
  await waitFor('executors A, B ready', async () => {
    const items = (obj((await api('GET', '/v1/executors')).body).items ?? []) as Array<{ executor_id: string; state: string }>;
    const ready = new Set(items.filter((e) => e.state === 'ready').map((e) => e.executor_id));
    return ready.has('A') && ready.has('B') ? true : undefined;
  }, 60_000);
  return { dir, registry, proxy, engines, procs, stateDir, registryUser, registryPassword, api };
}

// ---- helpers ------------------------------------------------------------------------------------

async function waitSandbox(bench: Bench, id: string, statuses: string[], everyMs = 20, timeoutMs = 300_000): Promise<Obj> {
  return waitFor(`sandbox ${id} in ${statuses.join('|')}`, async () => {
    const body = (await bench.api('GET', `${NS}/sandboxes/${id}`)).body;
    if (body.status === 'terminated' && !statuses.includes('terminated')) throw new Error(`sandbox ${id} terminated: ${JSON.stringify(body.outcome)}`);
    return statuses.includes(String(body.status)) ? body : undefined;
  }, timeoutMs, everyMs);
}

async function exec(bench: Bench, id: string, command: string[]): Promise<Obj> {
  const res = await bench.api('POST', `${NS}/sandboxes/${id}/exec`, { command, timeout_secs: 300 });
  if (res.status !== 200) throw new Error(`exec answered ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body;
}

/**
 * The docker CLI, asynchronously: the proxy lives in this process, so a synchronous call that
 * reaches the registry would wait forever on an event loop it blocks.
 */
function dockerOut(engine: TestDockerd, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(DOCKER_BIN, ['-H', engine.host, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8').trim());
      else reject(new Error(`docker ${args.join(' ')} exited ${code}: ${Buffer.concat(err).toString('utf8').trim()}`));
    });
    child.stdin.end(input ?? '');
  });
}

function emptyDir(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir)) rmSync(join(dir, entry), { recursive: true, force: true });
}

/** Host B holds nothing of the snapshot: no sandbox, no image, no cached index or span. */
async function makeCold(bench: Bench): Promise<void> {
  const engine = bench.engines.get('B');
  if (engine === undefined) throw new Error('no engine B');
  // A deleted sandbox reads `terminated` while the executor may still be removing its container.
  const gone = await waitFor('containers on B removed', async () => (await dockerOut(engine, ['ps', '-aq']) === '' ? true : undefined), 30_000, 200)
    .catch(() => false);
  if (!gone) {
    const containers = await dockerOut(engine, ['ps', '-aq']);
    if (containers !== '') await dockerOut(engine, ['rm', '-f', ...containers.split('\n')]);
  }
  const images = [...new Set((await dockerOut(engine, ['images', '-aq'])).split('\n').filter((s) => s !== ''))];
  if (images.length > 0) await dockerOut(engine, ['rmi', '-f', ...images]);
  if (await dockerOut(engine, ['images', '-aq']) !== '') throw new Error('engine B still holds images');
  emptyDir(join(bench.stateDir('B'), 'clip'));
  emptyDir(join(bench.stateDir('B'), 'clip-cache'));
  const left = mountsUnder(join(bench.stateDir('B'), 'lazy'));
  if (left.length > 0) throw new Error(`mounts left on B: ${left.map((m) => m.mountpoint).join(', ')}`);
}

interface Run {
  link: string;
  mode: 'eager' | 'lazy';
  round: number;
  /** restore call -> python3 exit */
  total_ms: number;
  /** restore call -> sandbox seen running */
  running_ms: number;
  /** the exec call alone */
  exec_ms: number;
  /** registry -> host bytes through the proxy, restore call -> python3 exit */
  fetched_bytes: number;
  /** host -> registry bytes in the same window */
  sent_bytes: number;
  connections: number;
  /** same, until the sandbox was deleted (catches late background reads) */
  fetched_until_delete: number;
  /** 1-minute load average when the round started (other work on the 2 cores shows here) */
  load1: number;
  /** lazy only: what the mount process's reader says it fetched (spans; the index is fetched by the executor) */
  reader?: Obj | undefined;
}

async function restoreOnce(bench: Bench, snapshotId: string, link: string, mode: 'eager' | 'lazy', round: number): Promise<Run> {
  await makeCold(bench);
  const load1 = loadavg()[0] ?? NaN;
  const c0 = bench.proxy.counters();
  const t0 = performance.now();
  const res = await bench.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: 'B', mode, command: ['sleep', 'infinity'] });
  if (res.status !== 202) throw new Error(`restore answered ${res.status}: ${JSON.stringify(res.body)}`);
  const sandboxId = String(res.body.sandbox_id);
  const running = await waitSandbox(bench, sandboxId, ['running']);
  const t1 = performance.now();
  const out = await exec(bench, sandboxId, ['python3', '-c', 'print(1)']);
  const t2 = performance.now();
  const execEnd = Date.now();
  const c1 = bench.proxy.counters();
  if (out.exit_code !== 0 || out.stdout !== '1\n') throw new Error(`python3 in ${sandboxId} (${mode}): ${JSON.stringify(out)}`);
  if (running.restore_mode !== mode) throw new Error(`sandbox ${sandboxId} runs in ${String(running.restore_mode)}, asked ${mode}`);
  // The mount process writes its fetch counters every 2 s: wait for a write after the exec.
  const status = mode === 'lazy'
    ? await waitFor('mount status after the exec', async () => {
      const s = readMountStatus(join(bench.stateDir('B'), 'lazy', sandboxId, 'mount.json'));
      return s !== undefined && s.fetch !== undefined && Date.parse(s.updated_at) >= execEnd ? s : undefined;
    }, 5_000, 100).catch(() => undefined)
    : undefined;
  await bench.api('DELETE', `${NS}/sandboxes/${sandboxId}`);
  await waitSandbox(bench, sandboxId, ['terminated'], 100);
  await waitFor(`mounts of ${sandboxId} gone`, async () => (listMounts().some((m) => m.mountpoint.includes(sandboxId)) ? undefined : true), 60_000);
  const c2 = bench.proxy.counters();
  const run: Run = {
    link, mode, round,
    total_ms: t2 - t0,
    running_ms: t1 - t0,
    exec_ms: t2 - t1,
    fetched_bytes: c1.down - c0.down,
    sent_bytes: c1.up - c0.up,
    connections: c1.connections - c0.connections,
    fetched_until_delete: c2.down - c0.down,
    load1,
    reader: status?.fetch === undefined ? undefined : { ...status.fetch },
  };
  console.error(`${link} ${mode} round ${round}: ${run.total_ms.toFixed(0)} ms (running after ${run.running_ms.toFixed(0)} ms, exec ${run.exec_ms.toFixed(0)} ms), `
    + `fetched ${mb(run.fetched_bytes)}${run.reader === undefined ? '' : ` (spans ${mb(Number(run.reader.bytes))} in ${String(run.reader.requests)} requests)`}, load ${load1.toFixed(2)}`);
  return run;
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

/** Last-resort cleanup of lazy sandboxes the API did not remove: runc containers, then mounts. */
async function sweepLazy(stateDir: string): Promise<void> {
  const runcRoot = join(stateDir, 'runc');
  if (existsSync(runcRoot)) {
    let ids: string[] = [];
    try { ids = execFileSync('runc', ['--root', runcRoot, 'list', '-q'], { encoding: 'utf8' }).split('\n').filter((s) => s !== ''); } catch { /* none */ }
    for (const id of ids) {
      try { execFileSync('runc', ['--root', runcRoot, 'delete', '-f', id], { stdio: 'ignore' }); } catch { /* gone */ }
    }
  }
  const lazyRoot = join(stateDir, 'lazy');
  for (const m of mountsUnder(lazyRoot).sort((a, b) => b.mountpoint.length - a.mountpoint.length)) {
    if (m.fstype.startsWith('fuse')) {
      const status = readMountStatus(join(m.mountpoint, '..', 'mount.json'));
      await stopMountProcess(status?.pid, m.mountpoint).catch(() => undefined);
    } else {
      await unmountPath(m.mountpoint).catch(() => undefined);
    }
  }
}

// ---- the run ------------------------------------------------------------------------------------

const dir = mkdtempSync('/var/tmp/cryo-bench-lazy-');
const cleanups: Array<() => Promise<void>> = [];
const started = performance.now();
let benchRef: Bench | undefined;
try {
  const bench = await startBench(dir, cleanups);
  benchRef = bench;
  const engineA = bench.engines.get('A');
  if (engineA === undefined) throw new Error('no engine A');

  mkdirSync(TEST_CACHE_DIR, { recursive: true });
  const tar = largeDebianRootfsTar(engineA, dir);
  const image = `${bench.proxy.host}/bench/debian-large:v1`;
  await dockerOut(engineA, ['import', '-c', `ENV ${PATH_ENV}`, tar, image]);
  const imageBytes = Number(await dockerOut(engineA, ['image', 'inspect', '-f', '{{.Size}}', image]));
  const dockerConfig = mkdtempSync(join(dir, 'docker-config-'));
  await dockerOut(engineA, ['--config', dockerConfig, 'login', '-u', bench.registryUser, '--password-stdin', bench.proxy.host], bench.registryPassword);
  let t = performance.now();
  await dockerOut(engineA, ['--config', dockerConfig, 'push', image]);
  console.error(`image ${image}: ${mb(imageBytes)} uncompressed (tar ${mb(statSync(tar).size)}), pushed in ${secs(performance.now() - t)}`);

  const created = await bench.api('POST', `${NS}/sandboxes`, { image, command: ['sleep', 'infinity'], executor_id: 'A' });
  if (created.status !== 201 && created.status !== 202) throw new Error(`create answered ${created.status}: ${JSON.stringify(created.body)}`);
  const sandboxA = String(created.body.sandbox_id);
  await waitSandbox(bench, sandboxA, ['running'], 200);
  const wrote = await exec(bench, sandboxA, ['sh', '-c', 'echo written-on-A > /root/hello.txt']);
  if (wrote.exit_code !== 0) throw new Error(`write on A: ${JSON.stringify(wrote)}`);
  t = performance.now();
  const snap = await bench.api('POST', `${NS}/sandboxes/${sandboxA}/snapshots`, { ttl_secs: 0 });
  if (snap.status !== 202) throw new Error(`snapshot answered ${snap.status}: ${JSON.stringify(snap.body)}`);
  const snapshotId = String(snap.body.snapshot_id);
  const indexed = await waitFor(`snapshot ${snapshotId} indexed`, async () => {
    const body = (await bench.api('GET', `${NS}/snapshots/${snapshotId}`)).body;
    if (body.status === 'failed' || (body.clip_error !== null && body.clip_error !== undefined)) {
      throw new Error(`snapshot ${snapshotId}: ${String(body.error ?? body.clip_error)}`);
    }
    return body.clip_index_ref !== null && body.clip_index_ref !== undefined ? body : undefined;
  }, 600_000, 200);
  const timings = obj(indexed.timings);
  console.error(`snapshot ${snapshotId} active and indexed in ${secs(performance.now() - t)}: ${String(indexed.clip_index_ref)} `
    + `(index_ms ${String(timings.index_ms)})`);
  await bench.api('DELETE', `${NS}/sandboxes/${sandboxA}`);

  const executors = (obj((await bench.api('GET', '/v1/executors')).body).items ?? []) as Array<{ executor_id: string; capabilities?: { lazy?: boolean } }>;
  if (executors.find((e) => e.executor_id === 'B')?.capabilities?.lazy !== true) throw new Error('executor B reports no lazy capability');

  const links: Array<{ name: string; mbit: number | undefined }> = [
    { name: 'loopback', mbit: undefined },
    { name: `${LINK_MBIT} Mbit/s`, mbit: LINK_MBIT },
  ];
  const runs: Run[] = [];
  for (const link of links) {
    bench.proxy.setLimit(link.mbit);
    for (let round = 1; round <= rounds; round++) {
      for (const mode of ['eager', 'lazy'] as const) runs.push(await restoreOnce(bench, snapshotId, link.name, mode, round));
    }
  }
  bench.proxy.setLimit(undefined);

  const rows: string[][] = [['link / mode', 'restore -> python3 exit (median, min..max)', 'of which until running', 'fetched from registry', 'sent']];
  const summary: Obj = {};
  for (const link of links) {
    const of = (mode: string): Run[] => runs.filter((r) => r.link === link.name && r.mode === mode);
    const med = (mode: string, key: 'total_ms' | 'running_ms' | 'fetched_bytes' | 'sent_bytes'): number => median(of(mode).map((r) => r[key]));
    for (const mode of ['eager', 'lazy']) {
      const totals = of(mode).map((r) => r.total_ms);
      rows.push([`${link.name} ${mode}`, `${secs(med(mode, 'total_ms'))} (${secs(Math.min(...totals))}..${secs(Math.max(...totals))})`,
        secs(med(mode, 'running_ms')), mb(med(mode, 'fetched_bytes')), mb(med(mode, 'sent_bytes'))]);
    }
    const speedup = med('eager', 'total_ms') / med('lazy', 'total_ms');
    rows.push([`${link.name}: lazy speed-up (eager / lazy)`, `${speedup.toFixed(2)}x`, '', `${(med('eager', 'fetched_bytes') / med('lazy', 'fetched_bytes')).toFixed(1)}x fewer bytes`]);
    summary[link.name] = {
      eager_ms: med('eager', 'total_ms'), lazy_ms: med('lazy', 'total_ms'), speedup,
      eager_fetched: med('eager', 'fetched_bytes'), lazy_fetched: med('lazy', 'fetched_bytes'),
    };
  }
  printTable(`Restore of a ${mb(imageBytes)} Debian image on a cold host -> python3 -c 'print(1)' exits; medians of ${rounds} rounds`, rows);
  const throttled = obj(summary[links[1]?.name ?? '']);
  const loop = obj(summary[links[0]?.name ?? '']);
  console.log(`  targets: throttled speed-up ${Number(throttled.speedup).toFixed(2)}x (>= 5x: ${Number(throttled.speedup) >= 5 ? 'met' : 'MISSED'}), `
    + `loopback lazy ${Number(loop.lazy_ms) <= Number(loop.eager_ms) ? 'not slower (met)' : 'SLOWER (missed)'}`);
  console.log(`  whole run ${secs(performance.now() - started)}`);
  writeResult('lazy-restore', {
    rounds, link_mbit: LINK_MBIT, image_uncompressed_bytes: imageBytes, image_tar_bytes: statSync(tar).size,
    extra_packages: EXTRA_PACKAGES, snapshot: { id: snapshotId, clip_index_ref: indexed.clip_index_ref, timings },
    summary, runs,
  });
} finally {
  // Lazy sandboxes outlive their executor (detached mount processes, runc containers): end them
  // through the API first, then stop everything, then sweep whatever is left.
  if (benchRef !== undefined) {
    const list = obj((await benchRef.api('GET', `${NS}/sandboxes?limit=500`).catch(() => ({ body: {} }))).body).items;
    for (const s of (Array.isArray(list) ? list : []) as Array<{ sandbox_id: string; status: string }>) {
      if (s.status === 'terminated') continue;
      await benchRef.api('DELETE', `${NS}/sandboxes/${s.sandbox_id}`).catch(() => undefined);
      await waitSandbox(benchRef, s.sandbox_id, ['terminated'], 200, 60_000).catch(() => undefined);
    }
  }
  for (const cleanup of cleanups.reverse()) {
    await cleanup().catch((err: unknown) => console.error(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
  }
  await sweepLazy(join(dir, 'state-B'));
  await sweepLazy(join(dir, 'state-A'));
  await killAll();
  const left = mountsUnder(dir);
  if (left.length > 0) console.error(`mounts left under ${dir}: ${left.map((m) => m.mountpoint).join(', ')}`);
  else rmSync(dir, { recursive: true, force: true });
}
