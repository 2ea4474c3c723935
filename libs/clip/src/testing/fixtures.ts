/** Builds in-memory images from tar streams for tests and benchmarks. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import { indexLayers, type IndexLayersOptions, type LayerInput } from '../build/build-index';
import { ClipIndex } from '../format/index-file';
import type { ImageInfo } from '../format/types';
import { ClipReader, type ClipReaderOptions } from '../reader/clip-reader';
import { MemoryLayerSource, type LayerSource } from '../source';

export type TestCompression = 'gzip' | 'gzip-1' | 'gzip-9' | 'node-gzip' | 'multi-gzip' | 'none' | 'zstd';

export const MEDIA = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  none: 'application/vnd.oci.image.layer.v1.tar',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export function compress(tar: Buffer, how: TestCompression): { blob: Buffer; mediaType: string } {
  switch (how) {
    case 'none':
      return { blob: tar, mediaType: MEDIA.none };
    case 'zstd':
      return { blob: execFileSync('zstd', ['-q', '-c', '-3'], { input: tar, maxBuffer: 1 << 30 }), mediaType: MEDIA.zstd };
    case 'node-gzip':
      return { blob: zlib.gzipSync(tar), mediaType: MEDIA.dockerGzip };
    case 'multi-gzip': {
      // several gzip members back to back (as pigz --independent or concatenated gzip files)
      const cuts = [0, Math.floor(tar.length / 3), Math.floor(tar.length / 2) + 7, tar.length];
      const members = cuts.slice(1).map((end, i) => zlib.gzipSync(tar.subarray(cuts[i] ?? 0, end)));
      return { blob: Buffer.concat(members), mediaType: MEDIA.gzip };
    }
    default: {
      const level = how === 'gzip-1' ? '-1' : how === 'gzip-9' ? '-9' : '-6';
      return { blob: execFileSync('gzip', [level, '-n', '-c'], { input: tar, maxBuffer: 1 << 30 }), mediaType: MEDIA.gzip };
    }
  }
}

export function testImage(): ImageInfo {
  return {
    reference: 'test.local/clip/test:latest',
    registry: 'test.local',
    repository: 'clip/test',
    manifestDigest: 'sha256:' + '0'.repeat(64),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    configDigest: 'sha256:' + '1'.repeat(64),
    os: 'linux',
    architecture: 'amd64',
    config: {
      env: ['PATH=/usr/bin:/bin'],
      cmd: ['/bin/sh'],
      entrypoint: null,
      workingDir: '/',
      user: '',
      labels: { a: 'b' },
      exposedPorts: [],
    },
  };
}

export interface BuiltImage {
  index: ClipIndex;
  indexBytes: Buffer;
  blobs: Map<string, Buffer>;
  source: MemoryLayerSource;
  reader(opts?: Omit<ClipReaderOptions, 'source'> & { source?: LayerSource }): ClipReader;
}

export async function buildImage(
  tars: Buffer[],
  how: TestCompression | TestCompression[] = 'gzip',
  opts: IndexLayersOptions = {},
): Promise<BuiltImage> {
  const blobs = new Map<string, Buffer>();
  const layers: LayerInput[] = tars.map((tar, i) => {
    const { blob, mediaType } = compress(tar, Array.isArray(how) ? (how[i] ?? 'gzip') : how);
    const digest = sha256(blob);
    blobs.set(digest, blob);
    return {
      digest,
      mediaType,
      size: blob.length,
      diffId: sha256(tar),
      open: async () =>
        (async function* () {
          for (let p = 0; p < blob.length; p += 256 * 1024) yield blob.subarray(p, p + 256 * 1024);
        })(),
    };
  });
  const built = await indexLayers(testImage(), layers, opts);
  const index = ClipIndex.fromBuffer(built.index);
  const source = new MemoryLayerSource(blobs);
  return {
    index,
    indexBytes: built.index,
    blobs,
    source,
    reader: (ro = {}) => new ClipReader(index, { source, ...ro }),
  };
}
