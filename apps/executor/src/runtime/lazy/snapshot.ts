/**
 * A lazy sandbox's snapshot, without Docker: pause (freezer) -> tar the overlay's upper dir ->
 * resume (always); the tar becomes one gzip'd layer on top of the base image's layers, pushed with
 * its config and manifest: an ordinary image for eager restore and `docker pull`.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ClipIndex, decodeAccessRecord, type AccessRecord } from '@cryo/clip';
import { parseImageReference, type RegistryClient } from '@cryo/oci';
import type { SnapshotRegistry } from '@cryo/registry-auth';
import { CryoError, accessRecordTag, containerName, registrySnapshotRef } from '@cryo/snapshot';
import { snapshotLabels, type ProgressSink, type SnapshotOutcome, type SnapshotSpec } from '../driver';
import { pauseWithResume, roundMs } from '../pause-window';
import { readRecord, type LazySandboxLayout, type LazySandboxRecord } from './layout';
import { errorText, type LazySandboxes } from './lifecycle';
import { mergeEnv } from './runtime-spec';
import { publishSnapshotImage } from './snapshot-image';
import { captureUpperDir, writeLayer } from './upper-layer';

export interface LazySnapshotContext {
  sandboxes: LazySandboxes;
  registry: SnapshotRegistry;
  /** a client for a registry host, with that host's credentials */
  client: (host: string) => Promise<RegistryClient>;
  /** told when the sandbox freezes and thaws (exec waits out the freeze rather than fail) */
  onFreeze: (thawed: Promise<void>) => void;
  /** a snapshot with more layers is flattened (flatten-image.ts) */
  maxLayers: number;
  /** push an access record as `accessRef`, its pack taken from the repository `from` (ClipArtifacts.publishAccess) */
  publishAccess: (accessRef: string, imageDigest: string | null, record: AccessRecord, pack?: { from: string }) => Promise<{ pack: boolean }>;
  log: Logger;
}

/**
 * The access record a snapshot of this sandbox carries: the one it prefetched, else the one it
 * recorded and pushed (either with its pack, which lives beside the sandbox's image record), else
 * what its program has read so far (its first exec may not have ended). Undefined when there is none.
 */
async function recordToCarry(ctx: LazySnapshotContext, record: LazySandboxRecord, layout: LazySandboxLayout): Promise<{ record: AccessRecord; packFrom?: string } | undefined> {
  for (const file of [record.access?.prefetched, record.access?.recorded]) {
    if (file === null || file === undefined || !existsSync(file)) continue;
    const carried = decodeAccessRecord(await readFile(file));
    const ref = record.access?.ref;
    return { record: carried, ...(ref === undefined ? {} : { packFrom: parseImageReference(ref).repository }) };
  }
  const live = await ctx.sandboxes.readAccess(layout);
  return live?.record === null || live?.record === undefined || live.record.files.length === 0 ? undefined : { record: live.record };
}

export async function snapshotLazySandbox(ctx: LazySnapshotContext, spec: SnapshotSpec, progress: ProgressSink): Promise<SnapshotOutcome> {
  const { sandboxes, registry } = ctx;
  const layout = sandboxes.layout(spec.sandboxId);
  const record = readRecord(layout);
  const containerId = containerName(spec.sandboxId);
  const state = await sandboxes.runc.state(containerId);
  if (record === undefined || state === undefined) throw new CryoError('NOT_FOUND', `sandbox ${spec.sandboxId} has no lazy container on this executor`);
  if (state.status === 'paused') throw new CryoError('CONFLICT', `sandbox ${spec.sandboxId} is already paused`);
  if (state.status !== 'running') throw new CryoError('CONFLICT', `sandbox ${spec.sandboxId} is not running (container is ${state.status})`);

  const work = join(layout.dir, `snapshot-${spec.snapshotId}`);
  await mkdir(work, { recursive: true });
  const rawTar = join(work, 'upper.tar');
  try {
    progress({ phase: 'pause', bytes_done: 0, bytes_total: null });
    let thaw = (): void => undefined;
    ctx.onFreeze(new Promise<void>((resolve) => { thaw = resolve; }));
    let paused;
    try {
      paused = await pauseWithResume({ pause: () => sandboxes.runc.pause(containerId), resume: () => sandboxes.resume(containerId) }, async () => {
        progress({ phase: 'commit', bytes_done: 0, bytes_total: null });
        const captureStart = performance.now();
        await captureUpperDir(layout.upper, rawTar);
        return performance.now() - captureStart;
      }, (err) => ctx.log.error({ container_id: containerId, err: errorText(err) }, 'resume failed; recover() will retry'));
    } finally {
      thaw();
    }
    const layerStart = performance.now();
    const layer = await writeLayer(rawTar, join(work, 'layer.tar.gz'));
    await rm(rawTar, { force: true });
    const commitMs = paused.value + (performance.now() - layerStart);

    progress({ phase: 'push', bytes_done: 0, bytes_total: layer.size });
    const pushStart = performance.now();
    const image = (await ClipIndex.load(record.index_path)).image.config;
    const imageRef = registrySnapshotRef(registry, spec.tag);
    const target = await ctx.client(registry.url);
    const baseClient = record.base.host === registry.url ? target : await ctx.client(record.base.host);
    try {
      const published = await publishSnapshotImage({
        target: { client: target, repository: registry.repository, tag: spec.tag },
        base: { client: baseClient, host: record.base.host, repository: record.base.repository, manifestDigest: record.base.manifest_digest },
        layer,
        labels: snapshotLabels(spec),
        createdBy: `cryo snapshot ${spec.snapshotId} of sandbox ${spec.sandboxId}`,
        env: mergeEnv(image.env, record.env),
        cmd: record.command ?? image.cmd,
        flatten: { maxLayers: ctx.maxLayers, workDir: join(work, 'flatten') },
      });
      progress({ phase: 'pushed', bytes_done: layer.size, bytes_total: layer.size });
      // The new image starts like this one: it gets this sandbox's access record, so its first
      // lazy start prefetches too. Best effort: the snapshot stands without it.
      const accessRef = registrySnapshotRef(registry, accessRecordTag(spec.tag));
      try {
        const carried = await recordToCarry(ctx, record, layout);
        if (carried !== undefined) {
          // A flattened image has none of the layers the pack's entries are keyed by (diff_id +
          // offset): its restores would stream the pack and serve nothing from it. The record's
          // paths and ranges still hold, so it goes without the pack.
          const packFrom = published.flattened === null ? carried.packFrom : undefined;
          const { pack } = await ctx.publishAccess(accessRef, published.digest, carried.record, packFrom === undefined ? undefined : { from: packFrom });
          ctx.log.info({ sandbox_id: spec.sandboxId, snapshot_id: spec.snapshotId, access_ref: accessRef, files: carried.record.files.length, pack }, 'access record carried to the snapshot');
        }
      } catch (err) {
        ctx.log.warn({ sandbox_id: spec.sandboxId, snapshot_id: spec.snapshotId, access_ref: accessRef, err: errorText(err) }, 'cannot carry the access record to the snapshot');
      }
      ctx.log.info({
        sandbox_id: spec.sandboxId, snapshot_id: spec.snapshotId, image_ref: imageRef, digest: published.digest,
        layer_bytes: layer.size, layer_entries: layer.entries, whiteouts: layer.whiteouts, opaque_dirs: layer.opaqueDirs,
        layers_mounted: published.layersMounted, layers_copied: published.layersCopied, layers: published.layers,
        ...(published.flattened === null ? {} : { flattened: published.flattened }),
      }, 'lazy snapshot pushed');
      const flattenMs = published.flattened?.ms ?? null;
      return {
        imageRef,
        digest: published.digest,
        sizeBytes: published.sizeBytes,
        layers: published.layers,
        flattened: published.flattened !== null,
        timings: {
          pause_ms: roundMs(paused.pauseMs), commit_ms: roundMs(commitMs), precopy_ms: null,
          push_ms: roundMs(performance.now() - pushStart - (flattenMs ?? 0)), index_ms: null, flatten_ms: flattenMs === null ? null : roundMs(flattenMs),
        },
      };
    } finally {
      await target.close();
      if (baseClient !== target) await baseClient.close();
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
