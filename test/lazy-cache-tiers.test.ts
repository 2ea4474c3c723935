/**
 * Issue 10 items 6 and 7 through the real server and executors: lazy restores on host B read
 * their layers through B's span cache (a disk budget of 3 MB, enforced every second, for a 24 MB
 * image) and a zone cache (Debian's docker-registry run as a pull-through cache of the snapshot
 * registry) before the registry itself.
 * - eviction under the small budget while two sandboxes read: every byte right, no EIO; the
 *   evictions show in B's heartbeat and log;
 * - A warms the zone cache with every layer of the snapshot once it is indexed (a pre-copy
 *   snapshot, whose result brings its index: no build_index), and B's mounts read the layers
 *   there, not from the registry;
 * - zone cache down: reads fall back to the registry;
 * - zone cache serving corrupt bytes: the span digests catch them, the spans come from the registry.
 */
import { readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipIndex, ZoneCacheSource, zoneCacheClient } from '@cryo/clip';
import { RegistryClient, parseImageReference } from '@cryo/oci';
import { startCluster, type Cluster } from './support/cluster';
import { importBusybox } from './support/images';
import { killAll, waitFor } from './support/processes';
import { startRegistry, type TestRegistry } from './support/registry';
import { execIn, obj, waitSandbox, waitSnapshot } from './support/api';

const NS = '/v1/namespaces/tiers';
const BUDGET = 3_000_000;
const FILES = 24;
let cluster: Cluster;
let zone: TestRegistry;
let snapshotId: string;
let imageRef: string;
let layerDigests: string[] = [];
let expected: string;

const SUM = `cd /data && sha256sum ${Array.from({ length: FILES }, (_, i) => `f${i}`).join(' ')}`;

async function restoreOnB(): Promise<string> {
  const restore = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: 'B', mode: 'lazy', command: ['sh'] });
  expect(restore.status, JSON.stringify(restore.body)).toBe(202);
  const id = String(obj(restore.body).sandbox_id);
  expect((await waitSandbox(cluster, NS, id, ['running'])).restore_mode).toBe('lazy');
  return id;
}

/** B's host span cache, emptied: the next reads come from the zone cache or the registry */
function clearCacheOfB(): void {
  const dir = join(cluster.stateDir('B'), 'clip-cache');
  for (const entry of readdirSync(dir)) rmSync(join(dir, entry), { recursive: true, force: true });
}

function mountOf(sandboxId: string): { status: { fetch?: { fallbacks?: number; requests?: number } }; log: string } {
  const dir = join(cluster.stateDir('B'), 'lazy', sandboxId);
  return { status: JSON.parse(readFileSync(join(dir, 'mount.json'), 'utf8')) as { fetch?: { fallbacks?: number } }, log: readFileSync(join(dir, 'mount.log'), 'utf8') };
}

/** GETs of the image's layer blobs that reached the registry itself from lazy mounts (their user agent) */
function layerReadsAtRegistry(): number {
  const log = cluster.registry?.logs() ?? '';
  return log.split('\n').filter((l) => l.includes('response completed') && l.includes('http.request.method=GET')
    && l.includes('cryo-clip-mount') && layerDigests.some((d) => l.includes(d))).length;
}

/**
 * Every lazy restore of an image without an access record records one and pushes it (with its
 * pack) after its first exec. A restore that finds one streams the pack and reads little by span,
 * so the tiers below (zone cache, registry) would not be exercised: wait for the record the last
 * restore pushes, then delete it.
 */
async function withoutAccessRecord(): Promise<void> {
  const parsed = parseImageReference(`${imageRef}.access`);
  const registry = cluster.registry;
  if (registry === undefined) throw new Error('cluster has no registry');
  const client = new RegistryClient({ host: registry.host, insecure: true, credentials: { username: cluster.registryUser, password: cluster.registryPassword } });
  try {
    const digest = await waitFor('the access record the last restore pushes', async () => (await client.headManifest(parsed.repository, parsed.tag ?? ''))?.digest, 60_000, 200);
    await client.deleteManifest(parsed.repository, digest);
  } finally {
    await client.close();
  }
}

/**
 * A lazy restore on B with its span cache emptied and the image's access record deleted first:
 * every file reads right, by span. Returns the sandbox and the registry's count of layer reads
 * from before the restore.
 */
async function restoredOnBReadsRight(): Promise<{ id: string; before: number }> {
  await withoutAccessRecord();
  clearCacheOfB();
  const before = layerReadsAtRegistry();
  const id = await restoreOnB();
  const sums = await execIn(cluster, NS, id, ['sh', '-c', SUM]);
  expect(sums.exit_code, String(sums.stderr)).toBe(0);
  expect(sums.stdout).toBe(expected);
  return { id, before };
}

/**
 * A lazy restore on B (its span cache emptied first) reads every file right, with layer reads
 * reaching the registry itself, fallbacks in the mount's status and `logged` in its log.
 */
async function readsFallBackToRegistry(logged: RegExp): Promise<void> {
  const { id, before } = await restoredOnBReadsRight();
  expect(layerReadsAtRegistry()).toBeGreaterThan(before);
  const mount = await waitFor('mount status with fallbacks', async () => {
    const m = mountOf(id);
    return (m.status.fetch?.fallbacks ?? 0) > 0 ? m : undefined;
  }, 30_000);
  expect(mount.log).toMatch(logged);
  await cluster.api('DELETE', `${NS}/sandboxes/${id}`);
}

beforeAll(async () => {
  cluster = await startCluster({
    hosts: [{ name: 'A' }, { name: 'B' }],
    heartbeatTimeoutSecs: 20,
    executorConfig: async ({ registryHost, registryUser, registryPassword }) => {
      // distribution 2.8 sends proxy.username/password to Bearer token services only: Basic upstreams get userinfo
      zone = await startRegistry({ proxy: { remoteurl: `http://${registryUser}:${registryPassword}@${registryHost}` } });
      return `clip:\n  cache:\n    max_bytes: ${BUDGET}\n    gc_interval_secs: 1\n  zone_cache:\n    url: "${zone.host}"\n`;
    },
  });
  const engineA = cluster.engines.get('A');
  const registry = cluster.registry;
  if (engineA === undefined || registry === undefined) throw new Error('cluster incomplete');
  const base = `${registry.host}/base/busybox:tiers`;
  importBusybox(engineA.host, base);
  const created = await cluster.api('POST', `${NS}/sandboxes`, { image: base, command: ['sh'], executor_id: 'A' });
  const sandboxA = String(obj(created.body).sandbox_id);
  await waitSandbox(cluster, NS, sandboxA, ['running']);
  // 24 files of 1 MiB of random bytes: 24 MB that gzip cannot shrink, 8 times the budget
  const write = `for i in $(seq 0 ${FILES - 1}); do dd if=/dev/urandom of=/data/f$i bs=1048576 count=1 2>/dev/null || exit 1; done`;
  expect((await execIn(cluster, NS, sandboxA, ['sh', '-c', write])).exit_code).toBe(0);
  expected = String((await execIn(cluster, NS, sandboxA, ['sh', '-c', SUM])).stdout);
  expect(expected.split('\n').filter(Boolean)).toHaveLength(FILES);
  const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxA}/snapshots`, {});
  snapshotId = String(obj(snap.body).snapshot_id);
  const indexed = await waitSnapshot(cluster, NS, snapshotId, (s) => s.clip_index_ref !== null || s.clip_error !== null || s.status === 'failed', 'indexed');
  expect(indexed.clip_error).toBeNull();
  // the index came with the pre-copy snapshot's result (the server ran no build_index)
  expect(obj(indexed.capture).method).toBe('precopy');
  imageRef = String(indexed.image_ref);
  const indexFile = readdirSync(join(cluster.stateDir('A'), 'clip')).find((f) => f.endsWith('.clip'));
  if (indexFile === undefined) throw new Error('A kept no clip index');
  layerDigests = ClipIndex.fromBuffer(readFileSync(join(cluster.stateDir('A'), 'clip', indexFile))).layers.map((l) => l.digest);
}, 900_000);

afterAll(async () => {
  await cluster?.stop();
  await zone?.destroy();
  await killAll();
});

describe('the host span cache under a disk budget', () => {
  it('evicts while two lazy sandboxes read: every byte right, no EIO; B reports usage and evictions', async () => {
    const [one, two] = await Promise.all([restoreOnB(), restoreOnB()]);
    for (let round = 0; round < 2; round++) {
      const sums = await Promise.all([one, two].map((id) => execIn(cluster, NS, id, ['sh', '-c', SUM])));
      for (const s of sums) {
        expect(s.exit_code, String(s.stderr)).toBe(0);
        expect(s.stdout).toBe(expected);
      }
    }
    // both mounts wrote every span of the 24 MB to the shared cache: all but the budget's worth went
    const cache = await waitFor('B reports evictions', async () => {
      const items = obj((await cluster.api('GET', '/v1/executors')).body).items as Array<{ executor_id: string; capacity: { clip_cache?: Record<string, number | null> } }>;
      const c = items.find((e) => e.executor_id === 'B')?.capacity.clip_cache;
      return c !== undefined && Number(c.evicted_bytes) > 20_000_000 ? c : undefined;
    }, 60_000);
    expect(cache.max_bytes).toBe(BUDGET);
    expect(Number(cache.evicted_spans)).toBeGreaterThan(0);
    // the pass after the reads ended leaves the cache within its budget
    await waitFor('B within its budget', async () => {
      const items = obj((await cluster.api('GET', '/v1/executors')).body).items as Array<{ executor_id: string; capacity: { clip_cache?: { used_bytes: number } } }>;
      const used = items.find((e) => e.executor_id === 'B')?.capacity.clip_cache?.used_bytes;
      return used !== undefined && used <= BUDGET ? true : undefined;
    }, 60_000);
    expect(cluster.logs()).toMatch(/clip cache over its budget: evicted \d+ spans/);
    for (const id of [one, two]) {
      expect(mountOf(id).log).not.toMatch(/"level":"error"/);
      await cluster.api('DELETE', `${NS}/sandboxes/${id}`);
    }
  });
});

describe('the zone cache tier', () => {
  it('holds the layers once A indexed the snapshot, and B reads them there, not from the registry', async () => {
    // A asked the zone cache for every layer (before this test asks it anything)
    const warmed = cluster.logs().split('\n').filter((l) => /zone cache is fetching the layer|zone cache holds the layer already/.test(l));
    for (const digest of layerDigests) expect(warmed.some((l) => l.includes(digest)), `A warmed ${digest}`).toBe(true);
    const source = new ZoneCacheSource(zoneCacheClient({ url: zone.host }), parseImageReference(imageRef).repository);
    try {
      await waitFor('zone cache warm', async () => ((await Promise.all(layerDigests.map((d) => source.warm(d)))).every((s) => s === 'warm') ? true : undefined), 120_000, 500);
    } finally {
      await source.close();
    }
    const { id, before } = await restoredOnBReadsRight();
    expect(layerReadsAtRegistry()).toBe(before);
    expect(zone.logs()).toMatch(/cryo-clip-mount/);
    await cluster.api('DELETE', `${NS}/sandboxes/${id}`);
  });

  it('zone cache down: the reads fall back to the registry', async () => {
    await zone.stop();
    try {
      await readsFallBackToRegistry(/zone cache .*read failed; read from the registry instead/);
    } finally {
      await zone.start();
    }
  });

  it('zone cache serving corrupt bytes: caught by the span digests, read from the registry', async () => {
    // flip bytes in the middle of each layer as the zone cache stores it
    for (const digest of layerDigests) {
      const hex = digest.slice('sha256:'.length);
      const file = join(zone.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
      const size = statSync(file).size;
      const bytes = readFileSync(file);
      for (let at = Math.floor(size / 4); at < size; at += Math.floor(size / 8)) bytes.fill(0x5a, at, Math.min(size, at + 4096));
      writeFileSync(file, bytes);
    }
    await readsFallBackToRegistry(/"kind":"(SPAN_CORRUPT|GZIP_CORRUPT)"/);
  });
});
