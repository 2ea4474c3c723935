/**
 * The read path against a real registry (distribution 2.8, test/support/registry.ts): parallel
 * range requests for long misses, adjacent spans in one request, readahead for sequential
 * readers, large files fetched in parallel on their first read, prefetch of an access record in
 * its order and coalesced, and the background fill under its rate cap, yielding to reads.
 * Every byte read is compared with the file it came from.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@cryo/oci';
import { startRegistry, type TestRegistry } from '../../../../test/support/registry';
import { RegistryLayerSource } from '../registry-source';
import type { LayerSource } from '../source';
import { mixedData, prng } from '../testing/data';
import { buildImage, sha256, type BuiltImage } from '../testing/fixtures';
import { writeTar } from '../testing/tar-writer';
import { AccessRecorder } from './access-record';
import type { ClipReaderOptions } from './clip-reader';

const REPO = 'clip/scheduler';
const SPAN = 256 * 1024;

/** Every range request that reached the registry, with its time, and how many were in flight at most. */
class LoggingSource implements LayerSource {
  readonly requests: Array<{ start: number; end: number; at: number; done: number }> = [];
  inFlight = 0;
  maxInFlight = 0;
  constructor(private readonly inner: LayerSource) {}
  async readRange(digest: string, start: number, end: number, blobSize?: number): Promise<Buffer> {
    const at = performance.now();
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      return await this.inner.readRange(digest, start, end, blobSize);
    } finally {
      this.inFlight--;
      this.requests.push({ start, end, at, done: performance.now() });
    }
  }
  openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    return this.inner.openStream(digest);
  }
  get bytes(): number {
    return this.requests.reduce((n, r) => n + r.end - r.start + 1, 0);
  }
}

const rnd = prng(77);
/** 200 small files (2-40 KB), adjacent in the layer, then a 12 MB file and a 6 MB one. */
const small = Array.from({ length: 200 }, (_, i) => ({ name: `lib/mod${String(i).padStart(3, '0')}.py`, data: mixedData(2000 + Math.floor(rnd() * 38_000), 1000 + i) }));
const big = mixedData(12 * 1024 * 1024 + 333, 5);
const medium = mixedData(6 * 1024 * 1024 + 77, 6);

let registry: TestRegistry;
let client: RegistryClient;
let image: BuiltImage;
const work = mkdtempSync(join(tmpdir(), 'clip-scheduler-'));

beforeAll(async () => {
  registry = await startRegistry();
  client = new RegistryClient({ host: registry.host, insecure: true });
  image = await buildImage([writeTar([
    { name: 'lib/', type: '5', mode: 0o755 },
    ...small.map((f) => ({ name: f.name, data: f.data })),
    { name: 'big.bin', data: big },
    { name: 'medium.bin', data: medium },
  ])], 'gzip', { span: SPAN });
  for (const [digest, blob] of image.blobs) await client.uploadBlob(REPO, blob, digest, blob.length);
  expect([...image.blobs.keys()]).toEqual([image.index.layers[0]?.digest]);
  expect(sha256(image.blobs.values().next().value ?? Buffer.alloc(0))).toBe(image.index.layers[0]?.digest);
}, 120_000);

afterAll(async () => {
  await client?.close();
  await registry?.destroy();
  rmSync(work, { recursive: true, force: true });
});

/** A reader over the real registry, its requests logged. */
function reader(opts: ClipReaderOptions = {}): { r: ReturnType<BuiltImage['reader']>; source: LoggingSource } {
  const source = new LoggingSource(new RegistryLayerSource(client, REPO));
  return { r: image.reader({ ...opts, source }), source };
}

const overlapping = (a: { at: number; done: number }, b: { at: number; done: number }): boolean => a.at < b.done && b.at < a.done;

describe('the read path against a real registry', () => {
  it('fetches a long miss as parallel requests of at most maxRequestBytes, adjacent spans in each', async () => {
    const { r, source } = reader({ maxRequestBytes: 1024 * 1024, fetch: { readaheadBytes: 0 } });
    const got = await r.read('/big.bin', 0, 8 * 1024 * 1024);
    expect(got.equals(big.subarray(0, 8 * 1024 * 1024))).toBe(true);
    const spans = image.index.layers[0]?.spans.length ?? 0;
    expect(spans).toBeGreaterThan(40);
    // 32 spans of 256 KiB, in a handful of requests (each at most 1 MiB compressed plus one span), not 32...
    expect(source.requests.length).toBeGreaterThan(1);
    expect(source.requests.length).toBeLessThan(16);
    for (const q of source.requests) expect(q.end - q.start + 1).toBeLessThanOrEqual(1024 * 1024 + 2 * SPAN);
    // ...all in flight at once
    expect(source.maxInFlight).toBe(source.requests.length);
    // and a read across two missing spans is one request
    const { r: r2, source: s2 } = reader({ fetch: { readaheadBytes: 0 } });
    const file = small[10];
    expect((await r2.readFile(`/${file?.name}`)).equals(file?.data ?? Buffer.alloc(1))).toBe(true);
    const before = s2.requests.length;
    await r2.read('/big.bin', SPAN * 3 - 100, 200); // crosses a span boundary
    expect(s2.requests.length - before).toBe(1);
  });

  it('reads ahead of a sequential reader, in requests of its own', async () => {
    const { r, source } = reader();
    const chunk = 128 * 1024;
    for (let off = 0; off < 4 * 1024 * 1024; off += chunk) {
      expect((await r.read('/medium.bin', off, chunk)).equals(medium.subarray(off, off + chunk))).toBe(true);
    }
    await r.fetchIdle();
    const stats = r.fetchStats.requests;
    expect(stats.readahead.requests).toBeGreaterThan(0);
    // Reading 4 MiB (16 spans) sequentially waited on only a few of them: readahead had the rest.
    expect(stats.demand.requests).toBeLessThanOrEqual(4);
    const log = r.requestLog();
    expect(log.filter((q) => q.reason === 'readahead').every((q) => q.first > 0)).toBe(true);
    expect(source.requests.length).toBe(log.length);
    // random reads do not read ahead
    const { r: random } = reader();
    for (const off of [9_000_000, 1_000_000, 5_000_000, 300_000]) await random.read('/big.bin', off, 4096);
    await random.fetchIdle();
    expect(random.fetchStats.requests.readahead.requests).toBe(0);
  });

  it('fetches a large file whole on its first read, in parallel requests', async () => {
    const { r, source } = reader({ maxRequestBytes: 1024 * 1024, fetch: { largeFileBytes: 4 * 1024 * 1024 } });
    expect((await r.read('/big.bin', 0, 4096)).equals(big.subarray(0, 4096))).toBe(true);
    await r.fetchIdle();
    const ahead = r.requestLog().filter((q) => q.reason === 'readahead');
    expect(ahead.length).toBeGreaterThan(3);
    expect(source.maxInFlight).toBeGreaterThan(1);
    const timed = source.requests.slice(1);
    expect(timed.some((a, i) => timed.slice(i + 1).some((b) => overlapping(a, b)))).toBe(true);
    // now every byte of it is in memory: reading it all makes no request
    const before = source.requests.length;
    expect((await r.readFile('/big.bin')).equals(big)).toBe(true);
    expect(source.requests.length).toBe(before);
    // a small file is not fetched ahead
    const { r: r2 } = reader({ fetch: { largeFileBytes: 4 * 1024 * 1024 } });
    await r2.readFile(`/${small[0]?.name}`);
    await r2.fetchIdle();
    expect(r2.fetchStats.requests.readahead.requests).toBe(0);
  });

  it('prefetches an access record in its order, adjacent spans together, and later reads find it all', async () => {
    // The record of a run that read 120 of the small files (in reverse order) and part of big.bin.
    const recorder = new AccessRecorder(image.index.image.manifestDigest);
    const read = small.slice(40, 160).reverse();
    for (const f of read) recorder.note(`/${f.name}`, 0, f.data.length);
    recorder.note('/big.bin', 1_000_000, 300_000);
    recorder.note('/missing.py', 0, 10);
    const record = recorder.record();
    expect(record.files.map((f) => f.path).slice(0, 2)).toEqual([`/${read[0]?.name}`, `/${read[1]?.name}`]);

    const { r, source } = reader({ fetch: { concurrency: 2 } });
    const result = await r.prefetchRecord(record);
    expect(result).toMatchObject({ files: 121, missing: 1 });
    const log = r.requestLog();
    expect(log.every((q) => q.reason === 'prefetch')).toBe(true);
    // Coalesced: the small files span many spans, fetched in few requests.
    expect(result.spans).toBeGreaterThanOrEqual(8);
    expect(log.length).toBeLessThan(result.spans / 2);
    // In record order: the first request covers the span of the first file read.
    const layer = image.index.layers[0];
    const firstData = image.index.fileData(image.index.resolve(`/${read[0]?.name}`, true));
    const firstSpan = layer?.spans.findIndex((s, i) => s.uoff <= (firstData?.offset ?? 0) && (layer.spans[i + 1]?.uoff ?? Infinity) > (firstData?.offset ?? 0));
    const firstRequest = [...log].sort((a, b) => a.at - b.at)[0];
    expect(firstRequest !== undefined && firstRequest.first <= (firstSpan ?? -1) && (firstSpan ?? -1) <= firstRequest.last).toBe(true);
    // Everything the record names is there: reading it makes no request.
    const before = source.requests.length;
    for (const f of read) expect((await r.readFile(`/${f.name}`)).equals(f.data)).toBe(true);
    expect((await r.read('/big.bin', 1_000_000, 300_000)).equals(big.subarray(1_000_000, 1_300_000))).toBe(true);
    expect(source.requests.length).toBe(before);
  });

  it('fills the disk cache in the background under its rate cap, never while a read is fetching', async () => {
    const rate = 4 * 1024 * 1024;
    const cacheDir = join(work, 'fill-cache');
    const { r, source } = reader({ cacheDir, maxRequestBytes: 512 * 1024, fetch: { backgroundBytesPerSec: rate, backgroundQuietMs: 200 } });
    const layerSize = image.index.layers[0]?.size ?? 0;
    // A program reads while the fill runs.
    const readsDone = (async () => {
      for (let i = 0; i < 6; i++) {
        const f = small[(i * 37) % small.length];
        expect((await r.readFile(`/${f?.name}`)).equals(f?.data ?? Buffer.alloc(1))).toBe(true);
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
    })();
    const started = performance.now();
    r.startBackgroundFill();
    await readsDone;
    while (r.fetchStats.background_fill === 'running') await new Promise((resolve) => setTimeout(resolve, 50));
    const elapsed = performance.now() - started;
    expect(r.fetchStats.background_fill).toBe('done');
    const log = r.requestLog();
    const fill = log.filter((q) => q.reason === 'background');
    const fillBytes = fill.reduce((n, q) => n + q.bytes, 0);
    expect(fill.length).toBeGreaterThan(3);
    // Under the cap: the first request goes at once, each later one waits for its predecessors' share.
    const lastRequestBytes = fill[fill.length - 1]?.bytes ?? 0;
    expect(elapsed).toBeGreaterThanOrEqual(((fillBytes - lastRequestBytes - (fill[0]?.bytes ?? 0)) / rate) * 1000);
    // No background request started while a demand request was in flight.
    const demand = log.filter((q) => q.reason === 'demand');
    expect(demand.length).toBeGreaterThan(0);
    for (const b of fill) for (const d of demand) expect(b.at > d.at && b.at < d.at + d.ms).toBe(false);
    // The whole layer is cached now: a fresh reader on the same cache reads everything without a request.
    expect(source.bytes).toBeLessThan(layerSize * 1.2);
    const { r: after, source: none } = reader({ cacheDir });
    expect((await after.readFile('/big.bin')).equals(big)).toBe(true);
    for (const f of small.slice(0, 50)) expect((await after.readFile(`/${f.name}`)).equals(f.data)).toBe(true);
    expect(none.requests.length).toBe(0);
  });
  it('stops the background fill at its byte limit (its share of the host cache budget)', async () => {
    const cacheDir = join(work, 'fill-capped-cache');
    const max = 1024 * 1024;
    const messages: string[] = [];
    const { r } = reader({
      cacheDir, maxRequestBytes: 256 * 1024,
      fetch: { backgroundBytesPerSec: 64 * 1024 * 1024, backgroundQuietMs: 0, backgroundMaxBytes: max, log: (_level, msg) => { messages.push(msg); } },
    });
    r.startBackgroundFill();
    while (r.fetchStats.background_fill === 'running') await new Promise((resolve) => setTimeout(resolve, 20));
    const fill = r.requestLog().filter((q) => q.reason === 'background');
    const fillBytes = fill.reduce((n, q) => n + q.bytes, 0);
    expect(fill.length).toBeGreaterThan(0);
    expect(fillBytes).toBeLessThanOrEqual(max);
    expect(fillBytes).toBeLessThan((image.index.layers[0]?.size ?? 0) / 2);
    expect(messages).toContain('background fill stopped at its share of the host cache budget');
  });
});
