/**
 * A Docker sandbox's snapshot by `docker commit` (the fallback where pre-copy cannot run: a
 * storage driver other than overlay2, an engine on another machine), in phases:
 *   1. pause     pause; `docker commit` (no second pause); the volumes cryo made, read through
 *                the engine's archive API; unpause: the pause window is the whole commit
 *   2. volumes   the volumes' content as one more layer at their paths (opaque), loaded into the
 *                local engine on top of the commit (`docker load` of that layer alone)
 *   3. flatten   when the image has more layers than snapshots.max_layers: squashed into one
 *                (../../snapshot/flatten-image.ts), under the same tag
 *   4. push      `docker push` through the engine, every progress line scanned
 * The clip index follows as a build_index operation.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { TarParser, type TarEntry } from '@cryo/clip';
import { localSnapshotRef, type SnapshotCapture } from '@cryo/snapshot';
import { snapshotLabels, type ProgressSink, type SnapshotOutcome, type SnapshotSpec } from '../driver';
import { layerEntriesFor } from '../lazy/upper-layer';
import { pauseWithResume, roundMs, type PauseControl } from '../pause-window';
import { baseConfigHere } from './base-image';
import { LocalLoad, commitConfig } from './image-publish';
import { layerStream, measure, type LayerPlan, type PlannedEntry } from './layer-from-upper';
import { layerPathOf, planMounts, type CapturedVolume } from './mounts';
import { flattenCommitIfDeep } from '../../snapshot/flatten-image';

export interface CommitContext {
  docker: Docker;
  workDir: string;
  recordDir: string;
  log: Logger;
  /** a snapshot image with more layers than this is flattened (snapshots.max_layers) */
  maxLayers: number;
  /** why the commit method was chosen (the result's `capture.method_reason`) */
  methodReason: string;
  holdPausedMs?: number;
  /** tag the local image for the registry and push it with the engine; returns the manifest digest */
  push: (localRef: string, progress: ProgressSink) => Promise<{ imageRef: string; digest: string; pushMs: number } | undefined>;
  /** remove image refs (a failed snapshot leaves nothing) */
  removeImages: (refs: string[]) => Promise<unknown>;
}

/** `repository:tag` for Docker's commit and tag calls. */
export type RepoAndTag = (ref: string) => { repo: string; tag: string };

async function readEntries(file: string): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const parser = new TarParser((e) => entries.push(e));
  const handle = await open(file, 'r');
  try {
    for await (const chunk of handle.createReadStream({ highWaterMark: 1 << 20 })) parser.push(chunk as Buffer);
  } finally {
    await handle.close();
  }
  parser.end();
  return entries;
}

/**
 * The layer of volume archives (the engine's archive API: names start with the volume's base
 * name, the volume's own directory first): each volume at its path, opaque, data read from the
 * archive files.
 */
export async function volumeLayer(archives: Array<{ file: string; volume: CapturedVolume }>): Promise<LayerPlan> {
  const planned: PlannedEntry[] = [];
  for (const { file, volume } of archives) {
    const at = layerPathOf(volume.destination);
    const top = at.slice(at.lastIndexOf('/') + 1);
    for (const entry of await readEntries(file)) {
      const name = entry.name.replace(/\/+$/, '');
      if (name !== top && !name.startsWith(`${top}/`)) continue;
      const renamed = `${at}${name.slice(top.length)}`;
      const header = { ...entry, name: renamed, linkname: entry.type === 'hardlink' ? `${at}${entry.linkname.replace(/^\/*/, '').slice(top.length)}` : entry.linkname };
      if (name === top) header.xattrs = new Map([...entry.xattrs, ['trusted.overlay.opaque', Buffer.from('y')]]);
      for (const out of layerEntriesFor(header, { skip: () => false })) {
        planned.push(out.type === 'file' && out.size > 0 && entry.type === 'file' ? { ...out, content: file, contentOffset: entry.dataOffset } : out);
      }
    }
  }
  return { ...measure(planned), socketsSkipped: [] };
}

export async function commitSnapshot(
  ctx: CommitContext,
  repoAndTag: RepoAndTag,
  spec: SnapshotSpec,
  info: Docker.ContainerInspectInfo,
  control: PauseControl & { onStuck: (err: unknown) => void },
  progress: ProgressSink,
): Promise<SnapshotOutcome> {
  const container = ctx.docker.getContainer(info.Id);
  const localRef = localSnapshotRef(spec.tag);
  const image = await ctx.docker.getImage(info.Image).inspect();
  const mounts = planMounts(info, image.Config.Volumes);
  // A volume inside another captured volume comes with its parent's archive.
  const volumes = mounts.volumes.filter((v) => !mounts.volumes.some((p) => p !== v && v.destination.startsWith(`${p.destination}/`)));
  const work = join(ctx.workDir, spec.snapshotId);
  await mkdir(work, { recursive: true });
  const made: string[] = [];
  try {
    // 1. pause: commit, and read the volumes
    progress({ phase: 'pause', bytes_done: 0, bytes_total: null });
    const paused = await pauseWithResume(control, async () => {
      if (ctx.holdPausedMs !== undefined && ctx.holdPausedMs > 0) await sleep(ctx.holdPausedMs);
      progress({ phase: 'commit', bytes_done: 0, bytes_total: null });
      const commitStart = performance.now();
      const committed = await container.commit({
        ...(volumes.length === 0 ? repoAndTag(localRef) : {}),
        pause: false, // already paused: one pause window, measured here
        comment: `cryo snapshot ${spec.snapshotId} of sandbox ${spec.sandboxId}`,
        changes: Object.entries(snapshotLabels(spec)).map(([key, value]) => `LABEL ${key}=${JSON.stringify(value)}`),
      }) as { Id: string };
      made.push(volumes.length === 0 ? localRef : committed.Id);
      const archives: Array<{ file: string; volume: CapturedVolume }> = [];
      for (const [i, volume] of volumes.entries()) {
        const file = join(work, `volume-${i}.tar`);
        await pipeline(await container.getArchive({ path: volume.destination }), createWriteStream(file));
        archives.push({ file, volume });
      }
      return { imageId: committed.Id, archives, commitMs: performance.now() - commitStart };
    }, control.onStuck);
    const { archives, commitMs } = paused.value;
    let imageId = paused.value.imageId;

    // 2. volumes: one more layer, loaded on top of the commit
    if (archives.length > 0) {
      const plan = await volumeLayer(archives);
      const base = await baseConfigHere({ docker: ctx.docker, recordDir: ctx.recordDir, workDir: work }, info.Image);
      const committedLayers = (await ctx.docker.getImage(imageId).inspect()).RootFS.Layers ?? [];
      const commitDiffId = committedLayers[committedLayers.length - 1];
      const load = new LocalLoad(ctx.docker, plan.size);
      const diffId = await load.writeLayer(layerStream(plan));
      const comment = `cryo snapshot ${spec.snapshotId} of sandbox ${spec.sandboxId}`;
      const finalConfig = commitConfig(base.config, info, {
        labels: snapshotLabels(spec),
        layers: [
          { diffId: commitDiffId ?? '', comment },
          { diffId, createdBy: 'cryo: volumes', comment: `volumes ${volumes.map((v) => v.destination).join(', ')} (${comment})` },
        ],
      });
      await load.finish(finalConfig, committedLayers.length, [localRef]);
      made.push(localRef);
      await ctx.docker.getImage(imageId).remove().catch(() => undefined); // the commit alone is not needed any more
      imageId = `sha256:${createHash('sha256').update(finalConfig).digest('hex')}`;
    }

    // 3. flatten, near the overlay's layer limit: the chain goes on from a flat image
    const flat = await flattenCommitIfDeep({
      docker: ctx.docker, imageId, tag: localRef, maxLayers: ctx.maxLayers, workDir: join(work, 'flatten'), log: ctx.log,
      onFlatten: () => progress({ phase: 'flatten', bytes_done: 0, bytes_total: null }),
    });
    imageId = flat.imageId;
    const capture: SnapshotCapture = { method: 'commit', method_reason: ctx.methodReason, passes: [], bytes_pushed: null, volumes: volumes.map((v) => v.destination) };
    const timings = {
      pause_ms: roundMs(paused.pauseMs), precopy_ms: null, commit_ms: roundMs(commitMs), push_ms: null, index_ms: null,
      flatten_ms: flat.report === null ? null : roundMs(flat.report.ms),
    };
    const inspected = await ctx.docker.getImage(imageId).inspect();
    const layers = { layers: flat.layers, flattened: flat.report !== null };

    // 4. push
    const pushed = await ctx.push(localRef, progress);
    if (pushed === undefined) {
      return { imageRef: localRef, digest: inspected.Id, sizeBytes: inspected.Size, ...layers, timings, capture, excludedMounts: mounts.excluded };
    }
    made.push(pushed.imageRef);
    return {
      imageRef: pushed.imageRef, digest: pushed.digest, sizeBytes: inspected.Size, ...layers,
      timings: { ...timings, push_ms: roundMs(pushed.pushMs) }, capture, excludedMounts: mounts.excluded,
    };
  } catch (err) {
    // Nothing half-made stays behind: the sandbox keeps running, the images go.
    await ctx.removeImages(made);
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
