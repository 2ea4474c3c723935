/**
 * Issue 5 and 10 benchmark: time to first exec of a restored snapshot of a large image, lazy
 * (clip index over FUSE + overlay + runc) against eager (docker pull + create + start), on a host
 * whose Docker engine holds none of the image's layers, measured as API restore call -> exit of
 * the first exec (POST .../exec): `python3 -c 'print(1)'` and the import-heavy
 * `python3 -c 'import numpy; ...'`, with the registry on loopback and again behind a ~100 Mbit/s
 * link. Lazy restores come twice per round: first without an access record (the bench deletes
 * `<tag>.access`; this restore records and pushes one), then with the record the first one
 * pushed (prefetched). Also the bytes fetched from the registry for each, and for lazy ones what
 * the mount fetched by reason and what the program read (its access record).
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
 * (state_dir/clip-cache) emptied. Per link, command and round: eager, lazy-first, lazy-second.
 *
 *   npx tsx bench/lazy-restore.ts [rounds]        (default 3 rounds per mode and link)
 *
 * The image: the cached debootstrap bookworm + python3 root filesystem
 * (libs/clip/src/testing/debian.ts) with more packages installed on top (apt-get in a container
 * on host A's engine, exported once and cached as a tarball under /var/tmp/cryo-test-cache).
 * The first run builds it (a few minutes, needs Debian's mirror); later runs reuse it.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { CryoClient } from '@cryo/cli';
import type { Sandbox } from '@cryo/snapshot';
import { listMounts, mountsUnder, readMountStatus, requestAccessRecord, type MountAccessOut, type MountStatus } from '@cryo/clip/fuse';
import { RegistryClient, parseImageReference } from '@cryo/oci';
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

/** The first exec after the restore: a trivial program and an import-heavy one. */
const COMMANDS = [
  { name: 'print(1)', argv: ['python3', '-c', 'print(1)'], check: (out: string): boolean => out === '1\n' },
  { name: 'import numpy', argv: ['python3', '-c', 'import numpy; print(numpy.__version__)'], check: (out: string): boolean => /^\d+\.\d+/.test(out) },
] as const;
type Command = (typeof COMMANDS)[number];
/**
 * eager: docker pull + run. lazy-first: a lazy restore of an image without an access record (the
 * bench deletes `<tag>.access` first), which records one. lazy-second: a lazy restore that finds
 * the record the lazy-first round before it pushed (same command), and prefetches it.
 */
type Mode = 'eager' | 'lazy-first' | 'lazy-second';
const MODES: Mode[] = ['eager', 'lazy-first', 'lazy-second'];

interface Run {
  link: string;
  command: string;
  mode: Mode;
  round: number;
  /** restore call -> command exit */
  total_ms: number;
  /** restore call -> sandbox seen running */
  running_ms: number;
  /** the exec call alone */
  exec_ms: number;
  /** registry -> host bytes through the proxy, restore call -> command exit */
  fetched_bytes: number;
  /** host -> registry bytes in the same window */
  sent_bytes: number;
  connections: number;
  /** same, until the sandbox was deleted (catches late background reads) */
  fetched_until_delete: number;
  /** 1-minute load average when the round started (other work on the 2 cores shows here) */
  load1: number;
  /** lazy only: the executor's mount step (asked -> mounted), from its log */
  mount_ms?: number;
  /** lazy only: what the mount process's reader says it fetched (spans; the index is fetched by the executor) */
  reader?: MountStatus['fetch'];
  /** lazy only: range requests and their compressed bytes by reason (demand, readahead, prefetch, background) */
  reasons?: NonNullable<MountStatus['fetch_reasons']>['requests'];
  /** lazy only: bytes the mount served to the kernel (what programs read, plus the kernel's readahead) */
  fuse_bytes_read?: number;
  /** lazy only: files read and the bytes of the ranges read, from the mount's access record */
  record_files?: number;
  record_bytes?: number;
  /** lazy-second only: the access pack streamed (compressed bytes) and the reads it served */
  pack?: NonNullable<MountStatus['pack']>;
}

/** The executor's `mount_ms` for the lazy create of `sandboxId`, from B's log. */
function mountMsOf(bench: Bench, sandboxId: string): number | undefined {
  const file = bench.cluster.executors.get('B')?.logFile;
  if (file === undefined) return undefined;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes(sandboxId) || !line.includes('lazy sandbox started')) continue;
    try {
      return (JSON.parse(line) as { mount_ms?: number }).mount_ms;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The registry, straight (not through the proxy): to see and delete access records. */
interface Records { client: RegistryClient; repository: string; tag: string }

async function accessRecordDigest(records: Records): Promise<string | undefined> {
  return (await records.client.headManifest(records.repository, `${records.tag}.access`))?.digest;
}

async function restoreOnce(bench: Bench, records: Records, snapshotId: string, link: string, command: Command, mode: Mode, round: number): Promise<Run> {
  await makeCold(bench);
  const recordBefore = await accessRecordDigest(records);
  if (mode === 'lazy-first' && recordBefore !== undefined) await records.client.deleteManifest(records.repository, recordBefore);
  if (mode === 'lazy-second' && recordBefore === undefined) throw new Error('no access record for the lazy-second round: the lazy-first round before it did not push one');
  const restoreMode = mode === 'eager' ? 'eager' : 'lazy';
  const load1 = loadavg()[0] ?? NaN;
  const c0 = bench.proxy.counters();
  const t0 = performance.now();
  const { sandbox_id: sandboxId } = await bench.client.restoreSnapshot(snapshotId, { executor_id: 'B', mode: restoreMode, command: ['sleep', 'infinity'] });
  const sandbox = await running(bench, sandboxId);
  const t1 = performance.now();
  const out = await bench.client.exec(sandboxId, { command: [...command.argv], timeout_secs: 300 });
  const t2 = performance.now();
  const execEnd = Date.now();
  const c1 = bench.proxy.counters();
  if (out.exit_code !== 0 || !command.check(out.stdout)) throw new Error(`${command.name} in ${sandboxId} (${mode}): ${JSON.stringify(out)}`);
  if (sandbox.restore_mode !== restoreMode) throw new Error(`sandbox ${sandboxId} runs in ${String(sandbox.restore_mode)}, asked ${restoreMode}`);
  let status: MountStatus | undefined;
  let access: MountAccessOut | undefined;
  if (restoreMode === 'lazy') {
    const dir = join(bench.cluster.stateDir('B'), 'lazy', sandboxId);
    // The mount process writes its counters every 2 s: wait for a write after the exec.
    status = await waitFor('mount status after the exec', async () => {
      const s = readMountStatus(join(dir, 'mount.json'));
      return s !== undefined && s.fetch !== undefined && Date.parse(s.updated_at) >= execEnd ? s : undefined;
    }, 5_000, 100).catch(() => undefined);
    const mounted = readMountStatus(join(dir, 'mount.json'));
    access = mounted === undefined ? undefined : await requestAccessRecord(mounted, join(dir, 'mount-access.json'));
  }
  if (mode === 'lazy-first') {
    // The executor pushes the record after the exec, in the background: wait for it.
    await waitFor('the access record pushed', async () => accessRecordDigest(records), 60_000, 100);
  }
  await remove(bench, sandboxId);
  await waitFor(`mounts of ${sandboxId} gone`, async () => (listMounts().some((m) => m.mountpoint.includes(sandboxId)) ? undefined : true), 60_000);
  const c2 = bench.proxy.counters();
  const record = access?.record ?? undefined;
  const run: Run = {
    link, command: command.name, mode, round,
    total_ms: t2 - t0,
    running_ms: t1 - t0,
    exec_ms: t2 - t1,
    fetched_bytes: c1.down - c0.down,
    sent_bytes: c1.up - c0.up,
    connections: c1.connections - c0.connections,
    fetched_until_delete: c2.down - c0.down,
    load1,
    ...(restoreMode === 'lazy' ? {
      mount_ms: mountMsOf(bench, sandboxId),
      reader: status?.fetch,
      reasons: status?.fetch_reasons?.requests,
      fuse_bytes_read: status?.fs?.bytesRead,
      record_files: record?.files.length,
      record_bytes: record?.files.reduce((n, f) => n + f.ranges.reduce((m, r) => m + r[1], 0), 0),
      ...(status?.pack === undefined ? {} : { pack: status.pack }),
    } : {}),
  };
  const reasons = run.reasons === undefined ? '' : ` [${Object.entries(run.reasons).filter(([, v]) => v.requests > 0).map(([k, v]) => `${k} ${v.requests}/${mb(v.bytes)}`).join(', ')}]`;
  const pack = run.pack === undefined ? '' : ` [pack ${mb(run.pack.received)} ${run.pack.state}, ${run.pack.reads} reads served, ${run.pack.misses} missed]`;
  console.error(`${link} ${command.name} ${mode} round ${round}: ${run.total_ms.toFixed(0)} ms (running after ${run.running_ms.toFixed(0)} ms`
    + `${run.mount_ms === undefined ? '' : `, mount ${run.mount_ms} ms`}, exec ${run.exec_ms.toFixed(0)} ms), fetched ${mb(run.fetched_bytes)}${reasons}${pack}`
    + `${run.record_bytes === undefined ? '' : `, program read ${run.record_files} files / ${mb(run.record_bytes)}`}, load ${load1.toFixed(2)}`);
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
  const snapshotRef = parseImageReference(String(indexed.image_ref));
  const records: Records = {
    client: new RegistryClient({ host: cluster.registry?.host ?? '', insecure: true, credentials: { username: cluster.registryUser, password: cluster.registryPassword } }),
    repository: snapshotRef.repository,
    tag: snapshotRef.tag ?? '',
  };
  const runs: Run[] = [];
  try {
    for (const link of links) {
      proxy.setLimit(link.mbit);
      for (const command of COMMANDS) {
        for (let round = 1; round <= rounds; round++) {
          for (const mode of MODES) runs.push(await restoreOnce(bench, records, snapshotId, link.name, command, mode, round));
        }
      }
    }
  } finally {
    await records.client.close();
  }
  proxy.setLimit(undefined);

  const rows: string[][] = [['link / command / mode', 'restore -> exit (median, min..max)', 'until running', 'mount', 'fetched', 'spans', 'pack', 'program read']];
  const summary: Record<string, Record<string, { eager_ms: number; lazy_first_ms: number; lazy_second_ms: number; speedup_first: number; speedup_second: number }>> = {};
  const targets: string[] = [];
  for (const link of links) {
    for (const command of COMMANDS) {
      const of = (mode: Mode): Run[] => runs.filter((r) => r.link === link.name && r.command === command.name && r.mode === mode);
      const med = (mode: Mode, key: 'total_ms' | 'running_ms' | 'fetched_bytes' | 'mount_ms' | 'record_bytes'): number => median(of(mode).map((r) => Number(r[key])));
      const spans = (mode: Mode): number => median(of(mode).map((r) => Object.values(r.reasons ?? {}).reduce((n, v) => n + v.bytes, 0)));
      const packed = (mode: Mode): number => median(of(mode).map((r) => r.pack?.received ?? 0));
      for (const mode of MODES) {
        const totals = of(mode).map((r) => r.total_ms);
        rows.push([`${link.name} ${command.name} ${mode}`, `${secs(med(mode, 'total_ms'))} (${secs(Math.min(...totals))}..${secs(Math.max(...totals))})`,
          secs(med(mode, 'running_ms')), mode === 'eager' ? '' : `${med(mode, 'mount_ms').toFixed(0)} ms`, mb(med(mode, 'fetched_bytes')),
          mode === 'eager' ? '' : mb(spans(mode)), mode === 'eager' ? '' : mb(packed(mode)), mode === 'eager' ? '' : mb(med(mode, 'record_bytes'))]);
      }
      const first = med('eager', 'total_ms') / med('lazy-first', 'total_ms');
      const second = med('eager', 'total_ms') / med('lazy-second', 'total_ms');
      rows.push([`${link.name} ${command.name}: speed-up (eager / lazy)`, `first ${first.toFixed(2)}x, second ${second.toFixed(2)}x`, '', '',
        `${(med('eager', 'fetched_bytes') / med('lazy-second', 'fetched_bytes')).toFixed(1)}x fewer bytes (second)`]);
      (summary[link.name] ??= {})[command.name] = {
        eager_ms: med('eager', 'total_ms'), lazy_first_ms: med('lazy-first', 'total_ms'), lazy_second_ms: med('lazy-second', 'total_ms'), speedup_first: first, speedup_second: second,
      };
      if (command.name === 'import numpy') {
        const want = link.mbit === undefined ? 5 : 10;
        targets.push(`${link.name} import numpy: second ${second.toFixed(2)}x (>= ${want}x: ${second >= want ? 'met' : 'MISSED'}), first ${first.toFixed(2)}x (>= 3x: ${first >= 3 ? 'met' : 'MISSED'})`);
      }
    }
  }
  printTable(`Restore of a ${mb(imageBytes)} Debian image on a cold host -> first exec exits; medians of ${rounds} rounds`, rows);
  for (const t of targets) console.log(`  target: ${t}`);
  console.log(`  whole run ${secs(performance.now() - started)}; 1-min load ${Math.min(...runs.map((r) => r.load1)).toFixed(2)}..${Math.max(...runs.map((r) => r.load1)).toFixed(2)}`);
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
