/**
 * mountClip: serve a clip index read-only at a mountpoint with FUSE, file contents fetched lazily
 * from the registry (through the host-wide span cache) on first read.
 *
 * Mount options, and why:
 * - `ro`; `allow_other` + `default_permissions`: the sandbox's users (not only the mounting root)
 *   reach the files, and the kernel checks mode bits and owners exactly as the index says;
 * - `use_ino`: st_ino from the index, so hard links share one inode number;
 * - `suid,dev`: setuid bits and device nodes mean what they say (libfuse mounts nosuid,nodev by default);
 * - long entry/attr/negative timeouts and `kernel_cache` (every open keeps the page cache; no
 *   direct_io): the index and the contents are immutable; the kernel's readahead is raised too;
 * - `subtype=clip`: the mount shows as `fuse.clip` in /proc/mounts, so stale ones can be found.
 * Names cross the addon as bytes (see native.ts): a name that is not UTF-8 lists, opens and
 * reads exactly as Docker shows it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { AccessPack, type PackStats } from '../reader/access-pack';
import { AccessRecorder, type AccessRecord } from '../reader/access-record';
import { ClipReader, type PrefetchResult } from '../reader/clip-reader';
import type { FetchSchedulerOptions, SchedulerStats } from '../reader/fetch-scheduler';
import { ClipError } from '../errors';
import { FallbackLayerSource, type LayerSource } from '../source';
import { ZoneCacheCold, ZoneCacheSource, zoneCacheClient } from '../zone-cache';
import { ClipFilesystem, Errno, METADATA_TTL_SECS, type ClipFsLog, type ClipFsStats } from './clip-fs';
import { cleanupStaleMount, isStaleMount, mountsAt, unmountFuse } from './mounts';
import { loadFuse, type FuseInstance, type FuseSignal } from './native';
import { isRegistryError, registryAccess, type RegistryAccessSettings } from '@cryo/registry-auth';
import { RefreshingRegistrySource } from './registry-access';
import type { FetchStats } from '../reader/span-store';

export interface MountClipOptions {
  /** host-wide span cache directory shared by all mounts (recommended) */
  cacheDir?: string;
  /** bytes of spans kept in memory (default 64 MiB) */
  memoryBytes?: number;
  /** how to reach the registry named in the index; credentials are resolved now, and again when rejected */
  registry?: RegistryAccessSettings;
  /** serve layers from here instead of the registry (tests, a content cache) */
  source?: LayerSource;
  /** libfuse debug output on stderr */
  debug?: boolean;
  /** readahead and friends (defaults here: files of 4 MiB and more are fetched whole on first read) */
  fetch?: FetchSchedulerOptions;
  /** fetch what this record says, in its order, from the moment the index is open */
  prefetch?: AccessRecord;
  /** note every read served, for `accessRecord()` (default true) */
  record?: boolean;
  /** fetch the rest of the image into the disk cache, at most this many compressed bytes/s, once mounted (0 or absent: off) */
  backgroundFillBytesPerSec?: number;
  /** the background fill stops after this many compressed bytes (absent: the whole image) */
  backgroundFillMaxBytes?: number;
  /** the kernel's readahead for this mount, KiB (default 1024; the kernel's own default for FUSE is 128) */
  readAheadKb?: number;
  log?: ClipFsLog;
}

export interface ClipMount {
  readonly mountpoint: string;
  readonly reader: ClipReader;
  /** handler counters and registry fetch counters */
  stats(): { fs: ClipFsStats; fetch: FetchStats };
  /** how long mounting took, by step (ms): load the index, set up the registry source, FUSE mount */
  readonly startup: { index_ms: number; source_ms: number; fuse_ms: number };
  /** the prefetch of `opts.prefetch`, started before the FUSE mount */
  readonly prefetched: Promise<PrefetchResult> | undefined;
  /** what programs read through this mount so far (undefined with `record: false`) */
  accessRecord(): AccessRecord | undefined;
  /** performance.now() when recording began (the record's `first_ms` count from here), undefined with `record: false` */
  readonly recordingStartedAt: number | undefined;
  /** requests by reason, the prefetch queue and the background fill */
  fetchStats(): SchedulerStats;
  /** the access pack that came with `opts.prefetch`, if any: streamed, served, missed */
  packStats(): PackStats | undefined;
  /** unmount (lazily if busy) and close the registry connections; idempotent */
  unmount(): Promise<void>;
}

export function fuseMountOptions(debug = false): string {
  const ttl = METADATA_TTL_SECS;
  const options = [
    'fsname=cryo-clip', 'subtype=clip', 'ro', 'allow_other', 'default_permissions', 'use_ino', 'suid', 'dev', 'kernel_cache',
    `entry_timeout=${ttl}`, `attr_timeout=${ttl}`, `negative_timeout=${ttl}`,
  ];
  if (debug) options.push('debug');
  return `-o${options.join(',')}`;
}

/**
 * fuse-native 2.2.6 answers getxattr with the value's length even when the kernel's buffer is
 * smaller (libfuse then reads past its buffer), and listxattr likewise: answer ERANGE instead,
 * as xattr(7) says.
 */
function getxattrHandler(this: FuseInstance, signal: FuseSignal, path: string, name: string, valueBuf: Buffer, position: number): void {
  const op = this.ops.getxattr;
  if (op === undefined) {
    signal(-Errno.ENODATA, valueBuf.buffer);
    return;
  }
  op(path, name, position, (code, value) => {
    if (code < 0 || value === undefined) return signal(code < 0 ? code : -Errno.ENODATA, valueBuf.buffer);
    if (valueBuf.length === 0) return signal(value.length, valueBuf.buffer);
    if (value.length > valueBuf.length) return signal(-Errno.ERANGE, valueBuf.buffer);
    value.copy(valueBuf);
    return signal(value.length, valueBuf.buffer);
  });
}

function listxattrHandler(this: FuseInstance, signal: FuseSignal, path: string, listBuf: Buffer): void {
  const op = this.ops.listxattr;
  if (op === undefined) {
    signal(0, listBuf.buffer);
    return;
  }
  op(path, (code, names) => {
    if (code < 0 || names === undefined) return signal(code < 0 ? code : 0, listBuf.buffer);
    const packed = Buffer.concat(names.map((n) => Buffer.from(`${n}\0`, 'latin1'))); // byte strings
    if (listBuf.length === 0) return signal(packed.length, listBuf.buffer);
    if (packed.length > listBuf.length) return signal(-Errno.ERANGE, listBuf.buffer);
    packed.copy(listBuf);
    return signal(packed.length, listBuf.buffer);
  });
}

function fuseCall(fn: (cb: (err: Error | null) => void) => void): Promise<void> {
  return new Promise((resolvePromise, reject) => fn((err) => (err ? reject(err) : resolvePromise())));
}

/**
 * Where the mount reads layers: the registry named in the index, behind the zone cache when one is
 * configured for that registry (the zone cache mirrors the snapshot registry only). A zone cache
 * that is down, cold or serving bad bytes costs a fallback, never a failed read; each kind of
 * trouble is logged once a minute at most.
 */
async function layerSource(reader: ClipReader, opts: MountClipOptions): Promise<{ source: LayerSource; close: () => Promise<void> }> {
  if (opts.source !== undefined) return { source: opts.source, close: async () => undefined };
  const image = reader.index.image;
  const settings = opts.registry ?? {};
  const registry = await RefreshingRegistrySource.create(image.registry, image.repository, {
    resolve: () => registryAccess(image.registry, settings),
    log: (message, fields) => opts.log?.('warn', message, fields),
  });
  const zone = settings.zone_cache;
  if (zone === undefined || settings.snapshot_registry?.url !== image.registry) return { source: registry, close: () => registry.close() };
  const zoneSource = new ZoneCacheSource(zoneCacheClient(zone, 'cryo-clip-mount'), image.repository);
  const lastLogged = new Map<string, number>();
  const source = new FallbackLayerSource([zoneSource, registry], (_tier, err) => {
    const kind = err instanceof ZoneCacheCold ? 'cold' : err instanceof ClipError ? err.code : isRegistryError(err) ? err.code : 'error';
    const now = Date.now();
    if (now - (lastLogged.get(kind) ?? 0) < 60_000) return;
    lastLogged.set(kind, now);
    const message = err instanceof Error ? err.message : String(err);
    opts.log?.('warn', `zone cache ${zone.url}: ${kind === 'cold' ? 'not warm yet' : 'read failed'}; read from the registry instead`, { zone_cache: zone.url, kind, err: message });
  });
  return { source, close: async () => void (await Promise.allSettled([zoneSource.close(), registry.close()])) };
}

/** `major:minor` of the file system mounted at `mnt` (the last mount there), from /proc/self/mountinfo. */
function mountDevice(mnt: string): string | undefined {
  let device: string | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    const point = fields[4]?.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
    if (point === mnt) device = fields[2];
  }
  return device;
}

/**
 * The kernel reads ahead at most 128 KiB on a FUSE mount unless told otherwise (its backing
 * device info, /sys/class/bdi/0:N, of this mount alone). The files are immutable, so more is
 * safe; each kernel request is still 128 KiB (libfuse 2), a larger window only puts more of them
 * in flight at once. Best effort: a kernel without the knob keeps its default.
 */
function raiseReadahead(mnt: string, kb: number, log: ClipFsLog | undefined): void {
  try {
    // Not stat(mnt): that would ask this very process, whose JavaScript thread would be waiting.
    const device = mountDevice(mnt);
    if (device === undefined) throw new Error(`${mnt} is not in /proc/self/mountinfo`);
    writeFileSync(`/sys/class/bdi/${device}/read_ahead_kb`, String(kb));
  } catch (err) {
    log?.('warn', 'cannot raise the kernel readahead of the mount', { err: err instanceof Error ? err.message : String(err) });
  }
}

/**
 * Mount `indexPath` at `mountpoint` (created if missing). A stale mount left there by a killed
 * process is cleaned up first; a live one is an error.
 */
export async function mountClip(indexPath: string, mountpoint: string, opts: MountClipOptions = {}): Promise<ClipMount> {
  const Fuse = loadFuse();
  const mnt = resolve(mountpoint);
  // The addon passes strings as bytes (one char per byte), the mountpoint included, while
  // fuse-native's JavaScript also hands it to fs calls as text: only ASCII means the same to both.
  if (!/^[\x20-\x7e]+$/.test(mnt)) throw new Error(`mountpoint ${JSON.stringify(mnt)} must be printable ASCII`);
  if (mountsAt(mnt).length > 0) {
    if (await isStaleMount(mnt)) await cleanupStaleMount(mnt);
    else throw new Error(`${mnt} is already mounted`);
  }
  await mkdir(mnt, { recursive: true });

  const t0 = performance.now();
  const probe = await ClipReader.open(indexPath);
  const t1 = performance.now();
  const { source, close } = await layerSource(probe, opts);
  const t2 = performance.now();
  const log = opts.log;
  const reader = new ClipReader(probe.index, {
    source,
    ...(opts.cacheDir === undefined ? {} : { cacheDir: opts.cacheDir }),
    ...(opts.memoryBytes === undefined ? {} : { memoryBytes: opts.memoryBytes }),
    fetch: {
      largeFileBytes: 4 * 1024 * 1024,
      backgroundBytesPerSec: opts.backgroundFillBytesPerSec ?? 0,
      ...(opts.backgroundFillMaxBytes === undefined ? {} : { backgroundMaxBytes: opts.backgroundFillMaxBytes }),
      ...(log === undefined ? {} : { log }),
      ...opts.fetch,
    },
  });
  // The prefetch starts now: by the time the mount is up and a program runs, its first files are
  // on their way. A record with a pack streams the pack; only what it does not hold goes by span.
  // The pack's stream starts once the FUSE mount is up (below): its request and body (the first
  // registry request of this process, gunzip, a sha256 per entry) would share this one thread
  // with the mount, and nothing can read through the mount before it is up anyway.
  const packRef = opts.prefetch?.pack;
  const pack = packRef === undefined ? undefined : new AccessPack(packRef);
  if (pack !== undefined) reader.usePack(pack);
  const prefetched = opts.prefetch === undefined ? undefined : reader.prefetchRecord(opts.prefetch);
  prefetched?.catch(() => undefined);
  const recorder = opts.record === false ? undefined : new AccessRecorder(probe.index.image.manifestDigest);
  const fs = new ClipFilesystem(reader, { ...(opts.log === undefined ? {} : { log: opts.log }), ...(recorder === undefined ? {} : { recorder }) });
  // Reads may wait on the registry (retries included); metadata never does.
  const fuse = new Fuse(mnt, fs.operations(), { timeout: { default: 30_000, read: 120_000 } });
  const debug = opts.debug === true;
  Object.assign(fuse, {
    _fuseOptions: () => fuseMountOptions(debug),
    _op_getxattr: getxattrHandler,
    _op_listxattr: listxattrHandler,
  });
  try {
    await fuseCall((cb) => fuse.mount(cb));
  } catch (err) {
    reader.stopFetching();
    await close();
    throw new Error(`cannot mount clip index ${indexPath} at ${mnt}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const t3 = performance.now();
  if (pack !== undefined && packRef !== undefined) void pack.stream(() => source.openStream(packRef.digest), log);
  raiseReadahead(mnt, opts.readAheadKb ?? 1024, log);
  reader.startBackgroundFill();

  let unmounted: Promise<void> | undefined;
  return {
    mountpoint: mnt,
    reader,
    startup: { index_ms: Math.round(t1 - t0), source_ms: Math.round(t2 - t1), fuse_ms: Math.round(t3 - t2) },
    prefetched,
    accessRecord: () => recorder?.record(),
    recordingStartedAt: recorder?.startedAt,
    fetchStats: () => reader.fetchStats,
    packStats: () => (pack === undefined ? undefined : { ...pack.stats }),
    stats: () => ({ fs: { ...fs.stats }, fetch: reader.stats }),
    unmount: () => {
      unmounted ??= (async () => {
        reader.stopFetching();
        try {
          await fuseCall((cb) => fuse.unmount(cb));
        } catch {
          // fuse-native's unmount runs `fusermount -uz` first; fall back to ours.
          await unmountFuse(mnt);
        }
        await close();
      })();
      return unmounted;
    },
  };
}
