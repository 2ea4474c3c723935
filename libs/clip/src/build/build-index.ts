/**
 * Builds an index from layer streams: each layer is streamed exactly once,
 * its compressed digest and diff_id are checked, and the entries of all
 * layers are merged into one tree. Independent of where the bytes come from
 * (registry.ts feeds it from a registry; tests feed it from files).
 */
import { ClipError } from '../errors';
import type { ImageInfo } from '../format/types';
import { writeIndex, type LayerToWrite } from '../format/writer';
import { TreeBuilder } from '../tree/merge';
import { compressionOf, LayerIndexer, type IndexedLayer } from './layer-indexer';

export const DEFAULT_SPAN = 1024 * 1024;
export const TOOL = 'cryo-clip/2';

export interface LayerInput {
  digest: string;
  mediaType: string;
  size: number;
  /** from the image config's rootfs.diff_ids; verified when given */
  diffId?: string;
  open(): Promise<AsyncIterable<Buffer>>;
  /**
   * The layer already indexed (by whoever compressed it, or from a cache): not read again. Its
   * digest, size and diff_id are checked like a streamed layer's.
   */
  indexed?: IndexedLayer;
}

export interface BuildProgress {
  layer: number;
  layers: number;
  digest: string;
  /** compressed bytes of this layer read so far, and its size */
  layerBytes: number;
  layerSize: number;
  /** compressed bytes of the whole image read so far, and its size */
  bytesDone: number;
  bytesTotal: number;
}

export interface IndexLayersOptions {
  /** longest span: bytes of uncompressed output between checkpoints inside large files (default 1 MiB) */
  span?: number;
  /** gzip: shortest span where files are small (default 32 KiB; equal to `span` for uniform spans); see checkpoint-plan.ts */
  minSpan?: number;
  /** gzip: share of each compressed layer the index may spend on its checkpoints and entries (default 0.01) */
  indexBudget?: number;
  /** zero unreferenced window bytes (default true; off only to measure it) */
  pruneWindows?: boolean;
  onProgress?: (p: BuildProgress) => void;
  /** each layer once it is indexed and checked (`streamed`: it was read, not given as `indexed`) */
  onLayerIndexed?: (digest: string, layer: IndexedLayer, streamed: boolean) => void;
}

export interface BuildResult {
  index: Buffer;
  files: number;
  uncompressedSize: number;
  compressedSize: number;
  spans: number;
}

/** Stream one layer through a LayerIndexer; ClipErrors name the layer. */
async function streamLayer(
  layer: LayerInput,
  i: number,
  span: number,
  opts: IndexLayersOptions,
  onBytes: (layerBytes: number, chunk: number) => void,
): Promise<IndexedLayer> {
  const indexer = new LayerIndexer(compressionOf(layer.mediaType), span, {
    pruneWindows: opts.pruneWindows ?? true,
    layerSize: layer.size,
    ...(opts.minSpan === undefined ? {} : { minSpan: opts.minSpan }),
    ...(opts.indexBudget === undefined ? {} : { indexBudget: opts.indexBudget }),
    // inflation keeps this thread busy: hash big layers on another core
    hashOnWorker: layer.size >= 8 * 1024 * 1024,
  });
  const named = (err: unknown): unknown =>
    err instanceof ClipError ? new ClipError(err.code, `layer ${i} (${layer.digest}): ${err.message}`, { layer: layer.digest }, { cause: err }) : err;
  let layerBytes = 0;
  try {
    const stream = await layer.open();
    for await (const chunk of stream) {
      indexer.push(chunk);
      layerBytes += chunk.length;
      onBytes(layerBytes, chunk.length);
    }
    return await indexer.end();
  } catch (err) {
    throw named(err);
  }
}

export async function indexLayers(image: ImageInfo, layers: LayerInput[], opts: IndexLayersOptions = {}): Promise<BuildResult> {
  const span = opts.span ?? DEFAULT_SPAN;
  if (!Number.isSafeInteger(span) || span < 64 * 1024) {
    throw new ClipError('EINVAL', `span must be an integer of at least 64 KiB (got ${span})`);
  }
  if (opts.minSpan !== undefined && (!Number.isSafeInteger(opts.minSpan) || opts.minSpan < 4096)) {
    throw new ClipError('EINVAL', `minSpan must be an integer of at least 4 KiB (got ${opts.minSpan})`);
  }
  if (opts.indexBudget !== undefined && !(opts.indexBudget > 0 && opts.indexBudget <= 1)) {
    throw new ClipError('EINVAL', `indexBudget must be a share of the image between 0 and 1 (got ${opts.indexBudget})`);
  }
  const tree = new TreeBuilder();
  const written: LayerToWrite[] = [];
  const bytesTotal = layers.reduce((n, l) => n + l.size, 0);
  let bytesDone = 0;
  let files = 0;
  for (const [i, layer] of layers.entries()) {
    let result: IndexedLayer;
    if (layer.indexed !== undefined) {
      result = layer.indexed;
      bytesDone += layer.size;
      opts.onProgress?.({ layer: i, layers: layers.length, digest: layer.digest, layerBytes: layer.size, layerSize: layer.size, bytesDone, bytesTotal });
    } else {
      result = await streamLayer(layer, i, span, opts, (layerBytes, chunk) => {
        bytesDone += chunk;
        opts.onProgress?.({ layer: i, layers: layers.length, digest: layer.digest, layerBytes, layerSize: layer.size, bytesDone, bytesTotal });
      });
    }
    if (result.digest !== layer.digest) {
      throw new ClipError('DIGEST_MISMATCH', `layer ${i}: blob digest is ${result.digest}, manifest says ${layer.digest}`, {
        layer: layer.digest,
      });
    }
    if (result.compressedSize !== layer.size) {
      throw new ClipError('DIGEST_MISMATCH', `layer ${i} (${layer.digest}): ${result.compressedSize} bytes, manifest says ${layer.size}`);
    }
    if (layer.diffId !== undefined && layer.diffId !== result.diffId) {
      throw new ClipError(
        'DIGEST_MISMATCH',
        `layer ${i} (${layer.digest}): uncompressed digest is ${result.diffId}, the config's diff_id is ${layer.diffId}`,
        { layer: layer.digest },
      );
    }
    opts.onLayerIndexed?.(layer.digest, result, layer.indexed === undefined);
    tree.applyLayer(result.entries, i);
    files += result.entries.length;
    written.push({
      digest: layer.digest,
      mediaType: layer.mediaType,
      size: layer.size,
      diffId: result.diffId,
      compression: result.compression,
      uncompressedSize: result.uncompressedSize,
      spans: result.spans,
    });
  }
  const index = writeIndex({
    image,
    build: { span, createdAt: new Date().toISOString(), tool: TOOL },
    layers: written,
    root: tree.root,
  });
  return {
    index,
    files,
    uncompressedSize: written.reduce((n, l) => n + l.uncompressedSize, 0),
    compressedSize: bytesTotal,
    spans: written.reduce((n, l) => n + l.spans.length, 0),
  };
}
