/**
 * A layer blob written to a file from its tar stream, hashing on the way: the tar's sha256 is the
 * layer's diff_id (image config `rootfs.diff_ids`), the blob's sha256 its digest (manifest).
 */
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

export interface LayerBlobFile {
  path: string;
  /** sha256 of the gzip blob */
  digest: string;
  /** sha256 of the uncompressed tar */
  diffId: string;
  /** bytes of the gzip blob */
  size: number;
  uncompressedSize: number;
}

function hashTap(hash: Hash, count: { bytes: number }) {
  return async function* tap(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      hash.update(chunk);
      count.bytes += chunk.length;
      yield chunk;
    }
  };
}

/** Write `tar` gzip'd to `outPath` (as `docker push` stores layers; Node's zlib at its default level). */
export async function writeLayerBlob(tar: AsyncIterable<Buffer>, outPath: string): Promise<LayerBlobFile> {
  const tarHash = createHash('sha256');
  const tarCount = { bytes: 0 };
  const gzHash = createHash('sha256');
  const gzCount = { bytes: 0 };
  await pipeline(tar, hashTap(tarHash, tarCount), createGzip(), hashTap(gzHash, gzCount), createWriteStream(outPath));
  return {
    path: outPath,
    digest: `sha256:${gzHash.digest('hex')}`,
    diffId: `sha256:${tarHash.digest('hex')}`,
    size: gzCount.bytes,
    uncompressedSize: tarCount.bytes,
  };
}
