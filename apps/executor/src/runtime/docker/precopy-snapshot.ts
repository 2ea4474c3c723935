/**
 * A Docker sandbox's snapshot by pre-copy, in phases:
 *   1. plan      what is captured: the overlay2 upper dir and the volumes cryo made; what is not
 *   2. precopy   copy passes while the sandbox runs (the base image's layers are placed in the
 *                target repository meanwhile)
 *   3. pause     pause, one last pass over what changed, unpause: the pause window
 *   4. layer     the layer of the copy, compressed on every core while it is uploaded, loaded
 *                into the local engine, and indexed for clip, in one pass
 *   5. publish   config and manifest; the local engine tags the image
 *   6. index     the clip index (base layers cached per host, the new one indexed in 4), pushed
 *                as `<tag>.clip`
 * Without a snapshot registry, 4 and 5 only load the image into the local engine. An image that
 * would have more layers than snapshots.max_layers is flattened instead of 4-6
 * (`flattenedSnapshot`).
 */
import { createHash } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { MediaType, connectRegistry, type Descriptor, type RegistryClient } from '@cryo/oci';
import type { RegistryAccessSettings, SnapshotRegistry } from '@cryo/registry-auth';
import { CryoError, localSnapshotRef, registrySnapshotRef, type CopyPass, type SnapshotCapture } from '@cryo/snapshot';
import type { ClipArtifacts } from '../../clip-artifacts';
import { snapshotLabels, type ProgressSink, type SnapshotOutcome, type SnapshotSpec } from '../driver';
import { imageManifest } from '../lazy/snapshot-image';
import { pauseWithResume, roundMs, type PauseControl } from '../pause-window';
import { baseConfigHere, baseInTarget, rememberImage, type BaseImage, type TargetRepository } from './base-image';
import { GzipPool } from './gzip-pool';
import { LocalLoad, commitConfig } from './image-publish';
import { layerStream, planLayer, type LayerPlan } from './layer-from-upper';
import { layerPathOf, planMounts } from './mounts';
import { Precopy, type CopySource } from './precopy';
import { compressLayer } from './push-pipeline';
import { flattenCommitIfDeep, needsFlatten } from '../../snapshot/flatten-image';

export interface PrecopySettings {
  /** gzip level for layers (1 fastest .. 9 smallest) */
  compressionLevel: number;
  /** copy passes while the sandbox runs, at most (the first copies everything) */
  maxRunningPasses: number;
  /** a running pass that copied less than this many bytes is the last before the pause */
  settledBytes: number;
  /** a snapshot image with more layers than this is flattened (snapshots.max_layers) */
  maxLayers: number;
}

export interface PrecopyContext {
  docker: Docker;
  registry: SnapshotRegistry | undefined;
  access: RegistryAccessSettings;
  clip: ClipArtifacts;
  /** scratch space per snapshot (copies, docker save) */
  workDir: string;
  /** what this host knows about images' layers in registries */
  recordDir: string;
  settings: PrecopySettings;
  /** why the pre-copy method was chosen (the result's `capture.method_reason`) */
  methodReason: string;
  log: Logger;
  /** fault injection for tests: stay paused this long */
  holdPausedMs?: number;
  /** work that goes on after the snapshot is reported (the local engine's copy of `refs`) */
  inBackground: (refs: string[], work: Promise<void>) => void;
  /** tag a local image for the registry and push it with the engine (a flattened snapshot); undefined without a registry */
  push: (localRef: string, progress: ProgressSink) => Promise<{ imageRef: string; digest: string; pushMs: number } | undefined>;
  /** remove image refs (a failed snapshot leaves nothing) */
  removeImages: (refs: string[]) => Promise<unknown>;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Copy sources: the writable layer, then each captured volume at its path (nested ones skipped by their parents). */
function copySources(upperDir: string, volumes: Array<{ destination: string; source: string }>): CopySource[] {
  const paths = volumes.map((v) => layerPathOf(v.destination));
  const inside = (path: string, of: string): boolean => path.startsWith(`${of}/`);
  return [
    { root: upperDir, at: '', skip: paths, opaque: false },
    ...volumes.map((v, i) => {
      const at = paths[i] ?? '';
      return { root: v.source, at, skip: paths.filter((p) => inside(p, at)).map((p) => p.slice(at.length + 1)), opaque: true };
    }),
  ];
}

/** At most one report per `everyMs` within a phase; a new phase is reported at once. */
function throttled(sink: ProgressSink, everyMs = 250): ProgressSink {
  let last = 0;
  let phase = '';
  return (p) => {
    const now = performance.now();
    if (p.phase === phase && now - last < everyMs) return;
    phase = p.phase;
    last = now;
    sink(p);
  };
}

export async function precopySnapshot(
  ctx: PrecopyContext,
  spec: SnapshotSpec,
  info: Docker.ContainerInspectInfo,
  control: PauseControl & { onStuck: (err: unknown) => void },
  report: ProgressSink,
): Promise<SnapshotOutcome> {
  const progress = throttled(report);
  const started = performance.now();
  // 1. plan
  const upperDir = (info.GraphDriver.Data as Record<string, string | undefined> | undefined)?.UpperDir;
  if (info.GraphDriver.Name !== 'overlay2' || upperDir === undefined) {
    throw new CryoError('UNPROCESSABLE', `snapshots.method precopy needs the overlay2 storage driver; the engine uses ${info.GraphDriver.Name}: set snapshots.method: commit`);
  }
  const image = await ctx.docker.getImage(info.Image).inspect();
  const mounts = planMounts(info, image.Config.Volumes);
  const work = join(ctx.workDir, spec.snapshotId);
  await mkdir(work, { recursive: true });
  const precopy = new Precopy(copySources(upperDir, mounts.volumes), join(work, 'store'));
  const localRef = localSnapshotRef(spec.tag);
  const remoteRef = ctx.registry === undefined ? undefined : registrySnapshotRef(ctx.registry, spec.tag);
  const pool = new GzipPool({ level: ctx.settings.compressionLevel });
  ctx.clip.warm(); // the index thread compiles while the copy runs
  let target: TargetRepository | undefined;
  const clients: RegistryClient[] = [];
  const client = async (host: string): Promise<RegistryClient> => {
    const c = await connectRegistry(host, ctx.access, { userAgent: 'cryo-executor' });
    clients.push(c);
    return c;
  };
  let handedOff = false;
  const cleanup = async (): Promise<void> => {
    await precopy.dispose();
    await rm(work, { recursive: true, force: true });
  };
  try {
    if (ctx.registry !== undefined) target = { client: await client(ctx.registry.url), host: ctx.registry.url, repository: ctx.registry.repository };
    const baseCtx = { docker: ctx.docker, client, recordDir: ctx.recordDir, workDir: work, pool };
    // The base's layers go to the target repository while the copy runs.
    const basePromise: Promise<BaseImage> = target === undefined ? baseConfigHere(baseCtx, info.Image) : baseInTarget({ ...baseCtx, target }, info.Image);
    let baseFailure: unknown;
    basePromise.catch((err: unknown) => { baseFailure = err; });

    // 2. precopy
    const passes: CopyPass[] = [];
    const precopyStart = performance.now();
    let copied = 0;
    progress({ phase: 'precopy', bytes_done: 0, bytes_total: null });
    for (let n = 0; n < ctx.settings.maxRunningPasses; n++) {
      const pass = await precopy.pass(false);
      passes.push(pass);
      copied += pass.bytes_copied;
      progress({ phase: 'precopy', bytes_done: copied, bytes_total: null });
      if (n > 0 && pass.bytes_copied < ctx.settings.settledBytes) break;
      if (n === 0 && pass.bytes_copied < ctx.settings.settledBytes && pass.files_copied === 0) break;
    }
    const precopyMs = performance.now() - precopyStart;
    // A base that cannot be placed (credentials, registry down) fails the snapshot before any pause.
    if (baseFailure !== undefined) throw baseFailure;

    // 3. pause: the last pass, over what changed
    progress({ phase: 'pause', bytes_done: 0, bytes_total: null });
    const paused = await pauseWithResume(control, async () => {
      if (ctx.holdPausedMs !== undefined && ctx.holdPausedMs > 0) await sleep(ctx.holdPausedMs);
      return precopy.pass(true);
    }, control.onStuck);
    passes.push(paused.value);

    // 4. layer: compress + upload + index, one pass (no registry: straight into the local engine)
    const pushStart = performance.now();
    const plan = planLayer(precopy.captured());
    if (plan.socketsSkipped.length > 0) ctx.log.info({ sockets: plan.socketsSkipped.slice(0, 20) }, 'sockets are left out of the snapshot, as docker commit leaves them out');
    const capture = (bytesPushed: number | null): SnapshotCapture => ({
      method: 'precopy', method_reason: ctx.methodReason, passes, bytes_pushed: bytesPushed, volumes: mounts.volumes.map((v) => v.destination),
    });
    const timings = { pause_ms: roundMs(paused.pauseMs), precopy_ms: roundMs(precopyMs), commit_ms: null, push_ms: null, index_ms: null, flatten_ms: null };
    const configFor = async (diffId: string): Promise<Buffer> => commitConfig((await basePromise).config, info, {
      layers: [{ diffId, comment: `cryo snapshot ${spec.snapshotId} of sandbox ${spec.sandboxId}` }], labels: snapshotLabels(spec),
    });
    const baseLayerCount = async (): Promise<number> => (((await basePromise).config.rootfs as { diff_ids?: unknown[] } | undefined)?.diff_ids ?? []).length;
    if (needsFlatten((await baseLayerCount()) + 1, ctx.settings.maxLayers)) {
      return await flattenedSnapshot(ctx, {
        plan, localRef, work, progress, baseLayers: await baseLayerCount(), configFor,
        outcome: { timings, capture: capture(null), excludedMounts: mounts.excluded },
      });
    }
    if (target === undefined || remoteRef === undefined) {
      const imageId = await loadLocally(ctx.docker, plan, configFor, await baseLayerCount(), [localRef]);
      const size = (await ctx.docker.getImage(imageId).inspect()).Size;
      return {
        imageRef: localRef, digest: imageId, sizeBytes: size, layers: (await baseLayerCount()) + 1, flattened: false, timings, capture: capture(null), excludedMounts: mounts.excluded,
      };
    }
    const session = await target.client.startBlobUpload(target.repository);
    const upload = session.openStream();
    let layer;
    try {
      layer = await compressLayer(layerStream(plan), pool, {
        upload,
        progress: (done) => progress({ phase: 'push', bytes_done: done, bytes_total: plan.size }),
      }, { expectedSize: plan.size });
      await upload.end();
      await session.commit(layer.digest);
    } catch (err) {
      upload.abort();
      await session.cancel();
      throw err;
    }

    // 5. publish: config (docker commit's), manifest
    const base = await basePromise;
    const config = await configFor(layer.diffId);
    const imageId = sha256(config);
    await target.client.uploadBlob(target.repository, config, imageId, config.length);
    const newLayer: Descriptor = { mediaType: MediaType.DockerLayerGzip, size: layer.size, digest: layer.digest };
    const manifest = imageManifest(base.layers, newLayer, config);
    const digest = await target.client.putManifest(target.repository, spec.tag, manifest.bytes, manifest.mediaType);
    const pushMs = performance.now() - pushStart;
    rememberImage(ctx.recordDir, config, [...base.layers, newLayer], `${target.host}/${target.repository}`);
    const bytesPushed = layer.size + config.length + manifest.bytes.length + base.uploadedBytes;

    // The local engine's copy is made from the same stored files while the index is built and
    // after the snapshot is reported: a restore on this host waits for it (inBackground), not
    // the snapshot. Off the critical path, it does not compete with the push for disk and CPU.
    const refs = [localRef, remoteRef];
    const loading = loadLocally(ctx.docker, plan, async () => config, base.layers.length, refs, layer.diffId)
      .finally(() => cleanup())
      .then(() => undefined);
    handedOff = true;
    ctx.inBackground(refs, loading);

    // 6. index
    progress({ phase: 'index', bytes_done: 0, bytes_total: null });
    const indexStart = performance.now();
    let clipIndexRef: string | null = null;
    try {
      clipIndexRef = (await ctx.clip.publish(remoteRef, digest, [...base.indexed, layer.indexed])).clip_index_ref;
    } catch (err) {
      // The snapshot stands; the server builds the index with build_index instead.
      ctx.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'clip index in the push pass failed; left to build_index');
    }
    const indexMs = performance.now() - indexStart;
    report({ phase: 'pushed', bytes_done: layer.size, bytes_total: layer.size });
    ctx.log.info({
      sandbox_id: spec.sandboxId, snapshot_id: spec.snapshotId, digest, passes, layer_bytes: layer.size, layer_uncompressed: layer.uncompressedSize,
      members: layer.members, stored_members: layer.storedMembers, base: base.source, base_mounted: base.layersMounted, base_uploaded: base.layersUploaded,
      whiteouts: plan.whiteouts, opaque_dirs: plan.opaqueDirs, volumes: mounts.volumes.length, excluded_mounts: mounts.excluded.length,
      push_ms: roundMs(pushMs), index_ms: roundMs(indexMs), total_ms: roundMs(performance.now() - started), image_id: imageId,
    }, 'pre-copy snapshot pushed');
    return {
      imageRef: remoteRef,
      digest,
      sizeBytes: base.layers.reduce((n, l) => n + l.size, 0) + layer.size + config.length,
      layers: base.layers.length + 1,
      flattened: false,
      timings: { ...timings, push_ms: roundMs(pushMs), index_ms: clipIndexRef === null ? null : roundMs(indexMs) },
      clipIndexRef,
      capture: capture(bytesPushed),
      excludedMounts: mounts.excluded,
    };
  } finally {
    await pool.close();
    for (const c of clients) await c.close().catch(() => undefined);
    if (!handedOff) await cleanup();
  }
}

/**
 * A snapshot past snapshots.max_layers: its layer goes into the local engine on top of the base
 * (at most 125 layers: max_layers is below), the engine's image is flattened there
 * (../../snapshot/flatten-image.ts) and pushed by the engine; the clip index follows as a
 * build_index operation. One snapshot in about max_layers of a chain takes this way; the pause
 * window is the pre-copy's.
 */
async function flattenedSnapshot(ctx: PrecopyContext, input: {
  plan: LayerPlan;
  localRef: string;
  work: string;
  progress: ProgressSink;
  baseLayers: number;
  configFor: (diffId: string) => Promise<Buffer>;
  outcome: Pick<SnapshotOutcome, 'capture' | 'excludedMounts'> & { timings: SnapshotOutcome['timings'] };
}): Promise<SnapshotOutcome> {
  const made = [input.localRef];
  try {
    const loaded = await loadLocally(ctx.docker, input.plan, input.configFor, input.baseLayers, [input.localRef]);
    const flat = await flattenCommitIfDeep({
      docker: ctx.docker, imageId: loaded, tag: input.localRef, maxLayers: ctx.settings.maxLayers, workDir: join(input.work, 'flatten'), log: ctx.log,
      onFlatten: () => input.progress({ phase: 'flatten', bytes_done: 0, bytes_total: null }),
    });
    const timings = { ...input.outcome.timings, flatten_ms: flat.report === null ? null : roundMs(flat.report.ms) };
    const inspected = await ctx.docker.getImage(flat.imageId).inspect();
    const pushed = await ctx.push(input.localRef, input.progress);
    const result = { ...input.outcome, layers: flat.layers, flattened: flat.report !== null, sizeBytes: inspected.Size, clipIndexRef: null };
    if (pushed === undefined) return { ...result, imageRef: input.localRef, digest: inspected.Id, timings };
    made.push(pushed.imageRef);
    return { ...result, imageRef: pushed.imageRef, digest: pushed.digest, timings: { ...timings, push_ms: roundMs(pushed.pushMs) } };
  } catch (err) {
    await ctx.removeImages(made);
    throw err;
  }
}

/**
 * Stream the layer of `plan` into the local engine (`docker load` of that layer alone) with the
 * config `configFor(diff_id)`; returns the image id. `expectedDiffId`: the layer pushed from the
 * same files, which this one must equal.
 */
async function loadLocally(
  docker: Docker,
  plan: LayerPlan,
  configFor: (diffId: string) => Promise<Buffer>,
  baseLayers: number,
  refs: string[],
  expectedDiffId?: string,
): Promise<string> {
  const load = new LocalLoad(docker, plan.size);
  const diffId = await load.writeLayer(layerStream(plan));
  if (expectedDiffId !== undefined && diffId !== expectedDiffId) {
    load.abort();
    throw new CryoError('INTERNAL', `the stored copy changed: layer ${diffId} for the local engine, ${expectedDiffId} pushed`);
  }
  const config = await configFor(diffId);
  await load.finish(config, baseLayers, refs);
  return sha256(config);
}
