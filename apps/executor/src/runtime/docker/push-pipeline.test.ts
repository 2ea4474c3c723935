import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { ClipReader, LayerIndexer, MemoryLayerSource, indexLayers, type ImageInfo } from '@cryo/clip';
import { MediaType } from '@cryo/oci';
import { GzipPool } from './gzip-pool';
import { compressLayer } from './push-pipeline';

const dir = mkdtempSync(join(tmpdir(), 'push-pipeline-'));
const pool = new GzipPool({ workers: 2, level: 1 });
afterAll(async () => {
  await pool.close();
  rmSync(dir, { recursive: true, force: true });
});

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A layer as GNU tar writes it: text that compresses, random bytes that do not, small and empty files. */
function fixtureTar(): Buffer {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'etc'), { recursive: true });
  writeFileSync(join(src, 'random.bin'), randomBytes(2_500_000));
  writeFileSync(join(src, 'etc', 'text.conf'), Array.from({ length: 60_000 }, (_, i) => `line ${i} of a config file\n`).join(''));
  writeFileSync(join(src, 'empty'), '');
  writeFileSync(join(src, 'small'), 'hello');
  execFileSync('tar', ['-C', src, '--format=posix', '--sort=name', '-cf', join(dir, 'layer.tar'), '.']);
  return readFileSync(join(dir, 'layer.tar'));
}

async function* pieces(b: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

describe('compressLayer', () => {
  it('makes a multi-member gzip whose clip index is what LayerIndexer computes from the blob with uniform spans, and reads back through clip', async () => {
    const tar = fixtureTar();
    const uploaded: Buffer[] = [];
    const raw: Buffer[] = [];
    const span = 256 * 1024;
    const layer = await compressLayer(pieces(tar, 100_000), pool, {
      upload: { write: async (c) => { uploaded.push(Buffer.from(c)); } },
      raw: async (c) => { raw.push(Buffer.from(c)); },
    }, { span, expectedSize: tar.length });
    const blob = Buffer.concat(uploaded);
    expect(Buffer.concat(raw).equals(tar)).toBe(true);
    expect(gunzipSync(blob).equals(tar)).toBe(true); // one valid gzip stream, all members
    expect(layer).toMatchObject({ digest: sha256(blob), diffId: sha256(tar), size: blob.length, uncompressedSize: tar.length });
    expect(layer.members).toBe(Math.ceil(tar.length / span));
    expect(layer.storedMembers).toBeGreaterThan(0); // the random file is stored, not compressed

    const reference = new LayerIndexer('gzip', span, { minSpan: span });
    reference.push(blob);
    const expected = await reference.end();
    const view = (spans: typeof expected.spans) => spans.map((s) => [s.uoff, s.ulen, s.coff, s.bits, s.window.length, s.sha256.toString('hex')]);
    expect(view(layer.indexed.spans)).toEqual(view(expected.spans));
    expect(layer.indexed.entries.map((e) => [e.name, e.type, e.size, e.dataOffset])).toEqual(expected.entries.map((e) => [e.name, e.type, e.size, e.dataOffset]));
    expect([layer.indexed.digest, layer.indexed.diffId, layer.indexed.uncompressedSize]).toEqual([expected.digest, expected.diffId, expected.uncompressedSize]);

    const image: ImageInfo = {
      reference: 'test/layer:1', registry: 'r', repository: 'test/layer', manifestDigest: sha256(Buffer.from('m')), manifestMediaType: MediaType.DockerManifest,
      configDigest: sha256(Buffer.from('c')), os: 'linux', architecture: 'amd64',
      config: { env: [], cmd: null, entrypoint: null, workingDir: '', user: '', labels: {}, exposedPorts: [] },
    };
    const built = await indexLayers(image, [{
      digest: layer.digest, mediaType: MediaType.DockerLayerGzip, size: layer.size, diffId: layer.diffId,
      open: async () => { throw new Error('an indexed layer is not read again'); }, indexed: layer.indexed,
    }], { span });
    writeFileSync(join(dir, 'index.clip'), built.index);
    const reader = await ClipReader.open(join(dir, 'index.clip'), { source: new MemoryLayerSource(new Map([[layer.digest, blob]])) });
    expect((await reader.readFile('/random.bin')).equals(readFileSync(join(dir, 'src', 'random.bin')))).toBe(true);
    expect((await reader.readFile('/etc/text.conf')).toString()).toBe(readFileSync(join(dir, 'src', 'etc', 'text.conf'), 'utf8'));
    expect((await reader.readFile('/small')).toString()).toBe('hello');
  });

  it('refuses a source that is not the size it promised', async () => {
    const tar = Buffer.alloc(4096);
    await expect(compressLayer(pieces(tar, 1000), pool, {}, { expectedSize: 5000 })).rejects.toThrow(/4096 bytes, 5000 were planned/);
  });

  it('a failing upload fails the layer and leaves no stray rejection', async () => {
    const tar = fixtureTar();
    await expect(compressLayer(pieces(tar, 65536), pool, { upload: { write: async () => { throw new Error('registry went away'); } } }))
      .rejects.toThrow('registry went away');
  });
});
