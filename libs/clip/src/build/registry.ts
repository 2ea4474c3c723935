/**
 * buildIndex: resolve a reference in a registry to a pinned manifest digest,
 * pick the platform from an index, read the config, then stream every layer
 * once through indexLayers.
 */
import { MediaType, isImageManifestMediaType, parseImageReference, type ImageConfig, type ImageManifest } from '@cryo/oci';
import { ClipError } from '../errors';
import type { ImageInfo } from '../format/types';
import { RegistryLayerSource, registryClient, type RegistryAccess } from '../registry-source';
import { indexLayers, type BuildResult, type IndexLayersOptions, type LayerInput } from './build-index';
import { compressionOf, type IndexedLayer } from './layer-indexer';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export type BuildIndexOptions = IndexLayersOptions &
  RegistryAccess & {
    /** default linux/amd64 */
    platform?: Platform;
    /** Layers indexed already (by their compressed digest): not downloaded again. */
    indexed?: (digest: string) => IndexedLayer | undefined;
  };

export function parsePlatform(s: string): Platform {
  const [os, architecture, variant] = s.split('/');
  if (!os || !architecture) throw new ClipError('EINVAL', `platform '${s}' must look like os/arch[/variant]`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

const IMAGE_CONFIG_TYPES = new Set<string>([
  'application/vnd.oci.image.config.v1+json',
  'application/vnd.docker.container.image.v1+json',
]);

export async function buildIndex(ref: string, opts: BuildIndexOptions = {}): Promise<BuildResult & { image: ImageInfo }> {
  let parsed;
  try {
    parsed = parseImageReference(ref);
  } catch (err) {
    throw new ClipError('EINVAL', (err as Error).message);
  }
  const host = opts.host ?? parsed.host;
  const client = registryClient(host, opts);
  try {
    const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
    const manifest = await client.getImageManifest(parsed.repository, parsed.digest ?? parsed.tag ?? 'latest', platform);
    if (!isImageManifestMediaType(manifest.mediaType)) {
      throw new ClipError('UNSUPPORTED_MANIFEST', `${ref}: manifest media type '${manifest.mediaType}' is not an image manifest`);
    }
    checkImageManifest(ref, manifest.json);
    const config = await client.getImageConfig(parsed.repository, manifest.json);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== manifest.json.layers.length) {
      throw new ClipError(
        'UNSUPPORTED_MANIFEST',
        `${ref}: the config lists ${diffIds.length} diff_ids for ${manifest.json.layers.length} layers`,
      );
    }
    const source = new RegistryLayerSource(client, parsed.repository);
    const layers: LayerInput[] = manifest.json.layers.map((l, i) => {
      const indexed = opts.indexed?.(l.digest);
      return {
        digest: l.digest,
        mediaType: l.mediaType,
        size: l.size,
        diffId: diffIds[i] ?? '',
        open: () => source.openStream(l.digest),
        ...(indexed === undefined ? {} : { indexed }),
      };
    });
    const image = imageInfo(ref, host, parsed.repository, manifest.digest, manifest.mediaType, manifest.json, config);
    const result = await indexLayers(image, layers, opts);
    return { ...result, image };
  } finally {
    if (!opts.client) await client.close();
  }
}

function checkImageManifest(ref: string, m: ImageManifest): void {
  if (!IMAGE_CONFIG_TYPES.has(m.config.mediaType)) {
    throw new ClipError(
      'UNSUPPORTED_MANIFEST',
      `${ref}: not a container image (config media type '${m.config.mediaType}')`,
    );
  }
  for (const l of m.layers) {
    if (l.urls && l.urls.length > 0) {
      throw new ClipError('UNSUPPORTED_MEDIA_TYPE', `${ref}: foreign layer ${l.digest} (served from ${l.urls[0]}) is not supported`);
    }
    compressionOf(l.mediaType); // throws UNSUPPORTED_MEDIA_TYPE early, before any download
  }
}

function imageInfo(
  reference: string,
  registry: string,
  repository: string,
  manifestDigest: string,
  manifestMediaType: string,
  manifest: ImageManifest,
  config: ImageConfig,
): ImageInfo {
  const c = config.config ?? {};
  const info: ImageInfo = {
    reference,
    registry,
    repository,
    manifestDigest,
    manifestMediaType: manifestMediaType || manifest.mediaType || MediaType.OciManifest,
    configDigest: manifest.config.digest,
    os: config.os,
    architecture: config.architecture,
    config: {
      env: c.Env ?? [],
      cmd: c.Cmd ?? null,
      entrypoint: c.Entrypoint ?? null,
      workingDir: c.WorkingDir ?? '',
      user: c.User ?? '',
      labels: c.Labels ?? {},
      exposedPorts: Object.keys(c.ExposedPorts ?? {}),
    },
  };
  if (config.variant) info.variant = config.variant;
  if (config.created) info.created = config.created;
  if (c.StopSignal) info.config.stopSignal = c.StopSignal;
  return info;
}
