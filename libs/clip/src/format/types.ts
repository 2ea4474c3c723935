import type { LayerCompression } from '../build/layer-indexer';

/** The parts of the image config a runtime needs to start the image. */
export interface ImageRuntimeConfig {
  env: string[];
  cmd: string[] | null;
  entrypoint: string[] | null;
  workingDir: string;
  user: string;
  labels: Record<string, string>;
  exposedPorts: string[];
  stopSignal?: string;
}

export interface ImageInfo {
  /** the reference the index was built from, as given (may be a tag) */
  reference: string;
  /** registry host and repository the layers are read from */
  registry: string;
  repository: string;
  /** pinned: reads always go to this manifest's layers, whatever the tag says now */
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  os: string;
  architecture: string;
  variant?: string;
  created?: string;
  config: ImageRuntimeConfig;
}

export interface SpanInfo {
  uoff: number;
  ulen: number;
  coff: number;
  bits: number;
  /** position of the deflated window in the windows section (gzip only) */
  windowOffset: number;
  windowLength: number;
  sha256: Buffer;
}

export interface LayerInfo {
  digest: string;
  mediaType: string;
  size: number;
  diffId: string;
  compression: LayerCompression;
  uncompressedSize: number;
  spans: SpanInfo[];
}

export interface BuildInfo {
  span: number;
  createdAt: string;
  tool: string;
}

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
