import { describe, expect, it } from 'vitest';
import { mixedData, prng } from '../testing/data';
import { buildImage, type BuiltImage } from '../testing/fixtures';
import { writeTar, type RawEntry } from '../testing/tar-writer';
import type { LayerSource } from '../source';
import { verifyIndex } from '../verify';

/** a large file: mostly incompressible (like code and data in a shared library) */
function binary(size: number, seed: number): Buffer {
  const rnd = prng(seed);
  const out = mixedData(size, seed);
  for (let i = 0; i < size * 0.7; i++) out[i] = Math.floor(rnd() * 256);
  return out;
}

/** source-like text: words from a vocabulary of 600 random ones (gzip -6 makes about a third of it, like Python source) */
const VOCABULARY = (() => {
  const rnd = prng(5);
  return Array.from({ length: 600 }, () => Array.from({ length: 3 + Math.floor(rnd() * 8) }, () => String.fromCharCode(97 + Math.floor(rnd() * 26))).join(''));
})();
function source(size: number, seed: number): Buffer {
  const rnd = prng(seed);
  let text = '';
  while (text.length < size) text += `${VOCABULARY[Math.floor(rnd() * VOCABULARY.length)] ?? ''}${rnd() < 0.12 ? '\n    ' : rnd() < 0.1 ? '(' : ' '}`;
  return Buffer.from(text.slice(0, size));
}

/** large files, then a long run of small source-like files (as Docker's path order puts /usr/lib before /usr/share) */
function layerTar(): { tar: Buffer; small: string[]; large: string[] } {
  const rnd = prng(11);
  const entries: RawEntry[] = [];
  const small: string[] = [];
  const large: string[] = [];
  for (let i = 0; i < 5; i++) {
    entries.push({ name: `usr/lib/libbig${i}.so`, data: binary(3_000_000, 100 + i) });
    large.push(`/usr/lib/libbig${i}.so`);
  }
  for (let i = 0; i < 1500; i++) {
    const name = `usr/lib/python3/pkg${i % 30}/mod${i}.py`;
    entries.push({ name, data: source(2000 + Math.floor(rnd() * 18_000), 1000 + i) });
    small.push(`/${name}`);
  }
  return { tar: writeTar(entries), small, large };
}

class CountingSource implements LayerSource {
  bytes = 0;
  constructor(private readonly inner: LayerSource) {}
  async readRange(digest: string, start: number, end: number, size?: number): Promise<Buffer> {
    const b = await this.inner.readRange(digest, start, end, size);
    this.bytes += b.length;
    return b;
  }
  openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    return this.inner.openStream(digest);
  }
}

async function meanColdRead(img: BuiltImage, paths: string[]): Promise<number> {
  let total = 0;
  for (const p of paths) {
    const src = new CountingSource(img.source);
    await img.reader({ source: src }).readFile(p);
    total += src.bytes;
  }
  return total / paths.length;
}

describe('checkpoint placement by file size (checkpoint-plan.ts)', () => {
  const { tar, small, large } = layerTar();
  const MiB = 1 << 20;

  it('puts small files in smaller spans and keeps the index within 1 % of the compressed layer', async () => {
    const uniform = await buildImage([tar], 'gzip', { span: MiB, minSpan: MiB });
    const planned = await buildImage([tar], 'gzip', { span: MiB });
    const blobSize = (img: BuiltImage) => [...img.blobs.values()].reduce((n, b) => n + b.length, 0);
    expect(planned.indexBytes.length).toBeLessThanOrEqual(0.01 * blobSize(planned));
    // the budget left after uniform spans (0.6 % here) buys half as many spans again, around the small files
    expect(planned.index.layers[0]?.spans.length ?? 0).toBeGreaterThan(1.4 * (uniform.index.layers[0]?.spans.length ?? 0));

    const sample = small.filter((_, i) => i % 25 === 0);
    const before = await meanColdRead(uniform, sample);
    const after = await meanColdRead(planned, sample);
    expect(after).toBeLessThan(0.85 * before);

    // inside large files spans stay long: large files are read in large pieces anyway
    const layer = planned.index.layers[0];
    if (!layer) throw new Error('no layer');
    for (const path of large) {
      const data = planned.index.fileData(planned.index.resolve(path));
      if (!data) throw new Error(`no data for ${path}`);
      const inside = layer.spans.filter((s, i) => s.uoff >= data.offset && (layer.spans[i + 1]?.uoff ?? Infinity) <= data.offset + data.size - 64 * 1024);
      expect(inside.length).toBeGreaterThan(0);
      for (const s of inside) expect(s.ulen).toBeGreaterThanOrEqual(MiB / 2);
    }

    // every span still inflates from its own checkpoint to its digest
    await expect(verifyIndex(planned.index, planned.source)).resolves.toMatchObject({ layers: [expect.objectContaining({ spans: layer.spans.length })] });
  });

  it('spends what the budget allows: a larger budget buys more checkpoints, a tiny one none beyond uniform spans', async () => {
    const tight = await buildImage([tar], 'gzip', { span: MiB, indexBudget: 0.001 });
    const uniform = await buildImage([tar], 'gzip', { span: MiB, minSpan: MiB });
    const normal = await buildImage([tar], 'gzip', { span: MiB });
    const generous = await buildImage([tar], 'gzip', { span: MiB, indexBudget: 0.05 });
    const spans = (img: BuiltImage) => img.index.layers[0]?.spans.length ?? 0;
    // with no budget to spare only windowless checkpoints (a record each) come on top of uniform spans
    expect(tight.indexBytes.length).toBeLessThan(uniform.indexBytes.length * 1.1);
    expect(spans(normal)).toBeGreaterThan(spans(tight));
    expect(spans(generous)).toBeGreaterThan(spans(normal));
  });
});
