/**
 * Against a real distribution 2.8 registry with htpasswd auth (test/support/registry.ts).
 */
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type TestRegistry } from '../../../test/support/registry';
import { BlobContentError } from './blob-upload';
import { RegistryClient } from './client';
import { serializeManifest, type ImageIndex, type ImageManifest } from './manifest';
import { MediaType } from './media-types';

const USER = 'myuser';
const PASSWORD = 'pw-' + randomBytes(8).toString('hex');
const REPO = 'cryo/snapshots';

let registry: TestRegistry;
let client: RegistryClient;
const clients: RegistryClient[] = [];

function newClient(credentials?: { username: string; password: string }, chunkSize?: number): RegistryClient {
  const made = new RegistryClient({ host: registry.host, insecure: true, credentials, ...(chunkSize ? { chunkSize } : {}) });
  clients.push(made);
  return made;
}

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks);
}

async function caught(promise: Promise<unknown>): Promise<Error & { code?: string; status?: number }> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof Error) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

/** Uploads a config and one layer, then an image manifest of the given media type. */
async function pushImage(tag: string, mediaType: string, layer: Buffer): Promise<{ manifest: ImageManifest; bytes: Buffer; digest: string }> {
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: ['sh'], WorkingDir: '/root', Labels: { 'cryo.snapshot': tag } },
      rootfs: { type: 'layers', diff_ids: [sha256(layer)] },
    }),
  );
  await client.uploadBlob(REPO, config, sha256(config));
  await client.uploadBlob(REPO, layer, sha256(layer), layer.length);
  const docker = mediaType === MediaType.DockerManifest;
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: docker ? MediaType.DockerConfig : MediaType.OciConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: docker ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip, digest: sha256(layer), size: layer.length }],
  };
  const bytes = serializeManifest(manifest);
  const digest = await client.putManifest(REPO, tag, bytes, mediaType);
  return { manifest, bytes, digest };
}

/** Where distribution's filesystem driver keeps a blob's bytes. */
function blobPath(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(registry.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: { username: USER, password: PASSWORD } });
  client = newClient({ username: USER, password: PASSWORD });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await registry?.destroy();
});

describe('RegistryClient against docker-registry 2.8 with htpasswd', () => {
  it('pings with valid credentials', async () => {
    await expect(client.ping()).resolves.toBeUndefined();
  });

  it('uploads a blob and finds it with HEAD; an unknown blob is undefined', async () => {
    const data = randomBytes(1000);
    await expect(client.uploadBlob(REPO, data, sha256(data))).resolves.toEqual({ digest: sha256(data), size: 1000 });
    await expect(client.headBlob(REPO, sha256(data))).resolves.toEqual({ digest: sha256(data), size: 1000 });
    await expect(client.headBlob(REPO, sha256(randomBytes(8)))).resolves.toBeUndefined();
  });

  it('uploads a stream in PATCH chunks and reads it back intact', async () => {
    const data = randomBytes(300 * 1024 + 17);
    const chunked = newClient({ username: USER, password: PASSWORD }, 64 * 1024);
    const source = Readable.from((function* () {
      for (let offset = 0; offset < data.length; offset += 10_000) yield data.subarray(offset, offset + 10_000);
    })());
    await expect(chunked.uploadBlob(REPO, source, sha256(data), data.length)).resolves.toEqual({ digest: sha256(data), size: data.length });
    const blob = await client.getBlob(REPO, sha256(data));
    expect(blob.size).toBe(data.length);
    expect((await collect(blob.stream)).equals(data)).toBe(true);
  });

  it('an upload session takes chunks before the digest is known; a wrong digest at commit stores nothing', async () => {
    const parts = [randomBytes(70_000), randomBytes(1), randomBytes(33_333)];
    const whole = Buffer.concat(parts);
    const session = await client.startBlobUpload(REPO);
    for (const part of parts) await session.write(part);
    expect(session.bytes).toBe(whole.length);
    await expect(session.commit(sha256(whole))).resolves.toEqual({ digest: sha256(whole), size: whole.length });
    expect((await collect((await client.getBlob(REPO, sha256(whole), { verify: true })).stream)).equals(whole)).toBe(true);

    const other = randomBytes(5000);
    const wrong = await client.startBlobUpload(REPO);
    await wrong.write(other);
    const claimed = sha256(randomBytes(5000));
    await expect(wrong.commit(claimed)).rejects.toThrow();
    await expect(client.headBlob(REPO, claimed)).resolves.toBeUndefined();
    await expect(client.headBlob(REPO, sha256(other))).resolves.toBeUndefined();
  });

  it('streams a blob in one PATCH while it is written, and the registry checks the digest at commit', async () => {
    const parts = Array.from({ length: 40 }, () => randomBytes(100_000));
    const whole = Buffer.concat(parts);
    const session = await client.startBlobUpload(REPO);
    const stream = session.openStream();
    for (const part of parts) await stream.write(part);
    await stream.end();
    await expect(session.commit(sha256(whole))).resolves.toEqual({ digest: sha256(whole), size: whole.length });
    expect((await collect((await client.getBlob(REPO, sha256(whole), { verify: true })).stream)).equals(whole)).toBe(true);
  });

  it('refuses data that does not match its digest and leaves nothing behind', async () => {
    const data = randomBytes(100);
    const wrong = sha256(randomBytes(100));
    await expect(client.uploadBlob(REPO, data, wrong)).rejects.toBeInstanceOf(BlobContentError);
    await expect(client.uploadBlob(REPO, Readable.from([data]), wrong)).rejects.toThrow(`blob stream has digest ${sha256(data)}, not ${wrong}`);
    await expect(client.headBlob(REPO, wrong)).resolves.toBeUndefined();
    await expect(client.headBlob(REPO, sha256(data))).resolves.toBeUndefined();
  });

  it('puts an OCI manifest and gets/heads it by tag and by digest with the right media type', async () => {
    const layer = randomBytes(4096);
    const { bytes, digest, manifest } = await pushImage('oci-1', MediaType.OciManifest, layer);
    expect(digest).toBe(sha256(bytes));
    for (const reference of ['oci-1', digest]) {
      const got = await client.getManifest(REPO, reference);
      expect(got.digest).toBe(digest);
      expect(got.mediaType).toBe(MediaType.OciManifest);
      expect(got.size).toBe(bytes.length);
      expect(got.bytes.equals(bytes)).toBe(true);
      expect(got.kind).toBe('manifest');
      if (got.kind === 'manifest') expect(got.json.layers[0]?.digest).toBe(manifest.layers[0]?.digest);
      await expect(client.headManifest(REPO, reference)).resolves.toEqual({ digest, mediaType: MediaType.OciManifest, size: bytes.length });
    }
    const config = await client.getImageConfig(REPO, manifest);
    expect(config.config?.Cmd).toEqual(['sh']);
    expect(config.rootfs.diff_ids).toEqual([sha256(layer)]);
  });

  it('keeps Docker schema 2 manifests and indexes as they are (Accept is always sent)', async () => {
    const { digest, bytes } = await pushImage('docker-1', MediaType.DockerManifest, randomBytes(2048));
    const got = await client.getManifest(REPO, 'docker-1');
    expect(got.mediaType).toBe(MediaType.DockerManifest);
    expect(got.digest).toBe(digest);

    const arm = await pushImage('arm-1', MediaType.OciManifest, randomBytes(512));
    const index: ImageIndex = {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [
        { mediaType: MediaType.OciManifest, digest: arm.digest, size: arm.bytes.length, platform: { os: 'linux', architecture: 'arm64' } },
        { mediaType: MediaType.DockerManifest, digest, size: bytes.length, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    };
    const indexBytes = serializeManifest(index);
    const indexDigest = await client.putManifest(REPO, 'multi', indexBytes, MediaType.OciIndex);
    const fetched = await client.getManifest(REPO, 'multi');
    expect(fetched).toMatchObject({ kind: 'index', mediaType: MediaType.OciIndex, digest: indexDigest });
    expect((await client.getImageManifest(REPO, 'multi')).digest).toBe(digest);
    expect((await client.getImageManifest(REPO, 'multi', { os: 'linux', architecture: 'arm64' })).digest).toBe(arm.digest);
    await expect(client.getImageManifest(REPO, 'multi', { os: 'windows', architecture: 'amd64' })).rejects.toMatchObject({
      code: 'REGISTRY_NOT_FOUND',
    });
  });

  it('reads exact byte ranges (206), short at the end, and fails past the end (416)', async () => {
    const data = randomBytes(100_000);
    const digest = sha256(data);
    await client.uploadBlob(REPO, data, digest);
    expect((await client.getBlobRange(REPO, digest, 0, 0)).equals(data.subarray(0, 1))).toBe(true);
    expect((await client.getBlobRange(REPO, digest, 12_345, 54_320)).equals(data.subarray(12_345, 54_321))).toBe(true);
    expect((await client.getBlobRange(REPO, digest, 99_990, 100_500)).equals(data.subarray(99_990))).toBe(true);
    const error = await caught(client.getBlobRange(REPO, digest, 100_000, 100_010));
    expect(error).toMatchObject({ code: 'REGISTRY_BAD_RESPONSE', status: 416 });
    expect(error.message).toContain(`registry ${registry.host} cannot serve bytes 100000-100010 of blob ${digest} of ${REPO}`);
  });

  it('deletes a manifest by digest; then HEAD is undefined, GET is NOT_FOUND and a second delete is not_found', async () => {
    const { digest } = await pushImage('to-delete', MediaType.OciManifest, randomBytes(300));
    await expect(client.deleteManifest(REPO, digest)).resolves.toBe('deleted');
    await expect(client.headManifest(REPO, digest)).resolves.toBeUndefined();
    await expect(client.headManifest(REPO, 'to-delete')).resolves.toBeUndefined();
    const error = await caught(client.getManifest(REPO, 'to-delete'));
    expect(error).toMatchObject({ code: 'REGISTRY_NOT_FOUND', status: 404 });
    expect(error.message).toBe(`manifest ${REPO}:to-delete not found in registry ${registry.host}`);
    await expect(client.deleteManifest(REPO, digest)).resolves.toBe('not_found');
  });

  it('lists tags and reports an unknown repository', async () => {
    await pushImage('listed-a', MediaType.OciManifest, randomBytes(10));
    const tags = await client.listTags(REPO);
    expect(tags).toEqual(expect.arrayContaining(['oci-1', 'docker-1', 'listed-a']));
    await expect(client.listTags('no/such-repo')).rejects.toMatchObject({ code: 'REGISTRY_NOT_FOUND' });
  });

  it('mounts a blob across repositories, and declines an unknown one', async () => {
    const data = randomBytes(512);
    await client.uploadBlob(REPO, data, sha256(data));
    await expect(client.mountBlob('cryo/other', sha256(data), REPO)).resolves.toBe(true);
    await expect(client.headBlob('cryo/other', sha256(data))).resolves.toEqual({ digest: sha256(data), size: 512 });
    await expect(client.mountBlob('cryo/other', sha256(randomBytes(4)), REPO)).resolves.toBe(false);
  });

  it('detects corrupted content: a blob stream fails at its end, a manifest by digest is refused', async () => {
    const data = randomBytes(5000);
    const digest = sha256(data);
    await client.uploadBlob(REPO, data, digest);
    const file = blobPath(digest);
    const stored = readFileSync(file);
    stored[100] = (stored[100] ?? 0) ^ 0xff;
    writeFileSync(file, stored);
    const blob = await client.getBlob(REPO, digest);
    const corrupt = await caught(collect(blob.stream));
    expect(corrupt).toMatchObject({ code: 'REGISTRY_BAD_RESPONSE' });
    expect(corrupt.message).toBe(`registry ${registry.host} sent corrupt blob ${digest} of ${REPO}: content has digest ${sha256(stored)}`);
    const unverified = await client.getBlob(REPO, digest, { verify: false });
    expect((await collect(unverified.stream)).equals(stored)).toBe(true);

    const image = await pushImage('corrupt-me', MediaType.OciManifest, randomBytes(100));
    const manifestFile = blobPath(image.digest);
    writeFileSync(manifestFile, Buffer.from(readFileSync(manifestFile, 'utf8').replace('"schemaVersion":2', '"schemaVersion": 2')));
    const bad = await caught(client.getManifest(REPO, image.digest));
    expect(bad).toMatchObject({ code: 'REGISTRY_BAD_RESPONSE' });
    expect(bad.message).toContain(`sent manifest ${REPO}@${image.digest} whose content has digest sha256:`);
  });

  it('reports a wrong password as REGISTRY_UNAUTHORIZED naming host and user, never the password', async () => {
    const wrong = newClient({ username: USER, password: 'not-the-password' });
    const error = await caught(wrong.getManifest(REPO, 'oci-1'));
    expect(error).toMatchObject({ name: 'RegistryError', code: 'REGISTRY_UNAUTHORIZED', status: 401 });
    expect(error.message).toBe(`registry ${registry.host} rejected credentials for user ${USER} (HTTP 401)`);
    expect(error.message).not.toContain('not-the-password');
    // Same for every kind of request, including a second one that sends Basic right away.
    await expect(wrong.uploadBlob(REPO, Buffer.from('x'), sha256(Buffer.from('x')))).rejects.toMatchObject({ code: 'REGISTRY_UNAUTHORIZED' });
    await expect(wrong.ping()).rejects.toMatchObject({ code: 'REGISTRY_UNAUTHORIZED' });
  });

  it('reports missing credentials as REGISTRY_UNAUTHORIZED', async () => {
    const anonymous = newClient();
    const error = await caught(anonymous.headManifest(REPO, 'oci-1'));
    expect(error).toMatchObject({ code: 'REGISTRY_UNAUTHORIZED' });
    expect(error.message).toBe(`registry ${registry.host} requires authentication and no credentials are configured for it (HTTP 401)`);
  });

  it('reports a stopped registry as REGISTRY_UNREACHABLE, and works again once it is back with the same data', async () => {
    await registry.stop();
    try {
      const error = await caught(client.headManifest(REPO, 'oci-1'));
      expect(error).toMatchObject({ code: 'REGISTRY_UNREACHABLE' });
      expect(error.message).toBe(`registry ${registry.host} is unreachable: ECONNREFUSED`);
      await expect(client.getBlobRange(REPO, sha256(Buffer.from('x')), 0, 1)).rejects.toMatchObject({ code: 'REGISTRY_UNREACHABLE' });
    } finally {
      await registry.start();
    }
    await expect(client.headManifest(REPO, 'oci-1')).resolves.toMatchObject({ mediaType: MediaType.OciManifest });
  });
});
