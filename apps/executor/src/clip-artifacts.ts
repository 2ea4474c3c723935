/**
 * Clip indexes travel next to their snapshot image in the same repository, as a small OCI
 * artifact under the tag `<snapshot tag>.clip`: any host that can pull the image can find its
 * index. The executor that pushed the image builds the index (it holds the push credentials and
 * the registry is near; the server stays free of heavy I/O). With a zone cache configured it also
 * asks the zone cache to fetch the image's layers then, so that hosts restoring the snapshot find
 * them there instead of each reading them from the registry.
 *
 * An image's access record (what its program read on its first lazy start, @cryo/clip's
 * access-record.ts) travels the same way under `<snapshot tag>.access`, pushed by the executor
 * that recorded it (or that snapshotted a lazy sandbox, carrying its record forward), and
 * fetched beside the index by lazy restores, which prefetch it. distribution 2.8 has no
 * referrers API: artifacts are found by tag.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ClipIndex, ZoneCacheSource, decodeAccessRecord, encodeAccessRecord, zoneCacheClient, type AccessRecord, type IndexedLayer } from '@cryo/clip';
import { MediaType, connectRegistry, isRegistryError, parseImageReference, type RegistryClient } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { CryoError, accessRecordTag, clipIndexTag, type BuildIndexResult } from '@cryo/snapshot';
import { ClipIndexWorker } from './clip-index-worker';

export const CLIP_INDEX_MEDIA_TYPE = 'application/vnd.cryo.clip.index.v2';
export const CLIP_CONFIG_MEDIA_TYPE = 'application/vnd.cryo.clip.config.v1+json';
export const CLIP_IMAGE_DIGEST_ANNOTATION = 'dev.cryo.clip.image-digest';
/** An access record: gzip'd JSON (@cryo/clip access-record.ts). */
export const CLIP_ACCESS_MEDIA_TYPE = 'application/vnd.cryo.clip.access.v1+json+gzip';
/** Its pack: the bytes it names, gzip'd in first-read order (@cryo/clip access-pack.ts). */
export const CLIP_ACCESS_PACK_MEDIA_TYPE = 'application/vnd.cryo.clip.access-pack.v1.gzip';
export const CLIP_ACCESS_CONFIG_MEDIA_TYPE = 'application/vnd.cryo.clip.access.config.v1+json';

/** `host/repo:<tag>.access` for the clip index ref `host/repo:<tag>.clip`; null when the ref is not one. */
export function accessRecordRefOf(clipIndexRef: string): string | null {
  const ref = parseImageReference(clipIndexRef);
  const suffix = clipIndexTag('');
  if (ref.tag === undefined || !ref.tag.endsWith(suffix) || ref.tag.length === suffix.length) return null;
  return `${ref.host}/${ref.repository}:${accessRecordTag(ref.tag.slice(0, -suffix.length))}`;
}

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
      const tag = clipIndexTag(ref.tag);
      const indexDigest = await pushArtifact(client, ref.repository, tag, {
        config: { mediaType: CLIP_CONFIG_MEDIA_TYPE, json: { image_digest: digest, files: built.files, spans: built.spans, uncompressed_size: built.uncompressedSize } },
        layers: [{ mediaType: CLIP_INDEX_MEDIA_TYPE, bytes: built.index }],
        imageDigest: digest,
      });
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
      this.keep(layer.digest, await readBlob(client, ref.repository, layer.digest));
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

  /**
   * The access record pushed beside the clip index `clipIndexRef` (`<tag>.access`), fetched to
   * local disk (cached by its digest) and checked to be one: its path, or null when the image has
   * none yet. Registry failures throw (the caller restores without it).
   */
  async fetchAccess(clipIndexRef: string): Promise<string | null> {
    const accessRef = accessRecordRefOf(clipIndexRef);
    if (accessRef === null) return null;
    const ref = parseImageReference(accessRef);
    const client = await this.client(ref.host);
    try {
      let manifest;
      try {
        manifest = await client.getManifest(ref.repository, ref.tag ?? 'latest');
      } catch (err) {
        if (isRegistryError(err) && err.code === 'REGISTRY_NOT_FOUND') return null;
        throw err;
      }
      const json = manifest.json as { layers?: Array<{ mediaType?: string; digest?: string }> };
      const layer = json.layers?.find((l) => l.mediaType === CLIP_ACCESS_MEDIA_TYPE);
      if (layer?.digest === undefined) throw new CryoError('UNPROCESSABLE', `${accessRef} is not a cryo access record artifact`);
      const path = join(this.cacheDir, `${layer.digest.replace(':', '_')}.access`);
      if (existsSync(path)) return path;
      let bytes = await readBlob(client, ref.repository, layer.digest);
      const record = decodeAccessRecord(bytes); // throws ACCESS_RECORD_CORRUPT naming what is wrong
      // A pack the artifact does not carry cannot be streamed: prefetch by span instead.
      if (record.pack !== undefined && !json.layers?.some((l) => l.mediaType === CLIP_ACCESS_PACK_MEDIA_TYPE && l.digest === record.pack?.digest)) {
        bytes = encodeAccessRecord({ ...record, pack: undefined });
      }
      writeAtomically(path, bytes);
      return path;
    } finally {
      await client.close();
    }
  }

  /**
   * Push an access record as the artifact `accessRef` (`host/repo:<image tag>.access`), replacing
   * any record there, annotated with the digest of the image it is for. Its pack (record.pack)
   * goes with it as a second layer: `pack.blob` is uploaded; with `pack.from` (a repository of the
   * same registry holding the blob) it is reused or mounted from there. A pack that cannot be had
   * is left out (the record's restores prefetch by span). Says whether the pack went along.
   */
  async publishAccess(accessRef: string, imageDigest: string | null, record: AccessRecord, pack?: { blob: Buffer } | { from: string }): Promise<{ pack: boolean }> {
    const ref = parseImageReference(accessRef);
    if (ref.tag === undefined) throw new CryoError('UNPROCESSABLE', `access record reference ${accessRef} has no tag`);
    const client = await this.client(ref.host);
    try {
      let withPack = record.pack !== undefined && pack !== undefined;
      const packRef = record.pack;
      if (withPack && packRef !== undefined && pack !== undefined) {
        if ('blob' in pack) await client.uploadBlob(ref.repository, pack.blob, packRef.digest, pack.blob.length);
        else if (await client.headBlob(ref.repository, packRef.digest) === undefined) {
          withPack = pack.from !== ref.repository && await client.mountBlob(ref.repository, packRef.digest, pack.from);
        }
      }
      const pushed: AccessRecord = withPack ? record : { ...record, pack: undefined };
      const bytes = encodeAccessRecord(pushed);
      await pushArtifact(client, ref.repository, ref.tag, {
        config: { mediaType: CLIP_ACCESS_CONFIG_MEDIA_TYPE, json: { recorded_on: record.image, files: record.files.length, duration_ms: record.duration_ms } },
        layers: [
          { mediaType: CLIP_ACCESS_MEDIA_TYPE, bytes },
          ...(withPack && packRef !== undefined ? [{ mediaType: CLIP_ACCESS_PACK_MEDIA_TYPE, digest: packRef.digest, size: packRef.size }] : []),
        ],
        imageDigest,
      });
      return { pack: withPack };
    } finally {
      await client.close();
    }
  }

  private keep(digest: string, bytes: Buffer): void {
    writeAtomically(this.localPath(digest), bytes);
  }
}

function writeAtomically(path: string, bytes: Buffer): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, path);
}

async function readBlob(client: RegistryClient, repository: string, digest: string): Promise<Buffer> {
  const { stream } = await client.getBlob(repository, digest, { verify: true });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** A layer of an artifact: bytes to upload, or a blob already in the repository. */
type ArtifactLayer = { mediaType: string; bytes: Buffer } | { mediaType: string; digest: string; size: number };

/**
 * Push an OCI artifact (a JSON config and its layers) under `tag`, annotated with the image digest
 * it belongs to. Returns the first layer's digest.
 */
async function pushArtifact(client: RegistryClient, repository: string, tag: string, artifact: {
  config: { mediaType: string; json: unknown };
  layers: ArtifactLayer[];
  imageDigest: string | null;
}): Promise<string> {
  const layers: Array<{ mediaType: string; digest: string; size: number }> = [];
  for (const layer of artifact.layers) {
    if ('bytes' in layer) {
      const digest = sha256(layer.bytes);
      await client.uploadBlob(repository, layer.bytes, digest, layer.bytes.length);
      layers.push({ mediaType: layer.mediaType, digest, size: layer.bytes.length });
    } else {
      layers.push(layer);
    }
  }
  const config = Buffer.from(JSON.stringify(artifact.config.json));
  const configDigest = sha256(config);
  await client.uploadBlob(repository, config, configDigest, config.length);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: artifact.config.mediaType, digest: configDigest, size: config.length },
    layers,
    ...(artifact.imageDigest === null ? {} : { annotations: { [CLIP_IMAGE_DIGEST_ANNOTATION]: artifact.imageDigest } }),
  }));
  await client.putManifest(repository, tag, manifest, MediaType.OciManifest);
  return layers[0]?.digest ?? '';
}
