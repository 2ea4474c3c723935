/**
 * Clip indexes travel next to their snapshot image in the same repository, as a small OCI
 * artifact under the tag `<snapshot tag>.clip`: any host that can pull the image can find its
 * index. The executor that pushed the image builds the index (it holds the push credentials and
 * the registry is near; the server stays free of heavy I/O). With a zone cache configured it also
 * asks the zone cache to fetch the image's layers then, so that hosts restoring the snapshot find
 * them there instead of each reading them from the registry.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ClipIndex, ZoneCacheSource, zoneCacheClient, type IndexedLayer } from '@cryo/clip';
import { MediaType, connectRegistry, parseImageReference, type RegistryClient } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { CryoError, clipIndexTag, type BuildIndexResult } from '@cryo/snapshot';
import { ClipIndexWorker } from './clip-index-worker';

export const CLIP_INDEX_MEDIA_TYPE = 'application/vnd.cryo.clip.index.v2';
export const CLIP_CONFIG_MEDIA_TYPE = 'application/vnd.cryo.clip.config.v1+json';
export const CLIP_IMAGE_DIGEST_ANNOTATION = 'dev.cryo.clip.image-digest';

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export class ClipArtifacts {
  private readonly worker = new ClipIndexWorker();

  /**
   * @param opts.onPublished told of every index this host built and pushed (a build_index
   *   operation's, or one a pre-copy snapshot built as it pushed): the executor's metrics.
   */
  constructor(
    private readonly access: RegistryAccessSettings,
    private readonly cacheDir: string,
    private readonly opts: { onPublished?: (result: BuildIndexResult) => void; log?: Logger } = {},
  ) {
    mkdirSync(cacheDir, { recursive: true });
  }

  /** Start the index thread ahead of the first index. */
  warm(): void {
    this.worker.warm();
  }

  async close(): Promise<void> {
    await this.worker.close();
  }

  private client(host: string): Promise<RegistryClient> {
    return connectRegistry(host, this.access, { userAgent: 'cryo-executor' });
  }

  private localPath(indexDigest: string): string {
    return join(this.cacheDir, `${indexDigest.replace(':', '_')}.clip`);
  }

  /**
   * Index the pushed image (pinned by digest) and push the index as `<tag>.clip`. The index is
   * built on a worker thread; layers in `indexed` (a snapshot's new layer, indexed while it was
   * compressed) and layers indexed before on this host are not read again. Both ways a snapshot
   * gets its index come through here (the server's build_index, and a pre-copy snapshot that
   * brings its index in its result), so with a zone cache configured both warm it.
   */
  async publish(imageRef: string, digest: string, indexed: IndexedLayer[] = []): Promise<BuildIndexResult & { layers_read: number; thread_id: number }> {
    const ref = parseImageReference(imageRef);
    if (ref.tag === undefined) throw new CryoError('UNPROCESSABLE', `snapshot image ${imageRef} has no tag to name its clip index after`);
    const started = performance.now();
    const built = await this.worker.run({
      ref: `${ref.host}/${ref.repository}@${digest}`, access: this.access, indexed, layerCacheDir: join(this.cacheDir, 'layers'),
    });
    const client = await this.client(ref.host);
    try {
      const indexDigest = sha256(built.index);
      await client.uploadBlob(ref.repository, built.index, indexDigest, built.index.length);
      const config = Buffer.from(JSON.stringify({ image_digest: digest, files: built.files, spans: built.spans, uncompressed_size: built.uncompressedSize }));
      const configDigest = sha256(config);
      await client.uploadBlob(ref.repository, config, configDigest, config.length);
      const manifest = Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: CLIP_CONFIG_MEDIA_TYPE, digest: configDigest, size: config.length },
        layers: [{ mediaType: CLIP_INDEX_MEDIA_TYPE, digest: indexDigest, size: built.index.length }],
        annotations: { [CLIP_IMAGE_DIGEST_ANNOTATION]: digest },
      }));
      const tag = clipIndexTag(ref.tag);
      await client.putManifest(ref.repository, tag, manifest, MediaType.OciManifest);
      this.keep(indexDigest, built.index);
      const result = {
        clip_index_ref: `${ref.host}/${ref.repository}:${tag}`,
        index_ms: Math.round(performance.now() - started),
        index_size_bytes: built.index.length,
        image_size_bytes: built.compressedSize,
      };
      await this.warmZoneCache(ref.host, ref.repository, ClipIndex.fromBuffer(built.index).layers.map((l) => l.digest));
      this.opts.onPublished?.(result);
      return { ...result, layers_read: built.layersRead, thread_id: built.threadId };
    } finally {
      await client.close();
    }
  }

  /** Fetch a clip index to local disk (cached by its digest); checks it describes `imageDigest`. */
  async fetch(clipIndexRef: string, imageDigest: string | null): Promise<string> {
    const ref = parseImageReference(clipIndexRef);
    const client = await this.client(ref.host);
    try {
      const manifest = await client.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
      const json = manifest.json as { layers?: Array<{ mediaType?: string; digest?: string }>; annotations?: Record<string, string> };
      const layer = json.layers?.find((l) => l.mediaType === CLIP_INDEX_MEDIA_TYPE);
      if (layer?.digest === undefined) throw new CryoError('UNPROCESSABLE', `${clipIndexRef} is not a cryo clip index artifact`);
      const describes = json.annotations?.[CLIP_IMAGE_DIGEST_ANNOTATION];
      if (imageDigest !== null && describes !== undefined && describes !== imageDigest) {
        throw new CryoError('CONFLICT', `clip index ${clipIndexRef} describes ${describes}, not the snapshot image ${imageDigest}`);
      }
      const path = this.localPath(layer.digest);
      if (existsSync(path)) return path;
      const { stream } = await client.getBlob(ref.repository, layer.digest, { verify: true });
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
      this.keep(layer.digest, Buffer.concat(chunks));
      return path;
    } finally {
      await client.close();
    }
  }

  /**
   * Have the zone cache fetch these layers now (best effort: a zone cache that is down or refuses
   * only costs the restoring hosts a read from the registry).
   */
  private async warmZoneCache(host: string, repository: string, digests: string[]): Promise<void> {
    const zone = this.access.zone_cache;
    if (zone === undefined || this.access.snapshot_registry?.url !== host) return;
    const source = new ZoneCacheSource(zoneCacheClient(zone, 'cryo-executor'), repository);
    try {
      for (const digest of digests) {
        const state = await source.warm(digest);
        this.opts.log?.info({ zone_cache: zone.url, digest, state }, state === 'warm' ? 'zone cache holds the layer already' : 'zone cache is fetching the layer');
      }
    } catch (err) {
      this.opts.log?.warn({ zone_cache: zone.url, err: err instanceof Error ? err.message : String(err) }, 'zone cache could not be warmed; restoring hosts will read from the registry');
    } finally {
      await source.close();
    }
  }

  private keep(digest: string, bytes: Buffer): void {
    const path = this.localPath(digest);
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, bytes);
    renameSync(tmp, path);
  }
}
