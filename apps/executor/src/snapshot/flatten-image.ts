/**
 * Flattening a snapshot image whose chain of layers nears the overlay limit (Docker refuses a
 * 126th layer: "max depth exceeded"). Every snapshot of a restored sandbox adds a layer; when
 * the new image has more than `snapshots.max_layers`, its layers are squashed into one
 * (@cryo/clip flattenLayers: the OCI merge of the clip index), so the chain goes on forever.
 *
 * It runs after the sandbox is unpaused: the pause window stays what it was (the new diff is
 * captured as always), and the sandbox keeps running while the image is flattened.
 * - docker driver: the committed image's layers come from the engine (`docker save`), the flat
 *   image goes back into it (`docker load`, same tag) so that a restore on the same host finds
 *   it; the driver's push then pushes a one-layer image.
 * - runc-lazy driver: the base image's layers come from the registry, the new layer from disk;
 *   the flat image is pushed with @cryo/oci.
 * Either way the layers are spooled to `workDir` (disk: the image's uncompressed size; plus the
 * gzip'd flat layer for a registry, while the engine's flat layer streams into `docker load`),
 * and the config keeps everything but `rootfs` and `history`: one diff_id, and one history entry
 * saying what was squashed.
 */
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import {
  compressionOf,
  decompressLayer,
  flattenLayers,
  spoolLayer,
  writeLayerBlob,
  type FileRegionLayer,
  type FlattenStats,
  type LayerBlobFile,
} from '@cryo/clip';
import type { Descriptor, RegistryClient } from '@cryo/oci';
import { CryoError } from '@cryo/snapshot';
import { ProgressTracker, followDockerStream } from '../runtime/docker-progress';
import { daemonText, dockerFailure, toCryoError } from '../errors';
import { oneLayerArchive, readSavedImage, type WrittenArchive } from './docker-archive';

/** Docker's layer store refuses a 126th layer (moby layer/layer_store.go maxLayerDepth = 125). */
export const DOCKER_MAX_LAYERS = 125;

/** `snapshots.max_layers` when the config says nothing: well below Docker's limit. */
export const DEFAULT_MAX_LAYERS = 100;

/** What a flatten did, for the snapshot's record and logs. */
export interface FlattenReport {
  /** layers squashed into one */
  squashedLayers: number;
  stats: FlattenStats;
  /** the flat layer: uncompressed bytes, and blob bytes as stored (gzip for a registry, the plain tar for an engine) */
  uncompressedBytes: number;
  blobBytes: number;
  /** spooling, merging and writing the flat layer (and for an engine: `docker save` and `docker load`) */
  ms: number;
  /**
   * where that time went: `read` (the layers, spooled), `merge` (the flat layer written; for an
   * engine it streams into `load`, docker load, and counts there)
   */
  phases: { read_ms: number; merge_ms: number | null; load_ms: number | null };
}

const sha256Hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * `config` as the config of its flattened image: `rootfs.diff_ids` is the one flat layer,
 * `history` one entry saying how many layers were squashed (the per-layer entries no longer
 * match the layers, and Docker refuses a config with more non-empty history entries than
 * layers). Everything else (Env, Cmd, labels, architecture, unknown fields) is kept.
 */
export function flattenedConfig(config: Record<string, unknown>, diffId: string, squashedLayers: number, now = new Date()): Record<string, unknown> {
  const created = now.toISOString();
  return {
    ...config,
    created,
    rootfs: { type: 'layers', diff_ids: [diffId] },
    history: [{
      created,
      created_by: 'cryo flatten',
      comment: `cryo: ${squashedLayers} layers flattened into one (executor setting snapshots.max_layers)`,
    }],
  };
}

/** Merge `layers` into one tar, gzip'd to `outPath`. */
async function writeFlatLayer(layers: FileRegionLayer[], outPath: string): Promise<{ blob: LayerBlobFile; stats: FlattenStats }> {
  try {
    const flat = flattenLayers(layers);
    const blob = await writeLayerBlob(flat.tar(), outPath);
    return { blob, stats: flat.stats };
  } finally {
    await Promise.all(layers.map((l) => l.close()));
  }
}

export interface EngineFlattenInput {
  docker: Docker;
  /** the committed image (its id) and the tag it has, which the flat image takes over */
  imageId: string;
  tag: string;
  workDir: string;
  log: Logger;
  now?: Date;
}

/**
 * Flatten an image of a Docker engine: `docker save`, merge, `docker load` of a one-layer image
 * with the same config (but rootfs and history) under `tag`, then remove the old image (now
 * untagged; its parent layers stay with the images that hold them). Returns the new image id.
 */
export async function flattenEngineImage(input: EngineFlattenInput): Promise<{ imageId: string; report: FlattenReport }> {
  const start = performance.now();
  const { docker } = input;
  await mkdir(input.workDir, { recursive: true });
  try {
    let archive: NodeJS.ReadableStream;
    try {
      archive = await docker.getImage(input.imageId).get();
    } catch (err) {
      throw dockerFailure(err, `export image ${input.imageId} to flatten it (docker save)`);
    }
    const saved = await readSavedImage(archive as AsyncIterable<Buffer>, join(input.workDir, 'saved.tar'));
    const read = performance.now();
    // The flat layer goes straight into docker load: it is never written here.
    let flatFailure: unknown;
    const written: Partial<WrittenArchive> = {};
    let stats: FlattenStats;
    try {
      const flat = flattenLayers(saved.layers);
      stats = flat.stats;
      const archiveStream = oneLayerArchive({
        layer: flat.tar(),
        layerSize: flat.stats.tarBytes,
        config: (diffId) => Buffer.from(JSON.stringify(flattenedConfig(saved.config, diffId, saved.layers.length, input.now))),
        repoTags: [input.tag],
      }, written);
      const body = Readable.from((async function* () {
        try {
          yield* archiveStream;
        } catch (err) {
          flatFailure = err;
          throw err;
        }
      })());
      let response: NodeJS.ReadableStream;
      try {
        response = await docker.loadImage(body, { quiet: true });
      } catch (err) {
        throw flatFailure ?? dockerFailure(err, `load the flattened image of ${input.imageId} (docker load)`);
      }
      const tracker = await followDockerStream(response, new ProgressTracker('load'), () => undefined).catch((err: unknown) => {
        throw flatFailure ?? err;
      });
      if (flatFailure !== undefined) throw flatFailure;
      if (tracker.error !== undefined) throw dockerFailure(new Error(tracker.error), `load the flattened image of ${input.imageId} (docker load)`);
    } finally {
      await Promise.all(saved.layers.map((l) => l.close()));
    }
    if (written.configHex === undefined) throw new CryoError('INTERNAL', `docker load of the flattened image of ${input.imageId} ended before its archive did`);
    const imageId = `sha256:${written.configHex}`;
    if (imageId !== input.imageId) {
      await docker.getImage(input.imageId).remove({ noprune: false }).catch((err: unknown) => {
        input.log.warn({ image_id: input.imageId, err: daemonText(err) }, 'could not remove the image that was flattened');
      });
    }
    const end = performance.now();
    return {
      imageId,
      report: {
        squashedLayers: saved.layers.length, stats, uncompressedBytes: stats.tarBytes, blobBytes: stats.tarBytes, ms: end - start,
        phases: { read_ms: Math.round(read - start), merge_ms: null, load_ms: Math.round(end - read) },
      },
    };
  } finally {
    await rm(input.workDir, { recursive: true, force: true });
  }
}

/**
 * The docker driver's hook, after the commit and the unpause: the committed image as it is when
 * it has at most `maxLayers` layers, else flattened (`flattenEngineImage`).
 */
export async function flattenCommitIfDeep(input: EngineFlattenInput & { maxLayers: number; onFlatten?: () => void }): Promise<{ imageId: string; layers: number; report: FlattenReport | null }> {
  const layers = (await input.docker.getImage(input.imageId).inspect()).RootFS.Layers?.length ?? 0;
  if (!needsFlatten(layers, input.maxLayers)) return { imageId: input.imageId, layers, report: null };
  input.onFlatten?.();
  const flat = await flattenEngineImage(input).catch((err: unknown) => { throw flattenFailure(err, layers, input.maxLayers); });
  input.log.info({
    image_id: flat.imageId, squashed_layers: flat.report.squashedLayers, ...flat.report.stats, uncompressed_bytes: flat.report.uncompressedBytes,
    ms: Math.round(flat.report.ms), ...flat.report.phases,
  }, 'snapshot image flattened');
  return { imageId: flat.imageId, layers: 1, report: flat.report };
}

/** A layer to flatten from a registry: its blob there, or a gzip'd layer file on this host. */
export type LayerOrigin =
  | { kind: 'registry'; client: RegistryClient; repository: string; descriptor: Descriptor; diffId: string | undefined }
  | { kind: 'file'; path: string; diffId: string };

async function openOrigin(origin: LayerOrigin): Promise<AsyncIterable<Buffer>> {
  if (origin.kind === 'file') return decompressLayer(createReadStream(origin.path), 'gzip');
  const { stream } = await origin.client.getBlob(origin.repository, origin.descriptor.digest, { verify: true });
  return decompressLayer(stream as AsyncIterable<Buffer>, compressionOf(origin.descriptor.mediaType));
}

/** Downloads at once while spooling: enough to hide a registry's latency, few enough for its limits. */
const SPOOL_CONCURRENCY = 4;

/**
 * Flatten layers read from registries (and local files) into one gzip'd layer file in `workDir`,
 * each layer's uncompressed tar checked against its diff_id. The caller pushes it.
 */
export async function flattenLayerOrigins(origins: LayerOrigin[], workDir: string): Promise<{ blob: LayerBlobFile; report: FlattenReport }> {
  const start = performance.now();
  await mkdir(workDir, { recursive: true });
  const spooled: FileRegionLayer[] = new Array<FileRegionLayer>(origins.length);
  try {
    let next = 0;
    let failure: { err: unknown } | undefined;
    // Each worker takes the next layer until all are spooled or one failed; all are waited for.
    const worker = async (): Promise<void> => {
      for (let i = next++; i < origins.length && failure === undefined; i = next++) {
        const origin = origins[i];
        if (origin === undefined) continue;
        try {
          spooled[i] = (await spoolLayer(await openOrigin(origin), join(workDir, `layer-${i}.tar`), origin.diffId)).layer;
        } catch (err) {
          failure ??= { err };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(SPOOL_CONCURRENCY, origins.length) }, worker));
    if (failure !== undefined) throw failure.err;
    const read = performance.now();
    const { blob, stats } = await writeFlatLayer(spooled, join(workDir, 'flat.tar.gz'));
    for (let i = 0; i < origins.length; i++) await rm(join(workDir, `layer-${i}.tar`), { force: true });
    const end = performance.now();
    return {
      blob,
      report: {
        squashedLayers: origins.length, stats, uncompressedBytes: blob.uncompressedSize, blobBytes: blob.size, ms: end - start,
        phases: { read_ms: Math.round(read - start), merge_ms: Math.round(end - read), load_ms: null },
      },
    };
  } catch (err) {
    await Promise.all(spooled.filter((l) => l !== undefined).map((l) => l.close()));
    throw err;
  }
}

/**
 * A flatten's failure as users read it: the cause (mapped by the executor's error boundary: a
 * full disk, a registry, the engine) after what was being done, and that the sandbox runs on.
 */
export function flattenFailure(err: unknown, layers: number, maxLayers: number): CryoError {
  const cause = toCryoError(err);
  return new CryoError(cause.code, `flattening the snapshot image (${layers} layers, more than snapshots.max_layers ${maxLayers}) failed `
    + `(the sandbox keeps running; no snapshot was made): ${cause.message}`, cause.details);
}

/** Whether an image of `layers` layers is flattened under `maxLayers` (checked: Docker's own limit). */
export function needsFlatten(layers: number, maxLayers: number): boolean {
  if (!Number.isInteger(maxLayers) || maxLayers < 1 || maxLayers >= DOCKER_MAX_LAYERS) {
    throw new CryoError('INTERNAL', `snapshots.max_layers must be 1..${DOCKER_MAX_LAYERS - 1}, not ${maxLayers}`);
  }
  return layers > maxLayers;
}
