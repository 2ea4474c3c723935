/**
 * Access record artifacts (`<tag>.access`) against a real registry (distribution 2.8, htpasswd
 * auth), through ClipArtifacts as the executor uses it: a record pushed with its pack comes back
 * with it; a carried pack is mounted from the repository that holds it, or left out (never named
 * by a record whose artifact lacks it); an image without a record has none; a corrupt record is
 * refused by name.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACCESS_RECORD_FORMAT, decodeAccessRecord, type AccessRecord } from '@cryo/clip';
import { MediaType, RegistryClient } from '@cryo/oci';
import { startRegistry, type TestRegistry } from '../../../test/support/registry';
import { CLIP_ACCESS_MEDIA_TYPE, CLIP_ACCESS_PACK_MEDIA_TYPE, CLIP_IMAGE_DIGEST_ANNOTATION, ClipArtifacts, accessRecordRefOf } from './clip-artifacts';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const USER = { username: 'cryo', password: 'artifacts-test' };
const IMAGE_DIGEST = `sha256:${'1'.repeat(64)}`;
const LAYER = `sha256:${'2'.repeat(64)}`;

let registry: TestRegistry;
let client: RegistryClient;
let artifacts: ClipArtifacts;
let cacheDir: string;

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: USER });
  client = new RegistryClient({ host: registry.host, insecure: true, credentials: USER });
  cacheDir = mkdtempSync(join(tmpdir(), 'cryo-clip-artifacts-'));
  artifacts = new ClipArtifacts({ snapshot_registry: { url: registry.host, repository: 'cryo/snapshots', ...USER, insecure: true } }, cacheDir);
}, 120_000);

afterAll(async () => {
  await artifacts?.close();
  await client?.close();
  await registry?.destroy();
  if (cacheDir !== undefined) rmSync(cacheDir, { recursive: true, force: true });
});

/** A record of two files and a pack of their bytes (gzip'd, one entry each). */
function recordWithPack(seed: string): { record: AccessRecord; blob: Buffer } {
  const a = Buffer.from(`${seed}: the bytes of /usr/lib/a.so `.repeat(500));
  const b = Buffer.from(`${seed}: the bytes of /usr/bin/b `.repeat(300));
  const blob = gzipSync(Buffer.concat([a, b]));
  return {
    blob,
    record: {
      format: ACCESS_RECORD_FORMAT,
      image: IMAGE_DIGEST,
      duration_ms: 1234,
      files: [
        { path: '/usr/lib/a.so', first_ms: 3, ranges: [[0, a.length]] },
        { path: '/usr/bin/b', first_ms: 9, ranges: [[0, b.length]] },
      ],
      pack: {
        digest: `sha256:${sha256(blob)}`,
        size: blob.length,
        entries: [
          { layer: LAYER, offset: 4096, length: a.length, sha256: sha256(a) },
          { layer: LAYER, offset: 900_000, length: b.length, sha256: sha256(b) },
        ],
      },
    },
  };
}

async function layersOf(repository: string, tag: string): Promise<{ layers: Array<{ mediaType: string; digest: string; size: number }>; annotations?: Record<string, string> }> {
  return (await client.getManifest(repository, tag)).json as { layers: Array<{ mediaType: string; digest: string; size: number }>; annotations?: Record<string, string> };
}

describe('access record artifacts', () => {
  it('accessRecordRefOf: <tag>.access beside <tag>.clip; null for a ref that is not a clip index', () => {
    expect(accessRecordRefOf('127.0.0.1:5000/cryo/snapshots:sb-1-snap-2.clip')).toBe('127.0.0.1:5000/cryo/snapshots:sb-1-snap-2.access');
    expect(accessRecordRefOf('127.0.0.1:5000/cryo/snapshots:sb-1-snap-2')).toBeNull();
    expect(accessRecordRefOf('127.0.0.1:5000/cryo/snapshots@sha256:' + '3'.repeat(64))).toBeNull();
  });

  it('a record pushed with its pack: two layers, annotated with its image; fetched back with the pack, cached by digest', async () => {
    const { record, blob } = recordWithPack('one');
    const ref = `${registry.host}/cryo/snapshots:img-1.access`;
    expect(await artifacts.fetchAccess(`${registry.host}/cryo/snapshots:img-1.clip`)).toBeNull();
    expect(await artifacts.publishAccess(ref, IMAGE_DIGEST, record, { blob })).toEqual({ pack: true });
    const manifest = await layersOf('cryo/snapshots', 'img-1.access');
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([CLIP_ACCESS_MEDIA_TYPE, CLIP_ACCESS_PACK_MEDIA_TYPE]);
    expect(manifest.layers[1]).toMatchObject({ digest: record.pack?.digest, size: blob.length });
    expect(manifest.annotations?.[CLIP_IMAGE_DIGEST_ANNOTATION]).toBe(IMAGE_DIGEST);
    expect(await client.headBlob('cryo/snapshots', record.pack?.digest ?? '')).toMatchObject({ size: blob.length });

    const path = await artifacts.fetchAccess(`${registry.host}/cryo/snapshots:img-1.clip`);
    expect(path).not.toBeNull();
    expect(path).toContain(manifest.layers[0]?.digest.replace(':', '_'));
    expect(decodeAccessRecord(readFileSync(path ?? ''))).toEqual(record);
    // Pushed again (a new record replaces the old): the tag names the new one.
    const again = recordWithPack('two');
    await artifacts.publishAccess(ref, IMAGE_DIGEST, again.record, { blob: again.blob });
    expect(decodeAccessRecord(readFileSync(await artifacts.fetchAccess(`${registry.host}/cryo/snapshots:img-1.clip`) ?? ''))).toEqual(again.record);
  });

  it('a carried pack is mounted from the repository holding it; with no such blob the record goes without it', async () => {
    const { record, blob } = recordWithPack('carried');
    await client.uploadBlob('cryo/base', blob, record.pack?.digest ?? '', blob.length);
    expect(await client.headBlob('cryo/other', record.pack?.digest ?? '')).toBeUndefined();
    expect(await artifacts.publishAccess(`${registry.host}/cryo/other:img-2.access`, IMAGE_DIGEST, record, { from: 'cryo/base' })).toEqual({ pack: true });
    expect(await client.headBlob('cryo/other', record.pack?.digest ?? '')).toMatchObject({ size: blob.length });
    expect(decodeAccessRecord(readFileSync(await artifacts.fetchAccess(`${registry.host}/cryo/other:img-2.clip`) ?? ''))).toEqual(record);

    // The pack's repository no longer has it (deleted with its snapshot): the record goes alone.
    const lost = recordWithPack('lost');
    expect(await artifacts.publishAccess(`${registry.host}/cryo/other:img-3.access`, IMAGE_DIGEST, lost.record, { from: 'cryo/base' })).toEqual({ pack: false });
    expect((await layersOf('cryo/other', 'img-3.access')).layers.map((l) => l.mediaType)).toEqual([CLIP_ACCESS_MEDIA_TYPE]);
    const fetched = decodeAccessRecord(readFileSync(await artifacts.fetchAccess(`${registry.host}/cryo/other:img-3.clip`) ?? ''));
    expect(fetched.pack).toBeUndefined();
    expect(fetched.files).toEqual(lost.record.files);
  });

  it('a record naming a pack its artifact does not carry comes back without it; a corrupt record is refused by name', async () => {
    // Pushed by another tool: the record names a pack, the manifest has only the record layer.
    const { record } = recordWithPack('orphan');
    const recordBytes = gzipSync(Buffer.from(JSON.stringify(record)));
    const pushManifest = async (tag: string, layer: Buffer): Promise<void> => {
      const config = Buffer.from('{}');
      for (const b of [layer, config]) await client.uploadBlob('cryo/snapshots', b, `sha256:${sha256(b)}`, b.length);
      await client.putManifest('cryo/snapshots', tag, Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: 'application/vnd.cryo.clip.access.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
        layers: [{ mediaType: CLIP_ACCESS_MEDIA_TYPE, digest: `sha256:${sha256(layer)}`, size: layer.length }],
      })), MediaType.OciManifest);
    };
    await pushManifest('img-4.access', recordBytes);
    const fetched = decodeAccessRecord(readFileSync(await artifacts.fetchAccess(`${registry.host}/cryo/snapshots:img-4.clip`) ?? ''));
    expect(fetched.pack).toBeUndefined();
    expect(fetched.files).toEqual(record.files);

    await pushManifest('img-5.access', gzipSync(Buffer.from(JSON.stringify({ ...record, format: 'something/else' }))));
    await expect(artifacts.fetchAccess(`${registry.host}/cryo/snapshots:img-5.clip`)).rejects.toMatchObject({
      code: 'ACCESS_RECORD_CORRUPT',
      message: expect.stringContaining('format is "something/else"'),
    });
  });
});
