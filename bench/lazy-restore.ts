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
 * reads alike, crosses it: the cluster is test/support's startCluster with the proxy as its
 * registryFront. The bench talks to the server with the typed CryoClient of @cryo/cli.
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
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { CryoClient } from '@cryo/cli';
import type { Sandbox } from '@cryo/snapshot';
import { listMounts, mountsUnder, readMountStatus, type MountStatus } from '@cryo/clip/fuse';
import { TEST_CACHE_DIR } from '../libs/clip/src/testing/debian';
import { startCluster, type Cluster } from '../test/support/cluster';
import { type TestDockerd } from '../test/support/dockerd';
import { dockerAsync } from '../test/support/images';
import { killAll, waitFor } from '../test/support/processes';
import { emptyDir, sweepLazy } from './bench-cluster';
import { EXTRA_PACKAGES, PATH_ENV, largeDebianRootfsTar } from './large-image';
import { LinkProxy, linkProxyFront } from './link-proxy';
import { median, printTable, writeResult } from './report';

const rounds = Number(process.argv[2] ?? 3);
const LINK_MBIT = 100;
const NAMESPACE = 'bench-lazy';
// ---- helpers ------------------------------------------------------------------------------------

interface Bench { cluster: Cluster; client: CryoClient; proxy: LinkProxy }

/** Polls every `everyMs` until the sandbox is running; a sandbox that terminated instead fails. */
async function running(bench: Bench, id: string, everyMs = 20): Promise<Sandbox> {
  const sandbox = await bench.client.waitForSandbox(id, { intervalMs: everyMs, timeoutMs: 300_000 });
  if (sandbox.status !== 'running') throw new Error(`sandbox ${id} terminated: ${JSON.stringify(sandbox.outcome)}`);
  return sandbox;
}

async function remove(bench: Bench, id: string): Promise<void> {
  await bench.client.deleteSandbox(id);
  await bench.client.waitForSandbox(id, { until: ['terminated'], intervalMs: 100, timeoutMs: 60_000 });
}

/**
 * The docker CLI, asynchronously: the proxy lives in this process, so a synchronous call that
 * reaches the registry would wait forever on an event loop it blocks.
 */
function dockerOut(engine: TestDockerd, args: string[], input?: string): Promise<string> {
  return dockerAsync(engine.host, args, input);
}

/** Host B holds nothing of the snapshot: no sandbox, no image, no cached index or span. */
async function makeCold(bench: Bench): Promise<void> {
  const engine = bench.cluster.engines.get('B');
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
  const stateB = bench.cluster.stateDir('B');
  emptyDir(join(stateB, 'clip'));
  emptyDir(join(stateB, 'clip-cache'));
  const left = mountsUnder(join(stateB, 'lazy'));
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
  reader?: MountStatus['fetch'];
}

async function restoreOnce(bench: Bench, snapshotId: string, link: string, mode: 'eager' | 'lazy', round: number): Promise<Run> {
  await makeCold(bench);
  const load1 = loadavg()[0] ?? NaN;
  const c0 = bench.proxy.counters();
  const t0 = performance.now();
  const { sandbox_id: sandboxId } = await bench.client.restoreSnapshot(snapshotId, { executor_id: 'B', mode, command: ['sleep', 'infinity'] });
  const sandbox = await running(bench, sandboxId);
  const t1 = performance.now();
  const out = await bench.client.exec(sandboxId, { command: ['python3', '-c', 'print(1)'], timeout_secs: 300 });
  const t2 = performance.now();
  const execEnd = Date.now();
  const c1 = bench.proxy.counters();
  if (out.exit_code !== 0 || out.stdout !== '1\n') throw new Error(`python3 in ${sandboxId} (${mode}): ${JSON.stringify(out)}`);
  if (sandbox.restore_mode !== mode) throw new Error(`sandbox ${sandboxId} runs in ${String(sandbox.restore_mode)}, asked ${mode}`);
  // The mount process writes its fetch counters every 2 s: wait for a write after the exec.
  const status = mode === 'lazy'
    ? await waitFor('mount status after the exec', async () => {
      const s = readMountStatus(join(bench.cluster.stateDir('B'), 'lazy', sandboxId, 'mount.json'));
      return s !== undefined && s.fetch !== undefined && Date.parse(s.updated_at) >= execEnd ? s : undefined;
    }, 5_000, 100).catch(() => undefined)
    : undefined;
  await remove(bench, sandboxId);
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
    reader: status?.fetch,
  };
  console.error(`${link} ${mode} round ${round}: ${run.total_ms.toFixed(0)} ms (running after ${run.running_ms.toFixed(0)} ms, exec ${run.exec_ms.toFixed(0)} ms), `
    + `fetched ${mb(run.fetched_bytes)}${run.reader === undefined ? '' : ` (spans ${mb(run.reader.bytes)} in ${run.reader.requests} requests)`}, load ${load1.toFixed(2)}`);
  return run;
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

// ---- the run ------------------------------------------------------------------------------------

const dir = mkdtempSync('/var/tmp/cryo-bench-lazy-');
const started = performance.now();
let proxy: LinkProxy | undefined;
let bench: Bench | undefined;
try {
  const cluster = await startCluster({
    hosts: [{ name: 'A' }, { name: 'B' }],
    heartbeatTimeoutSecs: 30,
    logLevel: 'info',
    registryFront: linkProxyFront((p) => {
      proxy = p;
    }),
  });
  if (proxy === undefined) throw new Error('the cluster started without its registry proxy');
  bench = { cluster, client: cluster.client(NAMESPACE), proxy };
  const engineA = cluster.engines.get('A');
  if (engineA === undefined) throw new Error('no engine A');

  mkdirSync(TEST_CACHE_DIR, { recursive: true });
  const tar = largeDebianRootfsTar(engineA, dir);
  const image = `${proxy.host}/bench/debian-large:v1`;
  await dockerOut(engineA, ['import', '-c', `ENV ${PATH_ENV}`, tar, image]);
  const imageBytes = Number(await dockerOut(engineA, ['image', 'inspect', '-f', '{{.Size}}', image]));
  const dockerConfig = mkdtempSync(join(dir, 'docker-config-'));
  await dockerOut(engineA, ['--config', dockerConfig, 'login', '-u', cluster.registryUser, '--password-stdin', proxy.host], cluster.registryPassword);
  let t = performance.now();
  await dockerOut(engineA, ['--config', dockerConfig, 'push', image]);
  console.error(`image ${image}: ${mb(imageBytes)} uncompressed (tar ${mb(statSync(tar).size)}), pushed in ${secs(performance.now() - t)}`);

  const { sandbox_id: sandboxA } = await bench.client.createSandbox({ image, command: ['sleep', 'infinity'], executor_id: 'A' });
  await running(bench, sandboxA, 200);
  const wrote = await bench.client.exec(sandboxA, { command: ['sh', '-c', 'echo written-on-A > /root/hello.txt'] });
  if (wrote.exit_code !== 0) throw new Error(`write on A: ${JSON.stringify(wrote)}`);
  t = performance.now();
  const { snapshot_id: snapshotId } = await bench.client.createSnapshot(sandboxA, { ttl_secs: 0 });
  const { client } = bench;
  const indexed = await waitFor(`snapshot ${snapshotId} indexed`, async () => {
    const snap = await client.getSnapshot(snapshotId);
    if (snap.status === 'failed' || snap.clip_error !== null) throw new Error(`snapshot ${snapshotId}: ${snap.error ?? snap.clip_error}`);
    return snap.clip_index_ref !== null ? snap : undefined;
  }, 600_000, 200);
  console.error(`snapshot ${snapshotId} active and indexed in ${secs(performance.now() - t)}: ${indexed.clip_index_ref} `
    + `(index_ms ${String(indexed.timings.index_ms)})`);
  await remove(bench, sandboxA);

  const executors = (await bench.client.listExecutors()).items;
  if (executors.find((e) => e.executor_id === 'B')?.capabilities.lazy !== true) throw new Error('executor B reports no lazy capability');

  const links: Array<{ name: string; mbit: number | undefined }> = [
    { name: 'loopback', mbit: undefined },
    { name: `${LINK_MBIT} Mbit/s`, mbit: LINK_MBIT },
  ];
  const runs: Run[] = [];
  for (const link of links) {
    proxy.setLimit(link.mbit);
    for (let round = 1; round <= rounds; round++) {
      for (const mode of ['eager', 'lazy'] as const) runs.push(await restoreOnce(bench, snapshotId, link.name, mode, round));
    }
  }
  proxy.setLimit(undefined);

  const rows: string[][] = [['link / mode', 'restore -> python3 exit (median, min..max)', 'of which until running', 'fetched from registry', 'sent']];
  const summary: Record<string, { eager_ms: number; lazy_ms: number; speedup: number; eager_fetched: number; lazy_fetched: number }> = {};
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
  const [loop, throttled] = links.map((l) => summary[l.name] ?? { eager_ms: NaN, lazy_ms: NaN, speedup: NaN });
  console.log(`  targets: throttled speed-up ${throttled?.speedup.toFixed(2)}x (>= 5x: ${Number(throttled?.speedup) >= 5 ? 'met' : 'MISSED'}), `
    + `loopback lazy ${Number(loop?.lazy_ms) <= Number(loop?.eager_ms) ? 'not slower (met)' : 'SLOWER (missed)'}`);
  console.log(`  whole run ${secs(performance.now() - started)}`);
  writeResult('lazy-restore', {
    rounds, link_mbit: LINK_MBIT, image_uncompressed_bytes: imageBytes, image_tar_bytes: statSync(tar).size,
    extra_packages: EXTRA_PACKAGES, snapshot: { id: snapshotId, clip_index_ref: indexed.clip_index_ref, timings: indexed.timings },
    summary, runs,
  });
} finally {
  // Lazy sandboxes outlive their executor (detached mount processes, runc containers): end them
  // through the API first, then stop everything, then sweep whatever is left.
  if (bench !== undefined) {
    const left = await bench.client.listAllSandboxes().catch(() => []);
    for (const s of left.filter((sb) => sb.status !== 'terminated')) await remove(bench, s.sandbox_id).catch(() => undefined);
    await bench.cluster.stop().catch((err: unknown) => console.error(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
    for (const host of ['B', 'A']) await sweepLazy(bench.cluster.stateDir(host));
  }
  await proxy?.stop();
  await killAll();
  for (const d of [dir, bench?.cluster.dir]) {
    const left = d === undefined ? [] : mountsUnder(d);
    if (left.length > 0) console.error(`mounts left under ${d}: ${left.map((m) => m.mountpoint).join(', ')}`);
    else if (d !== undefined) rmSync(d, { recursive: true, force: true });
  }
}
