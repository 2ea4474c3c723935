import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { mixedData } from './testing/data';
import { buildImage, type TestCompression } from './testing/fixtures';
import { writeTar } from './testing/tar-writer';
import { MemoryLayerSource } from './source';
import { verifyIndex } from './verify';

const tars = [
  writeTar([{ name: 'a.bin', data: mixedData(3_000_000, 1) }, { name: 'b.txt', data: 'hello' }]),
  writeTar([{ name: 'c.bin', data: mixedData(700_000, 2) }]),
];

describe('verifyIndex', () => {
  for (const how of ['gzip-9', 'multi-gzip', 'none', 'zstd'] as TestCompression[]) {
    it(`checks every span from its own checkpoint and the diff_id (${how})`, async () => {
      const img = await buildImage(tars, how, { span: 256 * 1024 });
      const report = await verifyIndex(img.index, img.source);
      expect(report.layers.map((l) => l.entries)).toEqual([2, 1]);
      expect(report.layers[0]?.spans).toBe(img.index.layers[0]?.spans.length);
      expect(report.bytes).toBe(img.index.imageSize);
    });
  }

  it('fails on a blob that does not match', async () => {
    const img = await buildImage(tars, 'gzip', { span: 256 * 1024 });
    const blobs = new Map(img.blobs);
    const [digest, blob] = [...blobs][0] ?? ['', Buffer.alloc(0)];
    const bad = Buffer.from(blob);
    bad[Math.floor(bad.length / 2)] = (bad[Math.floor(bad.length / 2)] ?? 0) ^ 0xff;
    blobs.set(digest, bad);
    await expect(verifyIndex(img.index, new MemoryLayerSource(blobs))).rejects.toMatchObject({
      code: expect.stringMatching(/SPAN_CORRUPT|GZIP_CORRUPT|DIGEST_MISMATCH/),
    });
  });
});

// Issue 8 item 5: a normal layer next to an empty one, made by real tools — a zero-byte
// uncompressed layer, `gzip` of an empty file, and GNU `tar -cf x.tar -T /dev/null` (only end
// blocks) — indexes, reads and verifies.
describe('verifyIndex with empty layers', () => {
  const normal = writeTar([{ name: 'a.bin', data: mixedData(700_000, 3) }, { name: 'b.txt', data: 'hello' }]);
  const endBlocksOnly = execFileSync('tar', ['-cf', '-', '-T', '/dev/null']);
  const cases: Array<[string, Buffer, TestCompression]> = [
    ['a zero-byte uncompressed layer', Buffer.alloc(0), 'none'],
    ['gzip of an empty file', Buffer.alloc(0), 'gzip'],
    ['a tar of only end blocks (uncompressed)', endBlocksOnly, 'none'],
    ['a tar of only end blocks (gzip)', endBlocksOnly, 'gzip'],
    ['a tar of only end blocks (zstd)', endBlocksOnly, 'zstd'],
    ['a zero-byte zstd layer', Buffer.alloc(0), 'zstd'],
  ];
  for (const [what, empty, how] of cases) {
    it(what, async () => {
      const img = await buildImage([normal, empty], ['gzip', how], { span: 256 * 1024 });
      const report = await verifyIndex(img.index, img.source);
      expect(report.layers.map((l) => l.entries)).toEqual([2, 0]);
      expect(report.layers[1]?.uncompressedSize).toBe(empty.length);
      expect(report.bytes).toBe(img.index.imageSize);
      expect((await img.reader().readFile('/b.txt')).toString()).toBe('hello');
    });
  }
});
