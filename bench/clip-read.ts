/**
 * clip lazy reads against a local registry: cold random reads of 4 KiB and 1 MiB (a fresh
 * reader per read: nothing in memory, no disk cache), the same reads warm from the host disk
 * cache (fresh reader, so the disk is what serves them) and from memory; next to what an eager
 * pull pays before the first byte (download the whole layer and gunzip it).
 *
 *   npx tsx bench/clip-read.ts [reads]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { RegistryClient } from '@cryo/oci';
import { ClipIndex, ClipReader, RegistryLayerSource, buildIndex, indexLayers } from '@cryo/clip';
import { prng } from '../libs/clip/src/testing/data';
import { debianRootfsTar } from '../libs/clip/src/testing/debian';
import { MEDIA, sha256, testImage } from '../libs/clip/src/testing/fixtures';
import { startRegistry } from '../test/support/registry';
import { mdTable, regularFiles, writeSection } from './clip-report';
import { percentile, printTable, writeResult } from './report';

const READS = Number(process.argv[2] ?? 200);
const work = mkdtempSync(join(tmpdir(), 'clip-read-bench-'));
const registry = await startRegistry();
const client = new RegistryClient({ host: registry.host, insecure: true });

async function pushLayer(repo: string, tar: Buffer, gz: Buffer): Promise<void> {
  await client.uploadBlob(repo, gz, sha256(gz), gz.length);
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['python3'] }, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } }),
  );
  await client.uploadBlob(repo, config, sha256(config), config.length);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: MEDIA.gzip, digest: sha256(gz), size: gz.length }],
    }),
  );
  await client.putManifest(repo, 'bench', manifest, 'application/vnd.oci.image.manifest.v1+json');
}


interface Sample {
  path: string;
  offset: number;
  length: number;
}

function samples(files: Array<{ path: string; size: number }>, length: number, n: number, seed: number): Sample[] {
  const rnd = prng(seed);
  const big = files.filter((f) => f.size >= length);
  const total = big.reduce((s, f) => s + f.size, 0);
  const out: Sample[] = [];
  for (let i = 0; i < n; i++) {
    // pick a byte of the image uniformly, then read `length` bytes of its file around it
    let x = rnd() * total;
    let f = big[0];
    for (const g of big) {
      f = g;
      if ((x -= g.size) < 0) break;
    }
    if (!f) break;
    out.push({ path: f.path, offset: Math.floor(rnd() * (f.size - length + 1)), length });
  }
  return out;
}

async function indexLayersOf(tar: Buffer, zst: Buffer) {
  const image = { ...testImage(), registry: registry.host, repository: 'bench/debian' };
  return indexLayers(image, [
    { digest: sha256(zst), mediaType: MEDIA.zstd, size: zst.length, diffId: sha256(tar), open: async () => (async function* () { yield zst; })() },
  ]);
}

async function timeReads(make: () => ClipReader, list: Sample[]): Promise<{ ms: number[]; bytes: number; requests: number }> {
  const ms: number[] = [];
  let bytes = 0;
  let requests = 0;
  for (const s of list) {
    const reader = make();
    const t0 = performance.now();
    const data = await reader.read(s.path, s.offset, s.length);
    ms.push(performance.now() - t0);
    if (data.length !== s.length) throw new Error(`short read ${s.path}`);
    bytes += reader.stats.bytes;
    requests += reader.stats.requests;
  }
  return { ms, bytes, requests };
}

try {
  const tarFile = debianRootfsTar();
  const tar = readFileSync(tarFile);
  const gz = execFileSync('gzip', ['-6', '-n', '-c', tarFile], { maxBuffer: 1 << 30 });
  await pushLayer('bench/debian', tar, gz);
  const ref = `${registry.host}/bench/debian:bench`;
  const t0 = performance.now();
  const built = await buildIndex(ref, { client });
  const buildS = (performance.now() - t0) / 1000;
  const index = ClipIndex.fromBuffer(built.index);
  const files = regularFiles(index);
  const cacheDir = join(work, 'cache');
  const source = new RegistryLayerSource(client, 'bench/debian');

  // eager: the whole layer over HTTP, gunzipped (what a pull pays before the first byte)
  const e0 = performance.now();
  const chunks: Buffer[] = [];
  for await (const c of await source.openStream(index.layers[0]?.digest ?? '')) chunks.push(c);
  zlib.gunzipSync(Buffer.concat(chunks));
  const eagerMs = performance.now() - e0;

  const rows: Array<Array<string | number>> = [];
  const results: Record<string, unknown> = { index_build_s: buildS, eager_ms: eagerMs, reads: READS };
  for (const [label, length, n] of [
    ['4 KiB', 4096, READS],
    ['1 MiB', 1024 * 1024, Math.max(20, Math.floor(READS / 4))],
  ] as const) {
    const list = samples(files, length, n, length);
    const cold = await timeReads(() => new ClipReader(index, { source }), list);
    await timeReads(() => new ClipReader(index, { source, cacheDir }), list); // fill the disk cache
    const disk = await timeReads(() => new ClipReader(index, { source, cacheDir }), list);
    const shared = new ClipReader(index, { source, memoryBytes: 1 << 30 });
    await timeReads(() => shared, list);
    const mem = await timeReads(() => shared, list);
    const fmt = (ms: number[]) => `${percentile(ms, 50).toFixed(2)} / ${percentile(ms, 99).toFixed(2)}`;
    rows.push([`${label} cold (registry)`, list.length, fmt(cold.ms), (cold.requests / list.length).toFixed(2), `${(cold.bytes / list.length / 1024).toFixed(0)} KiB`]);
    rows.push([`${label} warm (disk cache)`, list.length, fmt(disk.ms), (disk.requests / list.length).toFixed(2), '0']);
    rows.push([`${label} warm (memory)`, list.length, fmt(mem.ms), '0', '0']);
    results[label] = {
      cold_p50: percentile(cold.ms, 50),
      cold_p99: percentile(cold.ms, 99),
      disk_p50: percentile(disk.ms, 50),
      disk_p99: percentile(disk.ms, 99),
      mem_p50: percentile(mem.ms, 50),
      mem_p99: percentile(mem.ms, 99),
      bytes_per_cold_read: cold.bytes / list.length,
    };
  }
  // zstd: no checkpoints, a cold read decompresses from the start of the layer
  const zst = execFileSync('zstd', ['-q', '-c', '-3', tarFile], { maxBuffer: 1 << 30 });
  await client.uploadBlob('bench/debian', zst, sha256(zst), zst.length);
  const zIndex = ClipIndex.fromBuffer((await indexLayersOf(tar, zst)).index);
  const zList = samples(files, 4096, 20, 7);
  const zCold = await timeReads(() => new ClipReader(zIndex, { source }), zList);
  const zCacheDir = join(work, 'zcache');
  const z0 = performance.now();
  await new ClipReader(zIndex, { source, cacheDir: zCacheDir }).read(zList[0]?.path ?? '/', zList[0]?.offset ?? 0, 4096);
  const zFirst = performance.now() - z0;
  const zDisk = await timeReads(() => new ClipReader(zIndex, { source, cacheDir: zCacheDir }), zList);
  const fmtz = (ms: number[]) => `${percentile(ms, 50).toFixed(2)} / ${percentile(ms, 99).toFixed(2)}`;
  rows.push([`4 KiB cold, zstd layer (${(zst.length / 1e6).toFixed(0)} MB)`, zList.length, fmtz(zCold.ms), (zCold.requests / zList.length).toFixed(2), `${(zCold.bytes / zList.length / 1024).toFixed(0)} KiB`]);
  rows.push([`4 KiB zstd, disk cache after one read`, zList.length, fmtz(zDisk.ms), (zDisk.requests / zList.length).toFixed(2), '0']);
  results.zstd = { cold_p50: percentile(zCold.ms, 50), first_read_with_cache_ms: zFirst, disk_p50: percentile(zDisk.ms, 50) };

  printTable('read latency ms (p50 / p99)', rows.map((r) => r.map(String)));
  writeResult('clip-read', results);
  const layer = index.layers[0];
  writeSection(
    'clip-read',
    `## Lazy reads (\`npx tsx bench/clip-read.ts ${READS}\`)

Image: the Debian bookworm + python3 layer (gzip -6, ${(gz.length / 1e6).toFixed(1)} MB compressed,
${(tar.length / 1e6).toFixed(1)} MB of tar, ${layer?.spans.length ?? 0} spans of 1 MiB) in a loopback registry (plain http, no auth).
Reads pick a byte of the image uniformly at random and read around it inside its file. "cold": a
fresh reader per read, no disk cache, so every read is one range GET of at most the spans it needs
plus an inflate from the checkpoint and a sha256 of each span. "disk cache": a fresh reader per
read over a filled host cache (read + verify of the span file). "memory": one reader, spans in
its LRU.

${mdTable(['read', 'n', 'latency ms p50 / p99', 'requests per read', 'registry bytes per read'], rows)}

For scale: an eager pull of the same layer (one GET of the whole blob + gunzip) took
**${eagerMs.toFixed(0)} ms** before its first byte could be served; the index build over HTTP took ${buildS.toFixed(1)} s.

zstd layers have no checkpoints (Node 20 has no zstd; fzstd, a pure-JS decoder, reads them): a cold
read streams and decompresses the layer from its first byte up to the span it needs, so it costs on
average half the layer. With a disk cache the first read (${zFirst.toFixed(0)} ms here) decompresses the
whole layer once, verifies and caches every span on the way, and every later read on the host is a
cache hit.`,
  );
} finally {
  await client.close();
  await registry.destroy();
  rmSync(work, { recursive: true, force: true });
}
