/**
 * Issue 10 item 7: three hosts lazily restore the same snapshot of the large Debian + python3 +
 * numpy image (bench/large-image.ts) with a zone cache — Debian's docker-registry (distribution
 * 2.8) run as a pull-through cache of the snapshot registry — and run `python3 -c 'import numpy'`.
 * Measured: the bytes the snapshot registry itself serves (a counting TCP proxy sits in front of
 * it: every executor, engine and the zone cache reach it only through the proxy), per phase; and
 * the latency of a cold 4 KiB read from the zone cache against one from the registry, on loopback
 * and with the registry behind 100 Mbit/s (the zone cache stays near).
 *
 * Phases: (1) snapshot on A: docker push, the index build, the zone cache warmed by A; (2) B, C
 * and D restore at once with the zone cache warm; (3) the zone cache emptied (its storage wiped),
 * then B, C and D restore at once again: cold; (4) the alternative: B, C and D restore eagerly at
 * once (each engine pulls the image from the registry).
 *
 *   npx tsx bench/zone-cache.ts [reads]       (default 100 cold reads per source and link)
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { ClipIndex, ClipReader, RegistryLayerSource, ZoneCacheSource, zoneCacheClient, type LayerSource } from '@cryo/clip';
import { listMounts, readMountStatus } from '@cryo/clip/fuse';
import { RegistryClient, parseImageReference } from '@cryo/oci';
import { prng } from '../libs/clip/src/testing/data';
import { TEST_CACHE_DIR } from '../libs/clip/src/testing/debian';
import { startCluster, type Cluster } from '../test/support/cluster';
import { dockerAsync } from '../test/support/images';
import { killAll, waitFor } from '../test/support/processes';
import { startRegistry, type TestRegistry } from '../test/support/registry';
import { emptyDir, sweepLazy } from './bench-cluster';
import { PATH_ENV, largeDebianRootfsTar } from './large-image';
import { regularFiles } from './clip-report';
import { LinkProxy, linkProxyFront } from './link-proxy';
import { percentile, printTable, writeResult } from './report';

const READS = Number(process.argv[2] ?? 100);
const HOSTS = ['B', 'C', 'D'];
const NS = 'bench-zone';
const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
const dir = mkdtempSync('/var/tmp/cryo-bench-zone-');
let proxy: LinkProxy | undefined;
let zone: TestRegistry | undefined;
let cluster: Cluster | undefined;

/**
 * restore on each host at once, run the import, collect the mounts' fetch counters (lazy). Eager:
 * the engines pull the image from the registry (docker pull; no zone cache), the alternative.
 */
async function restoreAll(snapshotId: string, mode: 'lazy' | 'eager' = 'lazy'): Promise<{ ms: number[]; mountBytes: number; mountRequests: number; fallbacks: number }> {
  if (cluster === undefined) throw new Error('no cluster');
  const c = cluster;
  const client = c.client(NS);
  for (const h of HOSTS) {
    emptyDir(join(c.stateDir(h), 'clip'));
    emptyDir(join(c.stateDir(h), 'clip-cache'));
  }
  const results = await Promise.all(HOSTS.map(async (host) => {
    const t0 = performance.now();
    const { sandbox_id: id } = await client.restoreSnapshot(snapshotId, { executor_id: host, mode, command: ['sleep', 'infinity'] });
    const sb = await client.waitForSandbox(id, { intervalMs: 50, timeoutMs: 300_000 });
    if (sb.status !== 'running') throw new Error(`sandbox ${id} on ${host}: ${JSON.stringify(sb.outcome)}`);
    const out = await client.exec(id, { command: ['python3', '-c', 'import numpy; print(numpy.__version__)'], timeout_secs: 300 });
    if (out.exit_code !== 0) throw new Error(`import numpy on ${host}: ${JSON.stringify(out)}`);
    const ms = performance.now() - t0;
    const execEnd = Date.now();
    const status = mode === 'eager' ? undefined : await waitFor('mount status', async () => {
      const s = readMountStatus(join(c.stateDir(host), 'lazy', id, 'mount.json'));
      return s?.fetch !== undefined && Date.parse(s.updated_at) >= execEnd ? s : undefined;
    }, 10_000, 100).catch(() => undefined);
    await client.deleteSandbox(id);
    await client.waitForSandbox(id, { until: ['terminated'], intervalMs: 100, timeoutMs: 60_000 });
    await waitFor(`mounts of ${id} gone`, async () => (listMounts().some((m) => m.mountpoint.includes(id)) ? undefined : true), 60_000);
    return { ms, fetch: status?.fetch };
  }));
  return {
    ms: results.map((r) => r.ms),
    mountBytes: results.reduce((n, r) => n + (r.fetch?.bytes ?? 0), 0),
    mountRequests: results.reduce((n, r) => n + (r.fetch?.requests ?? 0), 0),
    fallbacks: results.reduce((n, r) => n + (r.fetch?.fallbacks ?? 0), 0),
  };
}

/** cold 4 KiB reads, a fresh reader each (no memory, no disk cache), at random offsets of random files */
async function coldReads(index: ClipIndex, source: LayerSource, n: number): Promise<number[]> {
  const files = regularFiles(index).filter((f) => f.size > 0);
  const rnd = prng(42);
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const f = files[Math.floor(rnd() * files.length)];
    if (f === undefined) continue;
    const at = Math.floor(rnd() * Math.max(1, f.size - 4096));
    const reader = new ClipReader(index, { source });
    const t0 = performance.now();
    await reader.read(f.path, at, 4096);
    ms.push(performance.now() - t0);
  }
  return ms;
}

try {
  const started = performance.now();
  cluster = await startCluster({
    hosts: [{ name: 'A' }, ...HOSTS.map((name) => ({ name }))],
    heartbeatTimeoutSecs: 30,
    logLevel: 'info',
    registryFront: linkProxyFront((p) => {
      proxy = p;
    }),
    executorConfig: async ({ registryHost, registryUser, registryPassword }) => {
      // distribution 2.8 gives proxy.username/password to Bearer token services only: userinfo for a Basic upstream
      zone = await startRegistry({ proxy: { remoteurl: `http://${registryUser}:${registryPassword}@${registryHost}` } });
      return `clip:\n  zone_cache:\n    url: "${zone.host}"\n`;
    },
  });
  if (proxy === undefined || zone === undefined) throw new Error('cluster without its proxy or zone cache');
  const link = proxy;
  const z = zone;
  const c = cluster;
  const client = c.client(NS);
  const engineA = c.engines.get('A');
  if (engineA === undefined) throw new Error('no engine A');
  mkdirSync(TEST_CACHE_DIR, { recursive: true });
  const tar = largeDebianRootfsTar(engineA, dir);
  const image = `${link.host}/bench/debian-large:zone`;
  await dockerAsync(engineA.host, ['import', '-c', `ENV ${PATH_ENV}`, tar, image]);
  const dockerConfig = mkdtempSync(join(dir, 'docker-config-'));
  await dockerAsync(engineA.host, ['--config', dockerConfig, 'login', '-u', c.registryUser, '--password-stdin', link.host], c.registryPassword);

  // (1) snapshot on A: push, index, warm
  const p0 = link.counters();
  await dockerAsync(engineA.host, ['--config', dockerConfig, 'push', image]);
  const { sandbox_id: sandboxA } = await client.createSandbox({ image, command: ['sleep', 'infinity'], executor_id: 'A' });
  await client.waitForSandbox(sandboxA, { intervalMs: 200, timeoutMs: 300_000 });
  const pushed = link.counters();
  const { snapshot_id: snapshotId } = await client.createSnapshot(sandboxA, { ttl_secs: 0 });
  const snap = await waitFor('snapshot indexed', async () => {
    const s = await client.getSnapshot(snapshotId);
    if (s.status === 'failed' || s.clip_error !== null) throw new Error(`snapshot: ${s.error ?? s.clip_error}`);
    return s.clip_index_ref !== null ? s : undefined;
  }, 900_000, 500);
  const indexed = link.counters();
  const indexFile = readdirSync(join(c.stateDir('A'), 'clip')).find((f) => f.endsWith('.clip'));
  if (indexFile === undefined) throw new Error('A kept no index');
  const indexBytes = readFileSync(join(c.stateDir('A'), 'clip', indexFile));
  const index = ClipIndex.fromBuffer(indexBytes);
  const layers = index.layers.map((l) => ({ digest: l.digest, size: l.size }));
  const imageSize = layers.reduce((n, l) => n + l.size, 0);
  const blobFile = (digest: string): string => {
    const hex = digest.slice(7);
    return join(z.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  };
  const warmAt = performance.now();
  await waitFor('zone cache holds every layer', async () => (layers.every((l) => existsSync(blobFile(l.digest)) && statSync(blobFile(l.digest)).size === l.size) ? true : undefined), 900_000, 250);
  const warmMs = performance.now() - warmAt;
  const warmed = link.counters();
  await client.deleteSandbox(sandboxA);
  console.error(`snapshot ${snapshotId}: image ${mb(imageSize)} in ${layers.length} layers, index ${mb(indexBytes.length)}; zone warm ${(warmMs / 1000).toFixed(1)} s after the index`);

  // (2) three hosts, zone cache warm
  const load2 = loadavg()[0] ?? NaN;
  const w0 = link.counters();
  const warmRun = await restoreAll(snapshotId);
  const w1 = link.counters();

  // (3) three hosts, zone cache emptied
  await z.stop();
  rmSync(join(z.dir, 'data'), { recursive: true, force: true });
  mkdirSync(join(z.dir, 'data'));
  await z.start();
  const load3 = loadavg()[0] ?? NaN;
  const k0 = link.counters();
  const coldRun = await restoreAll(snapshotId);
  // the zone cache goes on storing what the cold reads asked it for: count that too
  await waitFor('zone cache holds every layer again', async () => (layers.every((l) => existsSync(blobFile(l.digest)) && statSync(blobFile(l.digest)).size === l.size) ? true : undefined), 900_000, 250).catch(() => undefined);
  const k1 = link.counters();

  // (4) the alternative: three hosts restore eagerly (docker pull from the registry)
  const load4 = loadavg()[0] ?? NaN;
  const e0 = link.counters();
  const eagerRun = await restoreAll(snapshotId, 'eager');
  const e1 = link.counters();

  // cold read latency: zone cache vs the registry, loopback and 100 Mbit/s to the registry
  const repo = parseImageReference(snap.image_ref ?? image).repository;
  const zoneSource = new ZoneCacheSource(zoneCacheClient({ url: z.host }), repo);
  const upstreamClient = new RegistryClient({ host: link.host, insecure: true, credentials: { username: c.registryUser, password: c.registryPassword } });
  const upstream = new RegistryLayerSource(upstreamClient, repo);
  const latency: Array<{ link: string; source: string; ms: number[] }> = [];
  for (const mbit of [undefined, 100]) {
    link.setLimit(mbit);
    const name = mbit === undefined ? 'loopback' : `registry at ${mbit} Mbit/s`;
    latency.push({ link: name, source: 'zone cache', ms: await coldReads(index, zoneSource, READS) });
    latency.push({ link: name, source: 'registry', ms: await coldReads(index, upstream, READS) });
  }
  link.setLimit(undefined);
  await zoneSource.close();
  await upstream.close();

  const down = (a: { down: number }, b: { down: number }): number => b.down - a.down;
  const secs = (ms: number[]): string => ms.map((m) => (m / 1000).toFixed(1)).join(' / ');
  const rows = [
    ['docker push + sandbox on A (registry receives)', mb(pushed.up - p0.up), '', ''],
    ['index build on A (reads the layers once)', mb(down(pushed, indexed)), '', ''],
    ['zone cache fetching the layers (warmed by A)', mb(down(indexed, warmed)), '', `${(warmMs / 1000).toFixed(1)} s after the index`],
    [`3 hosts restore, zone warm (load ${load2.toFixed(1)})`, mb(down(w0, w1)), mb(warmRun.mountBytes), secs(warmRun.ms)],
    [`3 hosts restore, zone emptied first (load ${load3.toFixed(1)})`, mb(down(k0, k1)), mb(coldRun.mountBytes), secs(coldRun.ms)],
    [`3 hosts restore eagerly: docker pull (load ${load4.toFixed(1)})`, mb(down(e0, e1)), '', secs(eagerRun.ms)],
  ];
  printTable(`bytes the snapshot registry served; image ${mb(imageSize)} (compressed), index ${mb(indexBytes.length)} per host`,
    [['phase', 'registry served', 'mounts fetched (all tiers)', 'restore -> import numpy, per host'], ...rows]);
  const latRows = latency.map((l) => [l.link, l.source, String(l.ms.length), `${percentile(l.ms, 50).toFixed(1)} / ${percentile(l.ms, 99).toFixed(1)}`]);
  printTable('cold 4 KiB read (fresh reader, no caches), ms p50 / p99', [['link', 'source', 'n', 'p50 / p99'], ...latRows]);
  console.log(`whole run ${((performance.now() - started) / 1000).toFixed(0)} s`);
  writeResult('zone-cache', {
    image_bytes: imageSize, index_bytes: indexBytes.length, layers: layers.length, warm_ms: warmMs,
    phases: {
      push_up: pushed.up - p0.up, index_down: down(pushed, indexed), warm_down: down(indexed, warmed),
      restore_warm_down: down(w0, w1), restore_warm_mounts: warmRun, restore_cold_down: down(k0, k1), restore_cold_mounts: coldRun,
      restore_eager_down: down(e0, e1), restore_eager_ms: eagerRun.ms,
    },
    load: { warm: load2, cold: load3, eager: load4 },
    latency: latency.map((l) => ({ link: l.link, source: l.source, n: l.ms.length, p50: percentile(l.ms, 50), p99: percentile(l.ms, 99) })),
  });
} finally {
  if (cluster !== undefined) {
    const client = cluster.client(NS);
    const left = await client.listAllSandboxes().catch(() => []);
    for (const s of left.filter((sb) => sb.status !== 'terminated')) await client.deleteSandbox(s.sandbox_id).catch(() => undefined);
    await cluster.stop().catch((err: unknown) => console.error(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
    for (const host of [...HOSTS, 'A']) await sweepLazy(cluster.stateDir(host));
  }
  await zone?.destroy();
  await proxy?.stop();
  await killAll();
  rmSync(dir, { recursive: true, force: true });
  if (cluster !== undefined) rmSync(cluster.dir, { recursive: true, force: true });
}
