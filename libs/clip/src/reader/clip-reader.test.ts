import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipIndex } from '../format/index-file';
import { ClipReader } from './clip-reader';
import { spanAt } from './span-store';
import { FallbackLayerSource, type LayerSource } from '../source';
import { mixedData, prng } from '../testing/data';
import { buildImage, type BuiltImage, type TestCompression } from '../testing/fixtures';
import { writeTar } from '../testing/tar-writer';

const root = mkdtempSync(join(tmpdir(), 'clip-reader-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** a source tree with files of many sizes, some spanning several spans */
function makeTree(dir: string): string[] {
  const rnd = prng(42);
  const files: string[] = [];
  for (let d = 0; d < 6; d++) {
    mkdirSync(join(dir, `d${d}`), { recursive: true });
    for (let f = 0; f < 12; f++) {
      const size = f === 0 ? 0 : Math.floor(rnd() ** 3 * 900_000);
      const path = join(dir, `d${d}`, `f${f}.bin`);
      writeFileSync(path, mixedData(size, d * 100 + f + 1));
      files.push(path);
    }
  }
  writeFileSync(join(dir, 'big.bin'), mixedData(5_000_000, 999));
  files.push(join(dir, 'big.bin'));
  return files;
}

function tarOf(dir: string, format: 'pax' | 'gnu'): Buffer {
  return execFileSync('tar', ['-C', dir, `--format=${format}`, '-cf', '-', '.'], { maxBuffer: 1 << 30 });
}

/** counts calls and can corrupt what it serves */
class CountingSource implements LayerSource {
  requests = 0;
  corrupt = false;
  delayMs = 0;
  constructor(private readonly inner: LayerSource) {}
  async readRange(digest: string, start: number, end: number): Promise<Buffer> {
    this.requests++;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    const b = await this.inner.readRange(digest, start, end);
    if (this.corrupt) {
      // flip a byte inside the compressed data; for gzip that either breaks
      // inflation or (more often) yields wrong bytes
      const i = Math.floor(b.length / 2);
      b[i] = (b[i] ?? 0) ^ 0x55;
    }
    return b;
  }
  async openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    this.requests++;
    return this.inner.openStream(digest);
  }
}

describe('ClipReader over real tar layers', () => {
  const srcA = join(root, 'a');
  const srcB = join(root, 'b');
  let files: string[] = [];
  beforeAll(() => {
    files = makeTree(srcA);
    mkdirSync(join(srcB, 'd1'), { recursive: true });
    writeFileSync(join(srcB, 'd1', 'f3.bin'), 'upper layer wins');
    writeFileSync(join(srcB, 'new.txt'), mixedData(300_000, 5));
  });

  const cases: Array<[TestCompression, 'pax' | 'gnu']> = [
    ['gzip-1', 'pax'],
    ['gzip-9', 'gnu'],
    ['node-gzip', 'pax'],
    ['multi-gzip', 'gnu'],
    ['none', 'gnu'],
    ['zstd', 'pax'],
  ];
  for (const [how, format] of cases) {
    it(`reads every file exactly (${how}, tar --format=${format})`, async () => {
      const img = await buildImage([tarOf(srcA, format), tarOf(srcB, format)], how, { span: 256 * 1024 });
      const r = img.reader();
      for (const f of files) {
        const rel = `/${relative(srcA, f)}`;
        const want = rel === '/d1/f3.bin' ? Buffer.from('upper layer wins') : readFileSync(f);
        const got = await r.readFile(rel);
        expect(got.equals(want), rel).toBe(true);
        const st = await r.stat(rel);
        expect(st.size).toBe(want.length);
        expect(st.mode).toBe(lstatSync(f).mode);
      }
      expect((await r.readFile('/new.txt')).equals(readFileSync(join(srcB, 'new.txt')))).toBe(true);
      // random reads at random offsets
      const big = readFileSync(join(srcA, 'big.bin'));
      const rnd = prng(3);
      for (let i = 0; i < 40; i++) {
        const off = Math.floor(rnd() * big.length);
        const len = Math.floor(rnd() * 300_000);
        const got = await r.read('/big.bin', off, len);
        expect(got.equals(big.subarray(off, off + len))).toBe(true);
      }
      expect((await r.read('/big.bin', big.length + 10, 100)).length).toBe(0);
    });
  }

  it('a cold small read makes one request of at most about one span', async () => {
    const img = await buildImage([tarOf(srcA, 'pax')], 'gzip-9');
    const src = new CountingSource(img.source);
    const r = img.reader({ source: src });
    const layer = img.index.layers[0];
    if (!layer) throw new Error('no layer');
    await r.read('/big.bin', 2_500_000, 4096);
    expect(src.requests).toBe(1);
    const maxSpanCompressed = Math.max(
      ...layer.spans.map((s, i) => (layer.spans[i + 1]?.coff ?? layer.size) - s.coff + 1),
    );
    expect(r.stats.bytes).toBeLessThanOrEqual(maxSpanCompressed);
    expect(r.stats.bytes).toBeLessThan(layer.size / 3);
    // a read crossing several uncached spans is still one request
    const src2 = new CountingSource(img.source);
    await img.reader({ source: src2 }).read('/big.bin', 0, 3_000_000);
    expect(src2.requests).toBe(1);
  });

  it('reads across gzip member boundaries with one request', async () => {
    const want = mixedData(6_000_000, 31);
    // the member cuts (at 1/3 and 1/2 of the tar) fall inside this one file
    const tar = writeTar([{ name: 'big.bin', data: want }]);
    const img = await buildImage([tar], 'multi-gzip', { span: 256 * 1024 });
    // compress()'s member cuts; each member starts a span
    const memberStarts = [Math.floor(tar.length / 3), Math.floor(tar.length / 2) + 7];
    const uoffs = new Set(img.index.layers[0]?.spans.map((s) => s.uoff));
    expect(memberStarts.every((u) => uoffs.has(u))).toBe(true);
    const src = new CountingSource(img.source);
    const r = img.reader({ source: src });
    expect((await r.readFile('/big.bin')).equals(want)).toBe(true);
    expect(src.requests).toBe(1);
  });

  it('concurrent readers of one span share one fetch', async () => {
    const img = await buildImage([tarOf(srcA, 'pax')], 'gzip');
    const src = new CountingSource(img.source);
    src.delayMs = 30;
    // (a forward scan like this one would start readahead: fetch-scheduler.test.ts covers that)
    const r = img.reader({ source: src, fetch: { readaheadBytes: 0 } });
    // ten reads inside one span of big.bin
    const layer = img.index.layers[0];
    const data = img.index.fileData(img.index.resolve('/big.bin'));
    const span = layer?.spans.find((s) => data !== undefined && s.uoff >= data.offset && s.ulen >= 20_000);
    if (!layer || !data || !span) throw new Error('no span inside big.bin');
    const at = span.uoff - data.offset;
    const reads = await Promise.all(Array.from({ length: 10 }, (_, i) => r.read('/big.bin', at + i * 1000, 500)));
    expect(reads.every((b) => b.length === 500)).toBe(true);
    expect(src.requests).toBe(1);
  });

  it('detects corrupt span bytes from the registry and does not cache them', async () => {
    const cacheDir = join(root, 'cache-corrupt');
    for (const how of ['gzip', 'none'] as const) {
      const img = await buildImage([tarOf(srcA, 'pax')], how);
      const src = new CountingSource(img.source);
      src.corrupt = true;
      const r = img.reader({ source: src, cacheDir });
      await expect(r.read('/big.bin', 1_000_000, 10_000)).rejects.toMatchObject({
        code: expect.stringMatching(/SPAN_CORRUPT|GZIP_CORRUPT/),
      });
      src.corrupt = false;
      const good = await r.read('/big.bin', 1_000_000, 10_000);
      expect(good.equals(readFileSync(join(srcA, 'big.bin')).subarray(1_000_000, 1_010_000))).toBe(true);
    }
  });

  it('fills a shared disk cache span by span; a second reader (another process) needs no requests', async () => {
    const cacheDir = join(root, 'cache-shared');
    const img = await buildImage([tarOf(srcA, 'pax')], 'gzip');
    const src1 = new CountingSource(img.source);
    const r1 = img.reader({ source: src1, cacheDir });
    const want = readFileSync(join(srcA, 'big.bin'));
    expect((await r1.read('/big.bin', 0, 2_000_000)).equals(want.subarray(0, 2_000_000))).toBe(true);
    const layer = img.index.layers[0];
    if (!layer) throw new Error('no layer');
    const dir = join(cacheDir, layer.diffId.replace(':', '_'));
    expect(readdirSync(dir).length).toBeGreaterThan(0);
    expect(readdirSync(dir).some((f) => f.includes('.tmp'))).toBe(false);

    const src2 = new CountingSource(img.source);
    const r2 = img.reader({ source: src2, cacheDir });
    expect((await r2.read('/big.bin', 10, 1_500_000)).equals(want.subarray(10, 1_500_010))).toBe(true);
    expect(src2.requests).toBe(0);
    expect(r2.stats.diskHits).toBeGreaterThan(0);

    // a damaged cache file is detected and fetched again
    for (const f of readdirSync(dir)) writeFileSync(join(dir, f), 'garbage');
    const src3 = new CountingSource(img.source);
    const r3 = img.reader({ source: src3, cacheDir });
    expect((await r3.read('/big.bin', 10, 100)).equals(want.subarray(10, 110))).toBe(true);
    expect(src3.requests).toBe(1);

    // two readers racing on an empty cache both succeed and leave whole files
    rmSync(dir, { recursive: true, force: true });
    const [a, b] = await Promise.all([
      img.reader({ cacheDir }).readFile('/big.bin'),
      img.reader({ cacheDir }).readFile('/big.bin'),
    ]);
    expect(a.equals(want) && b.equals(want)).toBe(true);
    const r4 = img.reader({ source: new CountingSource(img.source), cacheDir });
    expect((await r4.readFile('/big.bin')).equals(want)).toBe(true);
    expect(r4.stats.requests).toBe(0);
  });

  it('concurrent reads of one span in one process share its fetch, never waiting on their own process\'s claim', async () => {
    const img = await buildImage([tarOf(srcA, 'pax')], 'gzip');
    const want = readFileSync(join(srcA, 'big.bin'));
    const layer = img.index.layers[0];
    const data = img.index.fileData(img.index.resolve('/big.bin', true));
    const spans = layer === undefined || data === undefined ? -1 : spanAt(layer, data.offset + 4_499_999) - spanAt(layer, data.offset + 1_000_000) + 1;
    // The race depends on when the claims' file operations finish: try it a few times.
    for (let attempt = 0; attempt < 6; attempt++) {
      const src = new CountingSource(img.source);
      src.delayMs = 20;
      const r = img.reader({ source: src, cacheDir: join(root, `cache-same-process-${attempt}`), fetch: { readaheadBytes: 0 } });
      // One read over four spans (it claims them one after the other) and small reads of its
      // spans, as readahead and the kernel's parallel reads make them.
      const offsets = [1_000_100, 2_000_000, 3_100_000, 4_400_000];
      const [long, ...small] = await Promise.all([r.read('/big.bin', 1_000_000, 3_500_000), ...offsets.map((off) => r.read('/big.bin', off, 4096))]);
      expect(long?.equals(want.subarray(1_000_000, 4_500_000))).toBe(true);
      small.forEach((got, i) => expect(got.equals(want.subarray(offsets[i] ?? 0, (offsets[i] ?? 0) + 4096))).toBe(true));
      // Every span fetched once. A read that found a span's claim taken by its own process would
      // wait for the cache file (10 s) and come back as a disk hit, or fetch the span again.
      expect(r.stats.spansFetched).toBe(spans);
      expect(r.stats.diskHits).toBe(0);
    }
  });

  it('a second process waits for the span another one is fetching instead of fetching it again', async () => {
    const cacheDir = join(root, 'cache-lock');
    const img = await buildImage([tarOf(srcA, 'pax')], 'gzip');
    const slow = new CountingSource(img.source);
    slow.delayMs = 1000;
    const other = new CountingSource(img.source);
    // two readers with separate span stores = two processes sharing the host cache
    const a = img.reader({ source: slow, cacheDir });
    const b = img.reader({ source: other, cacheDir });
    const layerDir = join(cacheDir, (img.index.layers[0]?.diffId ?? '').replace(':', '_'));
    const pa = a.read('/big.bin', 2_000_000, 4096);
    // b reads once a holds the claim (a fixed 50 ms was not enough on a loaded machine)
    const claimed = (): boolean => { try { return readdirSync(layerDir).some((f) => f.endsWith('.lock')); } catch { return false; } };
    for (let waited = 0; !claimed(); waited += 5) {
      if (waited > 10_000) throw new Error('a never claimed the span');
      await new Promise((r) => setTimeout(r, 5));
    }
    const [ra, rb] = await Promise.all([pa, b.read('/big.bin', 2_000_100, 4096)]);
    const want = readFileSync(join(srcA, 'big.bin'));
    expect(ra.equals(want.subarray(2_000_000, 2_004_096))).toBe(true);
    expect(rb.equals(want.subarray(2_000_100, 2_004_196))).toBe(true);
    expect(slow.requests).toBe(1);
    expect(other.requests).toBe(0);
    expect(b.stats.diskHits).toBe(1);
    expect(readdirSync(layerDir).some((f) => f.endsWith('.lock'))).toBe(false);
  });

  it('a cache tier serving corrupt bytes is caught by the span digests and the next tier serves the read', async () => {
    for (const how of ['gzip', 'none'] as const) {
      const img = await buildImage([tarOf(srcA, 'pax')], how);
      const corrupting = new CountingSource(img.source);
      corrupting.corrupt = true;
      const registrySrc = new CountingSource(img.source);
      const fallbacks: unknown[] = [];
      const source = new FallbackLayerSource([corrupting, registrySrc], (_tier, err) => fallbacks.push(err));
      const cacheDir = join(root, `cache-corrupt-tier-${how}`);
      const r = img.reader({ source, cacheDir });
      const want = readFileSync(join(srcA, 'big.bin'));
      expect((await r.read('/big.bin', 1_000_000, 200_000)).equals(want.subarray(1_000_000, 1_200_000))).toBe(true);
      expect(corrupting.requests).toBeGreaterThan(0);
      expect(registrySrc.requests).toBeGreaterThan(0);
      expect(r.stats.fallbacks).toBe(fallbacks.length);
      expect(fallbacks[0]).toMatchObject({ code: expect.stringMatching(/SPAN_CORRUPT|GZIP_CORRUPT/) });
      // only verified bytes reached the disk cache: another reader with no source reads them back
      expect((await img.reader({ cacheDir }).read('/big.bin', 1_000_000, 200_000)).equals(want.subarray(1_000_000, 1_200_000))).toBe(true);
    }
  });

  it('falls back from a failing cache tier to the registry, and prefetches an access list', async () => {
    const img = await buildImage([tarOf(srcA, 'pax')], 'gzip');
    const down: LayerSource = {
      readRange: async () => {
        throw new Error('content cache unreachable');
      },
      openStream: async () => {
        throw new Error('content cache unreachable');
      },
    };
    const registrySrc = new CountingSource(img.source);
    const fallbacks: number[] = [];
    const source = new FallbackLayerSource([down, registrySrc], (tier) => fallbacks.push(tier));
    const cacheDir = join(root, 'cache-prefetch');
    const r = img.reader({ source, cacheDir });
    const [p1, p2] = files
      .filter((f) => !f.endsWith('big.bin'))
      .sort((a, b) => lstatSync(b).size - lstatSync(a).size)
      .map((f) => `/${relative(srcA, f)}`);
    expect(await r.prefetch([p1 ?? '', p2 ?? '', '/missing', '/d0'])).toBe(2);
    expect(fallbacks.length).toBeGreaterThan(0);
    const before = registrySrc.requests;
    const fresh = img.reader({ source: registrySrc, cacheDir });
    expect((await fresh.readFile(p2 ?? '')).equals(readFileSync(join(srcA, p2 ?? '')))).toBe(true);
    expect(registrySrc.requests).toBe(before);
  });

  it('answers with errno-like codes', async () => {
    const img = await buildImage([tarOf(srcA, 'pax')], 'none');
    const r = img.reader();
    await expect(r.stat('/nope')).rejects.toMatchObject({ code: 'ENOENT', errno: 2 });
    await expect(r.stat('/big.bin/x')).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(r.readdir('/big.bin')).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(r.read('/d0', 0, 1)).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(r.readlink('/big.bin')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(r.read('/big.bin', -1, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    // negative lookups are cached and still answer the same
    await expect(r.stat('/nope')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await r.readdir('/')).toEqual(['big.bin', 'd0', 'd1', 'd2', 'd3', 'd4', 'd5']);
  });
});

describe('index file', () => {
  let img: BuiltImage;
  beforeAll(async () => {
    img = await buildImage([writeTar([{ name: 'a', data: 'hello' }, { name: 'l', type: '2', linkname: 'a' }])], 'gzip');
  });

  it('round-trips image metadata', () => {
    const idx = ClipIndex.fromBuffer(img.indexBytes);
    expect(idx.image.config.cmd).toEqual(['/bin/sh']);
    expect(idx.image.config.entrypoint).toBeNull();
    expect(idx.image.config.labels).toEqual({ a: 'b' });
    expect(idx.layers[0]?.compression).toBe('gzip');
    expect(idx.build.span).toBe(1024 * 1024);
  });

  it('rejects truncated, corrupt and foreign files clearly', () => {
    const b = img.indexBytes;
    expect(() => ClipIndex.fromBuffer(b.subarray(0, b.length - 1))).toThrow(/truncated/);
    const flipped = Buffer.from(b);
    flipped[b.length - 3] = (flipped[b.length - 3] ?? 0) ^ 1;
    expect(() => ClipIndex.fromBuffer(flipped)).toThrow(/checksum/);
    expect(() => ClipIndex.fromBuffer(Buffer.from('{"json": true}'))).toThrow(/not a clip index/);
    const v = Buffer.from(b);
    v.writeUInt32LE(99, 8);
    expect(() => ClipIndex.fromBuffer(v)).toThrow(expect.objectContaining({ code: 'INDEX_VERSION' }));
    expect(() => ClipIndex.fromBuffer(v)).toThrow(/version 99 is not supported \(this build reads versions 1 and 2\); rebuild the index/);
  });

  it('stores names as bytes (version 2): names that are not UTF-8 stay distinct and exact', async () => {
    const tar = writeTar([
      { name: 'names/caf\xe9.txt', data: 'a' },
      { name: 'names/caf\xe8.txt', data: 'bb' },
      { name: 'names/caf\xc3\xa9.txt', data: 'utf8' },
      { name: 'names2/x', pax: { path: Buffer.from('names2/\xff\xfe.bin', 'latin1') }, data: 'ccc' },
      { name: 'names/l', type: '2', linkname: 'caf\xe9.txt' },
    ]);
    const named = await buildImage([tar]);
    const idx = ClipIndex.fromBuffer(named.indexBytes);
    expect(idx.formatVersion).toBe(2);
    const r = named.reader();
    expect(await r.readdir('/names')).toEqual(['caf\xc3\xa9.txt', 'caf\xe8.txt', 'caf\xe9.txt', 'l']);
    expect((await r.readFile('/names/caf\xe9.txt')).toString()).toBe('a');
    expect((await r.readFile('/names/caf\xe8.txt')).toString()).toBe('bb');
    expect((await r.readFile('/names2/\xff\xfe.bin')).toString()).toBe('ccc');
    expect(await r.readlink('/names/l')).toBe('caf\xe9.txt');
    expect((await r.stat('/names/l')).size).toBe(8); // the link target's length in bytes
    await expect(r.stat('/names/caf\xe7.txt')).rejects.toThrow("ENOENT: no such file or directory, '/names/caf\\xe7.txt'");
    await expect(r.stat('/names/€')).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('still reads version 1 files (names stored as UTF-8, the same layout)', async () => {
    const utf8 = await buildImage([writeTar([{ name: 'caf\xc3\xa9/\xe2\x82\xac.txt', data: 'euro' }])]);
    const v1 = Buffer.from(utf8.indexBytes);
    v1.writeUInt32LE(1, 8);
    const idx = ClipIndex.fromBuffer(v1);
    expect(idx.formatVersion).toBe(1);
    const r = new ClipReader(idx, { source: utf8.source });
    expect(await r.readdir('/caf\xc3\xa9')).toEqual(['\xe2\x82\xac.txt']);
    expect((await r.readFile('/caf\xc3\xa9/\xe2\x82\xac.txt')).toString()).toBe('euro');
  });

  // How fast it opens is measured by bench/clip-build.ts (docs/benchmarks-clip.md, "Opening a
  // 50k-file index"), not here.
  it('opens a 50k-file index and lists and reads in it', async () => {
    const entries = [];
    for (let d = 0; d < 50; d++) {
      for (let f = 0; f < 1000; f++) entries.push({ name: `usr/lib/pkg${d}/file-${f}.py`, data: `# ${d}/${f}\n` });
    }
    const big = await buildImage([writeTar(entries)], 'gzip');
    const idx = ClipIndex.fromBuffer(big.indexBytes);
    expect(idx.inodeCount).toBeGreaterThan(50_000);
    const r = big.reader();
    expect((await r.readdir('/usr/lib/pkg7')).length).toBe(1000);
    expect(await r.readdir('/usr/lib')).toHaveLength(50);
    expect((await r.readFile('/usr/lib/pkg49/file-999.py')).toString()).toBe('# 49/999\n');
  });
});
