/**
 * Issue 12 benchmark: fork 10 sandboxes from one snapshot of the Debian bookworm + python3 image
 * (the cached debootstrap root filesystem, libs/clip/src/testing/debian.ts), measured from the
 * fork API call until all 10 have run their first exec (`python3 -c 'print(1)'`, each exec sent
 * as soon as its sandbox is seen running), eager against lazy, on one host (executor_ids [A]) and
 * spread over two (A and B), in one run.
 *
 * For reference, one fork alone on host A (eager and lazy) in each round: what a fork costs when
 * it does not share the host's cores with nine others.
 *
 * Host A took the snapshot, so its engine holds the snapshot image (an eager fork there creates
 * containers from it); host B starts cold every round: no image in its engine, no cached clip
 * index or span. Both hosts' clip caches (index and spans) are emptied before every round, so a
 * lazy fork always reads through the registry. Layouts and modes alternate round by round; the
 * 1-minute load average is recorded at the start of each round (the machine's 2 cores are shared).
 *
 *   npx tsx bench/fork.ts [rounds]        (npm run bench -- fork; default 2 rounds per case)
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { CryoClient } from '@cryo/cli';
import { listMounts, mountsUnder } from '@cryo/clip/fuse';
import { debianRootfsTar } from '../libs/clip/src/testing/debian';
import { startCluster, type Cluster } from '../test/support/cluster';
import { dockerAsync } from '../test/support/images';
import { killAll, waitFor } from '../test/support/processes';
import { median, printTable, writeResult } from './report';

const rounds = Number(process.argv[2] ?? 2);
const COUNT = 10;
const NAMESPACE = 'bench-fork';
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

type Mode = 'eager' | 'lazy';
type Layout = 'one host' | 'two hosts';

interface Case {
  layout: Layout;
  mode: Mode;
  count: number;
}

const caseName = (c: Case): string => `${c.layout} ${c.mode}${c.count === COUNT ? '' : ` (${c.count} fork${c.count === 1 ? '' : 's'})`}`;

interface Run extends Case {
  round: number;
  /** fork call -> the last first exec returned */
  all_exec_ms: number;
  /** fork call -> the last sandbox seen running */
  all_running_ms: number;
  /** fork call -> each fork's first exec returned, sorted */
  per_fork_ms: number[];
  executors: Record<string, number>;
  load1: number;
  /** lazy only: the executors' own phase times per fork (log line "lazy sandbox started"), medians */
  lazy_phases?: { mount_ms: number; overlay_ms: number; run_ms: number; total_ms: number };
}

/** Medians of the runc-lazy driver's phase times for these sandboxes, read from the executors' logs. */
function lazyPhases(cluster: Cluster, sandboxIds: string[]): Run['lazy_phases'] {
  const wanted = new Set(sandboxIds);
  const phases: Array<{ mount_ms: number; overlay_ms: number; run_ms: number; total_ms: number }> = [];
  for (const line of cluster.logs().split('\n')) {
    if (!line.includes('lazy sandbox started')) continue;
    try {
      const entry = JSON.parse(line) as { sandbox_id?: string; mount_ms: number; overlay_ms: number; run_ms: number; total_ms: number };
      if (entry.sandbox_id !== undefined && wanted.has(entry.sandbox_id)) phases.push(entry);
    } catch {
      // not a JSON line
    }
  }
  if (phases.length === 0) return undefined;
  const of = (key: 'mount_ms' | 'overlay_ms' | 'run_ms' | 'total_ms'): number => median(phases.map((p) => p[key]));
  return { mount_ms: of('mount_ms'), overlay_ms: of('overlay_ms'), run_ms: of('run_ms'), total_ms: of('total_ms') };
}

function emptyDir(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir)) rmSync(join(dir, entry), { recursive: true, force: true });
}

/** B holds nothing of the snapshot; neither host has a cached clip index or span. */
async function coldStart(cluster: Cluster): Promise<void> {
  const engine = cluster.engines.get('B');
  if (engine === undefined) throw new Error('no engine B');
  await waitFor('containers on B removed', async () => (await dockerAsync(engine.host, ['ps', '-aq']) === '' ? true : undefined), 60_000, 200);
  const images = [...new Set((await dockerAsync(engine.host, ['images', '-aq'])).split('\n').filter((s) => s !== ''))];
  if (images.length > 0) await dockerAsync(engine.host, ['rmi', '-f', ...images]);
  for (const host of ['A', 'B']) {
    if (mountsUnder(join(cluster.stateDir(host), 'lazy')).length > 0) throw new Error(`lazy mounts left on ${host}`);
    emptyDir(join(cluster.stateDir(host), 'clip'));
    emptyDir(join(cluster.stateDir(host), 'clip-cache'));
  }
}

async function forkOnce(client: CryoClient, cluster: Cluster, snapshotId: string, { layout, mode, count }: Case, round: number): Promise<Run> {
  await coldStart(cluster);
  const load1 = loadavg()[0] ?? NaN;
  const t0 = performance.now();
  const answer = await client.forkSnapshot(snapshotId, {
    count, mode, executor_ids: layout === 'one host' ? ['A'] : ['A', 'B'], command: ['sleep', 'infinity'],
  });
  const forks = answer.sandboxes;
  let lastRunning = 0;
  const perFork = await Promise.all(forks.map(async (fork) => {
    const sandbox = await client.waitForSandbox(fork.sandbox_id, { intervalMs: 50, timeoutMs: 600_000 });
    if (sandbox.status !== 'running') throw new Error(`fork ${fork.sandbox_id} (${mode}, ${layout}) terminated: ${JSON.stringify(sandbox.outcome)}`);
    lastRunning = Math.max(lastRunning, performance.now() - t0);
    const out = await client.exec(fork.sandbox_id, { command: ['python3', '-c', 'print(1)'], timeout_secs: 600 });
    if (out.exit_code !== 0 || out.stdout !== '1\n') throw new Error(`python3 in ${fork.sandbox_id} (${mode}): ${JSON.stringify(out)}`);
    return performance.now() - t0;
  }));
  const executors: Record<string, number> = {};
  for (const fork of forks) executors[fork.executor_id ?? '-'] = (executors[fork.executor_id ?? '-'] ?? 0) + 1;
  const run: Run = {
    layout, mode, count, round, all_exec_ms: Math.max(...perFork), all_running_ms: lastRunning,
    per_fork_ms: perFork.sort((a, b) => a - b), executors, load1,
    ...(mode === 'lazy' ? { lazy_phases: lazyPhases(cluster, forks.map((f) => f.sandbox_id)) } : {}),
  };
  console.error(`${caseName({ layout, mode, count })} round ${round}: all ${count} first execs after ${secs(run.all_exec_ms)} (all running after ${secs(run.all_running_ms)}; `
    + `first exec ${secs(run.per_fork_ms[0] ?? NaN)}), executors ${JSON.stringify(executors)}, load ${load1.toFixed(2)}`
    + `${run.lazy_phases === undefined ? '' : `; lazy phases (median per fork) ${JSON.stringify(run.lazy_phases)}`}`);
  for (const fork of forks) await client.deleteSandbox(fork.sandbox_id);
  for (const fork of forks) await client.waitForSandbox(fork.sandbox_id, { until: ['terminated'], intervalMs: 100, timeoutMs: 120_000 });
  await waitFor('fork mounts gone', async () => (forks.some((f) => listMounts().some((m) => m.mountpoint.includes(f.sandbox_id))) ? undefined : true), 120_000);
  return run;
}

const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

const dir = mkdtempSync('/var/tmp/cryo-bench-fork-');
const started = performance.now();
let cluster: Cluster | undefined;
let client: CryoClient | undefined;
try {
  console.error(`load at start: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  cluster = await startCluster({ hosts: [{ name: 'A' }, { name: 'B' }], heartbeatTimeoutSecs: 60, logLevel: 'info' });
  const registry = cluster.registry;
  const engineA = cluster.engines.get('A');
  if (registry === undefined || engineA === undefined) throw new Error('cluster incomplete');
  client = cluster.client(NAMESPACE);

  const tar = debianRootfsTar();
  const image = `${registry.host}/bench/debian-python3:v1`;
  await dockerAsync(engineA.host, ['import', '-c', `ENV ${PATH_ENV}`, tar, image]);
  const imageBytes = Number(await dockerAsync(engineA.host, ['image', 'inspect', '-f', '{{.Size}}', image]));
  const dockerConfig = mkdtempSync(join(dir, 'docker-config-'));
  await dockerAsync(engineA.host, ['--config', dockerConfig, 'login', '-u', cluster.registryUser, '--password-stdin', registry.host], cluster.registryPassword);
  await dockerAsync(engineA.host, ['--config', dockerConfig, 'push', image]);

  const { sandbox_id: source } = await client.createSandbox({ image, command: ['sleep', 'infinity'], executor_id: 'A' });
  await client.waitForSandbox(source, { intervalMs: 200, timeoutMs: 300_000 });
  const wrote = await client.exec(source, { command: ['sh', '-c', 'echo forked > /root/state.txt'] });
  if (wrote.exit_code !== 0) throw new Error(`write on A: ${JSON.stringify(wrote)}`);
  const { snapshot_id: snapshotId } = await client.createSnapshot(source, { ttl_secs: 0 });
  const api = client;
  const indexed = await waitFor(`snapshot ${snapshotId} indexed`, async () => {
    const snap = await api.getSnapshot(snapshotId);
    if (snap.status === 'failed' || snap.clip_error !== null) throw new Error(`snapshot ${snapshotId}: ${snap.error ?? snap.clip_error}`);
    return snap.clip_index_ref !== null ? snap : undefined;
  }, 600_000, 200);
  console.error(`image ${image}: ${mb(imageBytes)} (tar ${mb(statSync(tar).size)}); snapshot ${snapshotId} indexed (index_ms ${String(indexed.timings.index_ms)})`);
  await client.deleteSandbox(source);
  await client.waitForSandbox(source, { until: ['terminated'], intervalMs: 100, timeoutMs: 60_000 });
  const lazyOk = (await client.listExecutors()).items.every((e) => e.capabilities.lazy);
  if (!lazyOk) throw new Error('an executor reports no lazy capability (FUSE, runc); this benchmark needs both');

  const cases: Case[] = [];
  for (const layout of ['one host', 'two hosts'] as const) for (const mode of ['eager', 'lazy'] as const) cases.push({ layout, mode, count: COUNT });
  for (const mode of ['eager', 'lazy'] as const) cases.push({ layout: 'one host', mode, count: 1 });
  const runs: Run[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const c of round % 2 === 1 ? cases : [...cases].reverse()) runs.push(await forkOnce(client, cluster, snapshotId, c, round));
  }

  const rows: string[][] = [['case', 'fork -> all first execs (median, min..max)', 'fork -> all running', 'fastest fork\'s first exec', 'lazy mount / total per fork', 'load1']];
  const summary: Record<string, { all_exec_ms: number; all_running_ms: number }> = {};
  for (const c of cases) {
    const of = runs.filter((r) => r.layout === c.layout && r.mode === c.mode && r.count === c.count);
    const all = of.map((r) => r.all_exec_ms);
    const key = caseName(c);
    summary[key] = { all_exec_ms: median(all), all_running_ms: median(of.map((r) => r.all_running_ms)) };
    rows.push([key, `${secs(median(all))} (${secs(Math.min(...all))}..${secs(Math.max(...all))})`, secs(median(of.map((r) => r.all_running_ms))),
      secs(median(of.map((r) => r.per_fork_ms[0] ?? NaN))),
      c.mode === 'lazy' ? `${secs(median(of.map((r) => r.lazy_phases?.mount_ms ?? NaN)))} / ${secs(median(of.map((r) => r.lazy_phases?.total_ms ?? NaN)))}` : '-',
      of.map((r) => r.load1.toFixed(1)).join(', ')]);
  }
  const ratio = (a: string, b: string): string => ((summary[a]?.all_exec_ms ?? NaN) / (summary[b]?.all_exec_ms ?? NaN)).toFixed(2);
  rows.push(['eager / lazy, one host', `${ratio('one host eager', 'one host lazy')}x`]);
  rows.push(['eager / lazy, two hosts', `${ratio('two hosts eager', 'two hosts lazy')}x`]);
  rows.push(['two hosts / one host, eager', `${ratio('two hosts eager', 'one host eager')}x`]);
  rows.push(['two hosts / one host, lazy', `${ratio('two hosts lazy', 'one host lazy')}x`]);
  rows.push(['10 forks / 1 fork, one host, eager', `${ratio('one host eager', 'one host eager (1 fork)')}x`]);
  rows.push(['10 forks / 1 fork, one host, lazy', `${ratio('one host lazy', 'one host lazy (1 fork)')}x`]);
  printTable(`Fork ${COUNT} from one snapshot of a ${mb(imageBytes)} Debian + python3 image -> every fork's first python3 exec; medians of ${rounds} rounds`, rows);
  console.log(`  whole run ${secs(performance.now() - started)}; load at the end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  writeResult('fork', { rounds, count: COUNT, image_uncompressed_bytes: imageBytes, snapshot: { id: snapshotId, timings: indexed.timings }, summary, runs });
} finally {
  if (client !== undefined) {
    const left = await client.listAllSandboxes().catch(() => []);
    for (const s of left.filter((sb) => sb.status !== 'terminated')) await client.deleteSandbox(s.sandbox_id).catch(() => undefined);
    for (const s of left) await client.waitForSandbox(s.sandbox_id, { until: ['terminated'], intervalMs: 200, timeoutMs: 60_000 }).catch(() => undefined);
    await waitFor('lazy mounts gone', async () => (mountsUnder(cluster?.dir ?? dir).length === 0 ? true : undefined), 60_000).catch(() => undefined);
  }
  await cluster?.stop().catch((err: unknown) => console.error(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
  await killAll();
  for (const d of [dir, cluster?.dir]) {
    const left = d === undefined ? [] : mountsUnder(d);
    if (left.length > 0) console.error(`mounts left under ${d}: ${left.map((m) => m.mountpoint).join(', ')}`);
    else if (d !== undefined) rmSync(d, { recursive: true, force: true });
  }
}
