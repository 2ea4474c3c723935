import { mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mixedData } from '../testing/data';
import { buildImage } from '../testing/fixtures';
import { writeTar } from '../testing/tar-writer';
import type { LayerSource } from '../source';
import { cacheUsage, enforceCacheBudget } from './cache-budget';
import { SpanDiskCache } from './disk-cache';

const root = mkdtempSync(join(tmpdir(), 'clip-cache-budget-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const files = Array.from({ length: 12 }, (_, i) => ({ name: `data/f${i}.bin`, data: mixedData(400_000, 50 + i) }));
const tar = writeTar(files);

class CountingSource implements LayerSource {
  requests = 0;
  constructor(private readonly inner: LayerSource) {}
  async readRange(digest: string, start: number, end: number, size?: number): Promise<Buffer> {
    this.requests++;
    return this.inner.readRange(digest, start, end, size);
  }
  openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    return this.inner.openStream(digest);
  }
}

function spanFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((l) => readdirSync(join(dir, l)).filter((f) => /^\d+-\d+$/.test(f)).map((f) => join(dir, l, f)));
}

describe('host cache disk budget', () => {
  it('evicts least recently used spans down to the budget; a hit counts as a use', async () => {
    const cacheDir = join(root, 'lru');
    const img = await buildImage([tar], 'gzip', { span: 256 * 1024, minSpan: 256 * 1024 });
    await img.reader({ cacheDir }).readFile('/data/f0.bin');
    for (let i = 1; i < 12; i++) await img.reader({ cacheDir }).readFile(`/data/f${i}.bin`);
    const all = spanFiles(cacheDir);
    const usage = await cacheUsage(cacheDir);
    expect(usage.spans).toBe(all.length);
    expect(usage.bytes).toBe(all.reduce((n, f) => n + statSync(f).size, 0));
    // ages: the first span oldest, ..., the last newest; then the oldest is read again
    const t0 = Date.now() / 1000 - 3600;
    const ordered = all.sort((a, b) => Number(a.split('/').pop()?.split('-')[0]) - Number(b.split('/').pop()?.split('-')[0]));
    ordered.forEach((f, i) => utimesSync(f, t0 + i, t0 + i));
    await img.reader({ cacheDir, source: new CountingSource(img.source) }).read('/data/f0.bin', 0, 100);
    const oldestFirst = ordered[0] ?? '';
    expect(statSync(oldestFirst).mtimeMs).toBeGreaterThan((t0 + 3600) * 1000 - 10_000);

    const budget = Math.floor(usage.bytes / 2);
    const report = await enforceCacheBudget(cacheDir, budget);
    expect(report.bytes).toBeLessThanOrEqual(budget);
    expect(report.evictedSpans).toBeGreaterThan(0);
    expect(report.bytes + report.evictedBytes).toBe(usage.bytes);
    const left = new Set(spanFiles(cacheDir));
    expect(left.has(oldestFirst)).toBe(true); // used again: kept
    expect(left.has(ordered[1] ?? '')).toBe(false); // the least recently used one: gone
    expect(left.has(ordered.at(-1) ?? '')).toBe(true);
    // within budget: nothing to do
    expect((await enforceCacheBudget(cacheDir, budget)).evictedSpans).toBe(0);
  });

  it('never breaks a reader: readers racing evictions get the right bytes, evicted spans are fetched again', async () => {
    const cacheDir = join(root, 'race');
    const img = await buildImage([tar], 'gzip', { span: 256 * 1024, minSpan: 64 * 1024 });
    let evicting = true;
    let evicted = 0;
    const evictor = (async () => {
      while (evicting) {
        evicted += (await enforceCacheBudget(cacheDir, 300_000, { lowWater: 0.1 })).evictedSpans;
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const sources: CountingSource[] = [];
    try {
      // four "processes" (span stores of their own) reading every file three times
      await Promise.all(Array.from({ length: 4 }, async (_, p) => {
        for (let round = 0; round < 3; round++) {
          const source = new CountingSource(img.source);
          sources.push(source);
          const reader = img.reader({ cacheDir, source, memoryBytes: 0 });
          for (const f of [...files].reverse().slice(p)) expect((await reader.readFile(`/${f.name}`)).equals(f.data)).toBe(true);
        }
      }));
    } finally {
      evicting = false;
      await evictor;
    }
    expect(evicted).toBeGreaterThan(0);
    expect(sources.reduce((n, s) => n + s.requests, 0)).toBeGreaterThan(0);
  });

  it('a reader waiting for another process finds the claim released without a file and fetches at once', async () => {
    const cacheDir = join(root, 'released');
    const img = await buildImage([tar], 'gzip', { span: 256 * 1024, minSpan: 256 * 1024 });
    const layer = img.index.layers[0];
    const span = layer?.spans[1];
    if (!layer || !span) throw new Error('no span');
    const disk = new SpanDiskCache(cacheDir);
    const release = await disk.claim(layer.diffId, span); // "another process" starts fetching
    if (!release) throw new Error('no claim');
    const source = new CountingSource(img.source);
    // lockWaitMs far beyond the test's timeout: only noticing the released claim can finish it
    const reading = img.reader({ cacheDir, source, lockWaitMs: 600_000 }).read('/data/f0.bin', span.uoff - 1024, 100);
    await new Promise((r) => setTimeout(r, 100));
    await release(); // ... and gives up (or its span was evicted at once)
    expect((await reading).length).toBe(100);
    expect(source.requests).toBe(1);
  });

  it('removes debris of killed processes (temp files and claims older than an hour), not fresh ones', async () => {
    const cacheDir = join(root, 'debris');
    const layerDir = join(cacheDir, `sha256_${'a'.repeat(64)}`);
    const img = await buildImage([tar], 'gzip');
    await img.reader({ cacheDir }).read('/data/f3.bin', 0, 10);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(layerDir, { recursive: true });
    const old = Date.now() / 1000 - 7200;
    for (const name of ['0-10.tmp-1-aa', '10-10.lock']) {
      writeFileSync(join(layerDir, name), 'x');
      utimesSync(join(layerDir, name), old, old);
    }
    writeFileSync(join(layerDir, '20-10.lock'), '');
    await enforceCacheBudget(cacheDir, 1 << 30);
    expect(readdirSync(layerDir).sort()).toEqual(['20-10.lock']);
  });
});
