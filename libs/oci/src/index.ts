export { RegistryClient } from './client';
export type { BlobHead, BlobStream, ManifestHead, ManifestResult, RegistryClientOptions } from './client';
export type { BlobRangeOptions } from './blob-range';
export { connectRegistry } from './connect';
export type { ConnectOptions } from './connect';
export { BlobContentError, BlobUploadSession } from './blob-upload';
export type { BlobStreamWriter, UploadedBlob } from './blob-upload';
export { RegistryError, isRegistryError } from '@cryo/registry-auth';
export type { RegistryErrorCode } from '@cryo/registry-auth';
export {
  IMAGE_INDEX_MEDIA_TYPES,
  IMAGE_MANIFEST_MEDIA_TYPES,
  MANIFEST_ACCEPT,
  MediaType,
  baseMediaType,
  isGzipLayer,
  isImageIndexMediaType,
  isImageManifestMediaType,
} from './media-types';
export type { MediaTypeName } from './media-types';
export {
  ContainerConfigSchema,
  DescriptorSchema,
  ImageConfigSchema,
  ImageIndexSchema,
  ImageManifestSchema,
  ManifestFormatError,
  PlatformSchema,
  parseImageConfig,
  parseImageIndex,
  parseImageManifest,
  parseManifestDocument,
  selectPlatform,
  serializeManifest,
} from './manifest';
export type { ContainerConfig, Descriptor, ImageConfig, ImageIndex, ImageManifest, ManifestDocument, Platform } from './manifest';
export { DOCKER_HUB, ImageReferenceError, familiarName, formatImageReference, parseImageReference } from './reference';
export type { ImageReference } from './reference';
export { VerifyingStream, digestLike, isDigest, sha256Digest } from './digest';
