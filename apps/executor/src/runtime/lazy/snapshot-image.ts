/**
 * A lazy sandbox's snapshot as an ordinary image, made without Docker: the base image's layers
 * (already in the registry: linked by a cross-repository mount, or copied when the base lives on
 * another registry) plus one new layer with the sandbox's changes, a config that is the base's
 * plus the new diff_id, a history entry and the snapshot labels, and a manifest of the base's
 * kind (Docker schema 2 when its layers are gzip, as `docker push` writes; OCI otherwise).
 */
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { MediaType, type Descriptor, type RegistryClient } from '@cryo/oci';
import { CryoError } from '@cryo/snapshot';
import { flattenFailure, flattenLayerOrigins, flattenedConfig, needsFlatten, type FlattenReport } from '../../snapshot/flatten-image';
import type { LayerFile } from './upper-layer';

export interface BaseImageRef {
  /** registry host and repository the base image (and its layers) live in */
  host: string;
  repository: string;
  manifestDigest: string;
}

export interface SnapshotImageInput {
  /** client for the target registry, and for the base's when it is another host */
  target: { client: RegistryClient; repository: string; tag: string };
  base: BaseImageRef & { client: RegistryClient };
  layer: LayerFile;
  /** labels added to the config (dev.cryo.snapshot-id, ...) */
  labels: Record<string, string>;
  /** the history entry's created_by */
  createdBy: string;
  /** Env and Cmd the sandbox ran with (a commit records the container's config) */
  env: string[];
  cmd: string[] | null;
  /** Flatten when the new image would have more than `maxLayers` layers (flatten-image.ts). */
  flatten?: { maxLayers: number; workDir: string };
  now?: Date;
}

export interface SnapshotImage {
  digest: string;
  mediaType: string;
  /** compressed bytes of all layers plus the config */
  sizeBytes: number;
  configDigest: string;
  layersMounted: number;
  layersCopied: number;
  /** layers of the pushed image */
  layers: number;
  /** set when the image was flattened */
  flattened: FlattenReport | null;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const GZIP_LAYER_TYPES = new Set<string>([MediaType.DockerLayerGzip, MediaType.OciLayerGzip]);

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The base config with the new layer, history entry, labels, env and cmd; unknown fields kept. */
export function snapshotConfig(base: Record<string, unknown>, input: Pick<SnapshotImageInput, 'labels' | 'createdBy' | 'env' | 'cmd' | 'now'> & { diffId: string }): Record<string, unknown> {
  const created = (input.now ?? new Date()).toISOString();
  const rootfs = isRecord(base.rootfs) ? base.rootfs : { type: 'layers' };
  const diffIds = Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids.filter((d): d is string => typeof d === 'string') : [];
  const history = Array.isArray(base.history) ? base.history : [];
  const config = isRecord(base.config) ? base.config : {};
  const labels = isRecord(config.Labels) ? config.Labels : {};
  return {
    ...base,
    created,
    config: {
      ...config,
      Env: input.env,
      ...(input.cmd === null ? {} : { Cmd: input.cmd }),
      Labels: { ...labels, ...input.labels },
    },
    rootfs: { ...rootfs, type: 'layers', diff_ids: [...diffIds, input.diffId] },
    history: [...history, { created, created_by: input.createdBy, comment: 'cryo snapshot (runc-lazy)' }],
  };
}

/** Manifest kind for the new image: Docker schema 2 when every base layer is gzip, else OCI. */
export function manifestKind(baseLayers: Descriptor[]): 'docker' | 'oci' {
  return baseLayers.every((l) => GZIP_LAYER_TYPES.has(l.mediaType)) ? 'docker' : 'oci';
}

/**
 * The manifest of base layers plus one new gzip layer: Docker schema 2 when every base layer is
 * gzip (as `docker push` writes), OCI otherwise; gzip base layers are listed with the manifest's
 * own gzip media type.
 */
export function imageManifest(baseLayers: Descriptor[], layer: { digest: string; size: number }, config: Buffer): { bytes: Buffer; mediaType: string } {
  const kind = manifestKind(baseLayers);
  const layerType = kind === 'docker' ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip;
  const reuse = (d: Descriptor): Descriptor => {
    if (!GZIP_LAYER_TYPES.has(d.mediaType)) return d;
    return { ...d, mediaType: layerType };
  };
  const mediaType = kind === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest;
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType,
    config: { mediaType: kind === 'docker' ? MediaType.DockerConfig : MediaType.OciConfig, size: config.length, digest: sha256(config) },
    layers: [...baseLayers.map(reuse), { mediaType: layerType, size: layer.size, digest: layer.digest }],
  }));
  return { bytes, mediaType };
}

async function ensureBlob(input: SnapshotImageInput, layer: Descriptor): Promise<'present' | 'mounted' | 'copied'> {
  const { target, base } = input;
  if (await target.client.headBlob(target.repository, layer.digest)) return 'present';
  const sameRegistry = base.host === target.client.host;
  if (sameRegistry && base.repository !== target.repository) {
    if (await target.client.mountBlob(target.repository, layer.digest, base.repository)) return 'mounted';
  }
  const { stream } = await base.client.getBlob(base.repository, layer.digest, { verify: true });
  await target.client.uploadBlob(target.repository, stream, layer.digest, layer.size);
  return 'copied';
}

export async function publishSnapshotImage(input: SnapshotImageInput): Promise<SnapshotImage> {
  const { target, base, layer } = input;
  const baseManifest = await base.client.getImageManifest(base.repository, base.manifestDigest);
  const baseLayers = baseManifest.json.layers;
  const configBlob = await readAll((await base.client.getBlob(base.repository, baseManifest.json.config.digest, { verify: true })).stream);
  let baseConfig: unknown;
  try {
    baseConfig = JSON.parse(configBlob.toString('utf8'));
  } catch {
    throw new CryoError('UNPROCESSABLE', `base image config ${baseManifest.json.config.digest} in ${base.host}/${base.repository} is not JSON`);
  }
  if (!isRecord(baseConfig)) throw new CryoError('UNPROCESSABLE', `base image config ${baseManifest.json.config.digest} is not an object`);

  const config = snapshotConfig(baseConfig, { ...input, diffId: layer.diffId });
  if (input.flatten !== undefined && needsFlatten(baseLayers.length + 1, input.flatten.maxLayers)) {
    return publishFlattened(input, baseLayers, config);
  }

  let layersMounted = 0;
  let layersCopied = 0;
  for (const l of baseLayers) {
    const how = await ensureBlob(input, l);
    if (how === 'mounted') layersMounted++;
    if (how === 'copied') layersCopied++;
  }
  if (!(await target.client.headBlob(target.repository, layer.digest))) {
    await target.client.uploadBlob(target.repository, createReadStream(layer.path), layer.digest, layer.size);
  }

  const pushed = await pushImage(target, baseLayers, layer, config);
  return { ...pushed, layersMounted, layersCopied, layers: baseLayers.length + 1, flattened: null };
}

/** Config blob and manifest (`imageManifest`) of an image whose layer blobs are in the target repository already. */
async function pushImage(target: SnapshotImageInput['target'], baseLayers: Descriptor[], layer: { digest: string; size: number }, imageConfig: Record<string, unknown>) {
  const config = Buffer.from(JSON.stringify(imageConfig));
  const configDigest = sha256(config);
  await target.client.uploadBlob(target.repository, config, configDigest, config.length);
  const { bytes: manifest, mediaType } = imageManifest(baseLayers, layer, config);
  const digest = await target.client.putManifest(target.repository, target.tag, manifest, mediaType);
  const sizeBytes = baseLayers.reduce((n, l) => n + l.size, 0) + layer.size + config.length;
  return { digest, mediaType, sizeBytes, configDigest };
}

/**
 * The snapshot as one flat layer: the base's layers (from the base registry) and the new layer
 * (from disk) squashed, then pushed alone; no base layer is linked or copied.
 */
async function publishFlattened(input: SnapshotImageInput, baseLayers: Descriptor[], config: Record<string, unknown>): Promise<SnapshotImage> {
  const { target, base, layer, flatten } = input;
  if (flatten === undefined) throw new CryoError('INTERNAL', 'publishFlattened without flatten settings');
  const rootfs = config.rootfs;
  const diffIds = isRecord(rootfs) && Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids : [];
  const { blob, report } = await flattenLayerOrigins([
    ...baseLayers.map((descriptor, i) => {
      const diffId = diffIds[i];
      return { kind: 'registry' as const, client: base.client, repository: base.repository, descriptor, diffId: typeof diffId === 'string' ? diffId : undefined };
    }),
    { kind: 'file' as const, path: layer.path, diffId: layer.diffId },
  ], flatten.workDir).catch((err: unknown) => { throw flattenFailure(err, baseLayers.length + 1, flatten.maxLayers); });
  try {
    if (!(await target.client.headBlob(target.repository, blob.digest))) {
      await target.client.uploadBlob(target.repository, createReadStream(blob.path), blob.digest, blob.size);
    }
    const flatConfig = flattenedConfig(config, blob.diffId, baseLayers.length + 1, input.now);
    const pushed = await pushImage(target, [], blob, flatConfig);
    return { ...pushed, layersMounted: 0, layersCopied: 0, layers: 1, flattened: report };
  } finally {
    await rm(blob.path, { force: true });
  }
}
