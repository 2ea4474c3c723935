import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipIndex, ClipReader, RegistryLayerSource } from '@cryo/clip';
import { MediaType, RegistryClient, serializeManifest } from '@cryo/oci';
import type { BuildIndexResult } from '@cryo/snapshot';
import { startRegistry, type TestRegistry } from '../../../test/support/registry';
import { ClipArtifacts } from './clip-artifacts';

const REPO = 'cryo/snapshots';
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
let registry: TestRegistry;
let client: RegistryClient;
const dir = mkdtempSync(join(tmpdir(), 'clip-artifacts-'));

beforeAll(async () => {
  registry = await startRegistry({});
  client = new RegistryClient({ host: registry.host, insecure: true });
});
afterAll(async () => {
  await client.close();
  await registry.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** A gzip layer made by GNU tar and gzip, holding `files`. */
function gnuLayer(name: string, files: Record<string, Buffer>): Buffer {
  const src = join(dir, name);
  for (const [path, data] of Object.entries(files)) {
    mkdirSync(join(src, path, '..'), { recursive: true });
    writeFileSync(join(src, path), data);
  }
  execFileSync('sh', ['-c', `tar -C "${src}" -c . | gzip -6 > "${src}.tar.gz"`]);
  return readFileSync(`${src}.tar.gz`);
}

async function pushImage(tag: string, layers: Buffer[]): Promise<string> {
  const diffIds = layers.map((l) => sha256(execFileSync('gzip', ['-dc'], { input: l, maxBuffer: 1 << 30 })));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['sh'] }, rootfs: { type: 'layers', diff_ids: diffIds } }));
  await client.uploadBlob(REPO, config, sha256(config));
  for (const l of layers) await client.uploadBlob(REPO, l, sha256(l));
  const manifest = serializeManifest({
    schemaVersion: 2, mediaType: MediaType.DockerManifest,
    config: { mediaType: MediaType.DockerConfig, digest: sha256(config), size: config.length },
    layers: layers.map((l) => ({ mediaType: MediaType.DockerLayerGzip, digest: sha256(l), size: l.length })),
  });
  return client.putManifest(REPO, tag, manifest, MediaType.DockerManifest);
}

describe('ClipArtifacts.publish', () => {
  it('builds the index on a worker thread, keeps indexed layers per host, and pushes it next to the image', async () => {
    const base = gnuLayer('base', { 'etc/os': Buffer.from('base os\n'), 'usr/lib/big.bin': randomBytes(6 * 1024 * 1024) });
    const top = gnuLayer('top', { 'root/note': Buffer.from('on top\n') });
    const published: BuildIndexResult[] = [];
    const clip = new ClipArtifacts({ snapshot_registry: { url: registry.host, repository: REPO, insecure: true } }, join(dir, 'cache'), {
      onPublished: (result) => published.push(result),
    });
    try {
      const first = await clip.publish(`${registry.host}/${REPO}:one`, await pushImage('one', [base]));
      expect(first.thread_id).not.toBe(threadId); // not on the event loop's thread
      expect(first.layers_read).toBe(1);
      expect(first.clip_index_ref).toBe(`${registry.host}/${REPO}:one.clip`);

      // An image on the same base: only its new layer is read.
      const digest = await pushImage('two', [base, top]);
      const second = await clip.publish(`${registry.host}/${REPO}:two`, digest);
      expect(second.layers_read).toBe(1);
      const path = await clip.fetch(second.clip_index_ref, digest);
      const reader = new ClipReader(await ClipIndex.load(path), { source: new RegistryLayerSource(client, REPO) });
      expect((await reader.readFile('/root/note')).toString()).toBe('on top\n');
      expect((await reader.readFile('/etc/os')).toString()).toBe('base os\n');
      // Each build is told to the observer (the executor's clip_index_* metrics), without the thread's details.
      expect(published.map((p) => p.clip_index_ref)).toEqual([first.clip_index_ref, second.clip_index_ref]);
      expect(published[1]).toEqual({ clip_index_ref: second.clip_index_ref, index_ms: second.index_ms, index_size_bytes: second.index_size_bytes, image_size_bytes: second.image_size_bytes });
    } finally {
      await clip.close();
    }
  });

  it('reports a registry failure from the thread as the registry error it is', async () => {
    const clip = new ClipArtifacts({ snapshot_registry: { url: registry.host, repository: REPO, insecure: true } }, join(dir, 'cache2'));
    try {
      await expect(clip.publish(`${registry.host}/${REPO}:missing`, sha256(Buffer.from('nothing')))).rejects.toMatchObject({ name: 'RegistryError', code: 'REGISTRY_NOT_FOUND' });
    } finally {
      await clip.close();
    }
  });
});
