/**
 * Access packs against a real registry (distribution 2.8): built from a record and a reader,
 * pushed as a blob, streamed by another reader that then serves the recorded reads from it with
 * no span request; a pack with a wrong byte is caught and the reads go to the spans, byte for
 * byte; ranges are padded, merged, deduplicated and kept in first-read order.
 */
import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@cryo/oci';
import { startRegistry, type TestRegistry } from '../../../../test/support/registry';
import { RegistryLayerSource } from '../registry-source';
import type { LayerSource } from '../source';
import { mixedData } from '../testing/data';
import { buildImage, type BuiltImage } from '../testing/fixtures';
import { writeTar } from '../testing/tar-writer';
import { AccessPack, MAX_ENTRY_BYTES, PACK_ALIGN, buildAccessPack, packRanges } from './access-pack';
import { AccessRecorder, decodeAccessRecord, encodeAccessRecord } from './access-record';

const REPO = 'clip/pack';
const files = Array.from({ length: 30 }, (_, i) => ({ name: `lib/m${i}.so`, data: mixedData(20_000 + i * 9_000, 40 + i) }));
const big = mixedData(3 * 1024 * 1024 + 5, 9);

class CountingSource implements LayerSource {
  ranges = 0;
  streams = 0;
  constructor(private readonly inner: LayerSource) {}
  readRange(digest: string, start: number, end: number, size?: number): Promise<Buffer> {
    this.ranges++;
    return this.inner.readRange(digest, start, end, size);
  }
  openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    this.streams++;
    return this.inner.openStream(digest);
  }
}

let registry: TestRegistry;
let client: RegistryClient;
let image: BuiltImage;

beforeAll(async () => {
  registry = await startRegistry();
  client = new RegistryClient({ host: registry.host, insecure: true });
  image = await buildImage([writeTar([
    { name: 'lib/', type: '5', mode: 0o755 },
    ...files.map((f) => ({ name: f.name, data: f.data })),
    { name: 'big.bin', data: big },
    { name: 'lib/hard', type: '1', linkname: 'lib/m3.so' },
  ])], 'gzip', { span: 256 * 1024 });
  for (const [digest, blob] of image.blobs) await client.uploadBlob(REPO, blob, digest, blob.length);
}, 120_000);

afterAll(async () => {
  await client?.close();
  await registry?.destroy();
});

/** What a program read: some files whole, part of big.bin, one file twice (by a hard link), a missing file. */
function record(): ReturnType<AccessRecorder['record']> {
  const recorder = new AccessRecorder(image.index.image.manifestDigest);
  for (const f of files.slice(5, 20).reverse()) recorder.note(`/${f.name}`, 0, f.data.length);
  recorder.note('/big.bin', 1_000_000, 4096);
  recorder.note('/big.bin', 2_500_000, 200_000);
  recorder.note('/lib/hard', 0, 100);
  recorder.note('/lib/m3.so', 0, 100);
  recorder.note('/gone', 0, 10);
  return recorder.record();
}

async function pushed(pack: { blob: Buffer }): Promise<void> {
  const digest = `sha256:${createHash('sha256').update(pack.blob).digest('hex')}`;
  await client.uploadBlob(REPO, pack.blob, digest, pack.blob.length);
}

describe('access packs', () => {
  it('pads ranges to 128 KiB within each file, in first-read order, each byte once', () => {
    const ranges = packRanges(image.index, record());
    const first = image.index.fileData(image.index.resolve(`/${files[19]?.name}`, true));
    expect(ranges[0]).toMatchObject({ path: `/${files[19]?.name}`, fileOffset: 0, offset: first?.offset, length: files[19]?.data.length });
    const bigData = image.index.fileData(image.index.resolve('/big.bin', true));
    const bigRanges = ranges.filter((r) => r.path === '/big.bin');
    expect(bigRanges.map((r) => [r.fileOffset, r.length])).toEqual([
      [Math.floor(1_000_000 / PACK_ALIGN) * PACK_ALIGN, PACK_ALIGN],
      [Math.floor(2_500_000 / PACK_ALIGN) * PACK_ALIGN, Math.ceil(2_700_000 / PACK_ALIGN) * PACK_ALIGN - Math.floor(2_500_000 / PACK_ALIGN) * PACK_ALIGN],
    ]);
    expect(bigRanges[0]?.offset).toBe((bigData?.offset ?? 0) + Math.floor(1_000_000 / PACK_ALIGN) * PACK_ALIGN);
    // /lib/hard and /lib/m3.so are one file: packed once
    expect(ranges.filter((r) => r.path === '/lib/hard' || r.path === '/lib/m3.so')).toHaveLength(1);
    expect(ranges.some((r) => r.path === '/gone')).toBe(false);
    // no byte twice
    const seen = ranges.map((r) => [r.offset, r.offset + r.length] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < seen.length; i++) expect(seen[i]?.[0]).toBeGreaterThanOrEqual(seen[i - 1]?.[1] ?? 0);
  });

  it('a reader streaming the pack serves what the record names without a span request', async () => {
    const builder = image.reader();
    const rec = record();
    const built = await buildAccessPack(image.index, rec, (p, o, l) => builder.read(p, o, l));
    expect(built.bytes).toBeGreaterThan(0);
    expect(gunzipSync(built.blob).length).toBe(built.bytes);
    await pushed(built);
    // The record travels with its pack ref, through its codec.
    const back = decodeAccessRecord(encodeAccessRecord({ ...rec, pack: built.pack }));
    expect(back.pack).toEqual(built.pack);

    const source = new CountingSource(new RegistryLayerSource(client, REPO));
    const reader = image.reader({ source });
    const pack = new AccessPack(built.pack);
    reader.usePack(pack);
    // Reads may come before the stream starts: they wait for their entry.
    const early = reader.readFile(`/${files[19]?.name}`);
    const streamed = pack.stream(() => source.openStream(built.pack.digest));
    expect((await early).equals(files[19]?.data ?? Buffer.alloc(1))).toBe(true);
    await streamed;
    expect(pack.stats).toMatchObject({ state: 'done', arrived: built.pack.entries.length, received: built.pack.size });
    for (const f of files.slice(5, 20)) expect((await reader.readFile(`/${f.name}`)).equals(f.data)).toBe(true);
    expect((await reader.read('/big.bin', 1_000_000, 4096)).equals(big.subarray(1_000_000, 1_004_096))).toBe(true);
    expect((await reader.read('/big.bin', 2_500_000, 200_000)).equals(big.subarray(2_500_000, 2_700_000))).toBe(true);
    expect((await reader.read('/lib/hard', 0, 100)).equals(files[3]?.data.subarray(0, 100) ?? Buffer.alloc(1))).toBe(true);
    expect(source.ranges).toBe(0);
    expect(await reader.prefetchRecord(rec)).toMatchObject({ spans: 0 }); // the pack holds all of it
    // What the pack does not hold comes from the spans, as ever.
    expect((await reader.readFile(`/${files[0]?.name}`)).equals(files[0]?.data ?? Buffer.alloc(1))).toBe(true);
    expect(source.ranges).toBe(1);
    expect(pack.stats.reads).toBeGreaterThan(15);
  });

  it('cuts long ranges into entries of at most 1 MiB; a read across entries is served from the pack as one', async () => {
    const recorder = new AccessRecorder(image.index.image.manifestDigest);
    recorder.note('/big.bin', 0, big.length);
    const rec = recorder.record();
    const ranges = packRanges(image.index, rec);
    expect(ranges.map((r) => [r.fileOffset, r.length])).toEqual([
      [0, MAX_ENTRY_BYTES], [MAX_ENTRY_BYTES, MAX_ENTRY_BYTES], [2 * MAX_ENTRY_BYTES, MAX_ENTRY_BYTES], [3 * MAX_ENTRY_BYTES, big.length - 3 * MAX_ENTRY_BYTES],
    ]);
    const builder = image.reader();
    const built = await buildAccessPack(image.index, rec, (p, o, l) => builder.read(p, o, l));
    expect(built.pack.entries).toHaveLength(4);
    await pushed(built);
    const source = new CountingSource(new RegistryLayerSource(client, REPO));
    const reader = image.reader({ source });
    const pack = new AccessPack(built.pack);
    reader.usePack(pack);
    // Asked before anything arrived: waits for both entries it spans.
    const across = reader.read('/big.bin', MAX_ENTRY_BYTES - 1000, 5000);
    const streamed = pack.stream(() => source.openStream(built.pack.digest));
    expect((await across).equals(big.subarray(MAX_ENTRY_BYTES - 1000, MAX_ENTRY_BYTES + 4000))).toBe(true);
    await streamed;
    expect(pack.stats.state).toBe('done');
    expect((await reader.read('/big.bin', 100, 3 * MAX_ENTRY_BYTES)).equals(big.subarray(100, 100 + 3 * MAX_ENTRY_BYTES))).toBe(true);
    expect((await reader.readFile('/big.bin')).equals(big)).toBe(true);
    expect(source.ranges).toBe(0);
    expect(pack.stats.misses).toBe(0);
  });

  it('a pack with a wrong byte is caught; its reads go to the spans, byte for byte', async () => {
    const builder = image.reader();
    const built = await buildAccessPack(image.index, record(), (p, o, l) => builder.read(p, o, l));
    const raw = gunzipSync(built.blob);
    raw[Math.floor(raw.length / 2)] = (raw[Math.floor(raw.length / 2)] ?? 0) ^ 0x40;
    const blob = gzipSync(raw);
    await pushed({ blob });
    const ref = { ...built.pack, digest: `sha256:${createHash('sha256').update(blob).digest('hex')}`, size: blob.length };
    const source = new CountingSource(new RegistryLayerSource(client, REPO));
    const reader = image.reader({ source });
    const pack = new AccessPack(ref);
    reader.usePack(pack);
    await pack.stream(() => source.openStream(ref.digest));
    expect(pack.stats.state).toBe('failed');
    expect(pack.stats.error).toMatch(/does not match its sha256/);
    for (const f of files.slice(5, 20)) expect((await reader.readFile(`/${f.name}`)).equals(f.data)).toBe(true);
    expect((await reader.read('/big.bin', 2_500_000, 200_000)).equals(big.subarray(2_500_000, 2_700_000))).toBe(true);
    expect(source.ranges).toBeGreaterThan(0);
  });
  it('a pack whose blob the registry does not have fails at once; its reads go to the spans', async () => {
    const builder = image.reader();
    const built = await buildAccessPack(image.index, record(), (p, o, l) => builder.read(p, o, l));
    // Never pushed: a pack the registry lost (or that another registry holds).
    const ref = { ...built.pack, digest: `sha256:${createHash('sha256').update('not pushed').digest('hex')}` };
    const source = new CountingSource(new RegistryLayerSource(client, REPO));
    const reader = image.reader({ source });
    const pack = new AccessPack(ref);
    reader.usePack(pack);
    const waiting = reader.readFile(`/${files[7]?.name}`);
    await pack.stream(() => source.openStream(ref.digest));
    expect(pack.stats.state).toBe('failed');
    expect((await waiting).equals(files[7]?.data ?? Buffer.alloc(1))).toBe(true);
    expect((await reader.read('/big.bin', 1_000_000, 4096)).equals(big.subarray(1_000_000, 1_004_096))).toBe(true);
    expect(source.ranges).toBeGreaterThan(0);
    expect(pack.stats.reads).toBe(0);
  });
});
