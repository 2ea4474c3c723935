/** Media types of the OCI image spec and of Docker's image manifest v2 schema 2. */
export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export type MediaTypeName = (typeof MediaType)[keyof typeof MediaType];

export const IMAGE_MANIFEST_MEDIA_TYPES: readonly string[] = [MediaType.OciManifest, MediaType.DockerManifest];
export const IMAGE_INDEX_MEDIA_TYPES: readonly string[] = [MediaType.OciIndex, MediaType.DockerManifestList];

/**
 * Sent on every manifest GET/HEAD: without it distribution converts to schema 1.
 */
export const MANIFEST_ACCEPT: string = [...IMAGE_MANIFEST_MEDIA_TYPES, ...IMAGE_INDEX_MEDIA_TYPES].join(', ');

export function isImageManifestMediaType(mediaType: string): boolean {
  return IMAGE_MANIFEST_MEDIA_TYPES.includes(baseMediaType(mediaType));
}

export function isImageIndexMediaType(mediaType: string): boolean {
  return IMAGE_INDEX_MEDIA_TYPES.includes(baseMediaType(mediaType));
}

/** `application/json; charset=utf-8` -> `application/json` */
export function baseMediaType(contentType: string): string {
  return (contentType.split(';')[0] ?? '').trim().toLowerCase();
}

export function isGzipLayer(mediaType: string): boolean {
  return mediaType === MediaType.OciLayerGzip || mediaType === MediaType.DockerLayerGzip || mediaType === MediaType.DockerForeignLayerGzip;
}
