/**
 * The executor's Prometheus metrics, with prom-client, in the shape of the server's
 * (apps/server/src/services/metrics.ts): one Registry per executor holding Node's default process
 * metrics and the families below; the executor records through the methods of `ExecutorMetrics`,
 * never through prom-client directly. Names and meaning: docs/metrics.md.
 *
 * Lazy mounts run in processes of their own (libs/clip mount-main); their range GETs, inflate
 * time and span cache reads reach these counters through the mount status files they rewrite
 * every 2 s and at unmount (`fetch`), turned into increments by @cryo/clip's FetchStatsDeltas.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { FetchStatsDeltas, type FetchStats } from '@cryo/clip';
import { timingPhases, type ClipCacheStats, type OperationKind, type RestoreMode, type Timings } from '@cryo/snapshot';

/** From a few ms (a pause) to ten minutes (a push of a large image over a slow link). */
const SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** clip_first_exec_ms: the Clip plan's unit. */
const MS_BUCKETS = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000];

/** Where the bytes of a read came from (docs/metrics.md, "cache tiers"). */
export type CacheTier = 'memory' | 'disk' | 'image';

export class ExecutorMetrics {
  readonly registry = new Registry();
  private readonly registers = [this.registry];

  private readonly operations = this.counter('cryo_executor_operations_total', 'Operations this executor ran, by kind and outcome (done, failed).', ['kind', 'outcome']);
  private readonly operationSeconds = this.histogram('cryo_executor_operation_seconds', 'How long this executor took to run an operation, by kind and outcome.', ['kind', 'outcome']);
  private readonly snapshotPhases = this.histogram(
    'cryo_snapshot_phase_seconds',
    'Snapshot phases measured by this executor: pause (the sandbox frozen), commit or precopy, flatten, push, index (clip index build and push), and any other phase the snapshot reports.',
    ['phase'],
  );
  private readonly restoreRunning = this.histogram(
    'cryo_executor_restore_to_running_seconds',
    'From the start of a restore on this executor (create or rollback operation) to its container running, by mode (eager, lazy).',
    ['mode'],
  );
  private readonly restoreFirstExec = this.histogram(
    'cryo_executor_restore_to_first_exec_seconds',
    'From the start of a restore on this executor to the end of the restored sandbox\'s first exec, by mode.',
    ['mode'],
  );
  private readonly clipFirstExec = new Histogram({
    name: 'clip_first_exec_ms',
    help: 'Lazy restores: milliseconds from the start of the restore on this executor to the end of the sandbox\'s first exec.',
    buckets: MS_BUCKETS,
    registers: this.registers,
  });
  private readonly indexBuild = this.histogram('clip_index_build_seconds', 'Clip index builds by this executor (reading the image\'s layers, indexing them, pushing the index).', []);
  private readonly indexBytes = this.counter('clip_index_bytes_total', 'Bytes of the clip indexes this executor built.', []);
  private readonly rangeGetBytes = this.counter('clip_range_get_bytes_total', 'Compressed bytes lazy mounts on this host received from registries (range GETs, and whole-blob reads of zstd layers).', []);
  private readonly rangeGets = this.counter('clip_range_get_count', 'Requests lazy mounts on this host made to registries for layer bytes.', []);
  private readonly inflateSeconds = this.counter('clip_inflate_seconds_total', 'Seconds lazy mounts on this host spent inflating layer bytes: elapsed time of each inflate (gzip on the thread pool, queueing included; zstd on the main thread); concurrent inflates add up.', []);
  private readonly tierFallbacks = this.counter('clip_tier_fallbacks_total', 'Reads of layer bytes a tier failed (zone cache unreachable, cold or serving bytes that fail their digests) and the next tier (the registry) served.', []);
  private readonly spansFetched = this.counter('clip_spans_fetched_total', 'Spans lazy mounts inflated and verified from registry bytes.', []);
  private readonly cacheHits = this.counter('cryo_cache_hits_total', 'Reads a cache tier served: memory (a mount\'s spans), disk (the host span cache), image (an eager restore whose image the engine had).', ['tier']);
  private readonly cacheMisses = this.counter('cryo_cache_misses_total', 'Reads no cache had, which went to the registry: disk (spans fetched by range GET), image (eager restores that pulled).', ['tier']);
  private readonly cacheHitBytes = this.counter('cryo_cache_hit_bytes_total', 'Bytes served by cache hits, by tier (uncompressed span bytes; image: the image size).', ['tier']);
  private readonly cacheMissBytes = this.counter('cryo_cache_miss_bytes_total', 'Bytes fetched from the registry on a miss, by tier (disk: compressed bytes of range GETs; image: bytes pulled).', ['tier']);
  private readonly cacheEvictions = this.counter('cryo_cache_evictions_total', 'Entries a cache tier evicted to stay within its budget: disk (spans of the host span cache, clip.cache.max_bytes).', ['tier']);
  private readonly cacheEvictedBytes = this.counter('cryo_cache_evicted_bytes_total', 'Bytes a cache tier evicted to stay within its budget, by tier.', ['tier']);
  /** The span cache's cumulative eviction counts at the last refresh (the service counts since its start). */
  private spanCacheEvicted = { spans: 0, bytes: 0 };
  private readonly cacheSize = new Gauge({
    name: 'cryo_cache_size_bytes',
    help: 'Bytes a cache tier holds on this host: disk (the span cache), image (snapshot images in the engine).',
    labelNames: ['tier'],
    registers: this.registers,
  });
  private readonly heartbeatAge = new Gauge({
    name: 'cryo_heartbeat_age_seconds',
    help: 'Seconds since this executor\'s last heartbeat the server accepted (-1 before the first).',
    registers: this.registers,
  });
  private readonly sandboxes = new Gauge({
    name: 'cryo_executor_sandboxes',
    help: 'Sandboxes this executor observed at its last heartbeat, by runtime and state.',
    labelNames: ['runtime', 'state'],
    registers: this.registers,
  });

  private readonly mountDeltas = new FetchStatsDeltas();
  private lastHeartbeatAt: number | undefined;
  /** Restores whose first exec has not ended yet: sandbox id -> mode and start (performance.now()). */
  private readonly awaitingFirstExec = new Map<string, { mode: RestoreMode; startedAt: number }>();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    this.heartbeatAge.set(-1);
  }

  private counter(name: string, help: string, labelNames: string[]): Counter {
    return new Counter({ name, help, labelNames, registers: this.registers });
  }

  private histogram(name: string, help: string, labelNames: string[]): Histogram {
    return new Histogram({ name, help, labelNames, buckets: SECONDS_BUCKETS, registers: this.registers });
  }

  /** An operation ended on this executor after `seconds`. */
  operationEnded(kind: OperationKind, outcome: 'done' | 'failed', seconds: number): void {
    this.operations.inc({ kind, outcome });
    this.operationSeconds.observe({ kind, outcome }, Math.max(0, seconds));
  }

  /** A snapshot's timings (`<phase>_ms` fields, null = the phase did not run): see timingPhases. */
  snapshotTimings(timings: Partial<Record<keyof Timings, number | null>>): void {
    for (const { phase, seconds } of timingPhases(timings)) this.snapshotPhases.observe({ phase }, seconds);
  }

  /** A clip index of `bytes` was built (and pushed) in `ms`. */
  indexBuilt(ms: number, bytes: number): void {
    this.indexBuild.observe(Math.max(0, ms) / 1000);
    this.indexBytes.inc(Math.max(0, bytes));
  }

  /** A restore that began at `startedAt` (performance.now()) has its container running. */
  restoreStarted(sandboxId: string, mode: RestoreMode, startedAt: number): void {
    this.restoreRunning.observe({ mode }, (performance.now() - startedAt) / 1000);
    this.awaitingFirstExec.set(sandboxId, { mode, startedAt });
  }

  /** An exec in `sandboxId` ended; the first one after a restore is that restore's time to first exec. */
  execEnded(sandboxId: string): void {
    const restore = this.awaitingFirstExec.get(sandboxId);
    if (restore === undefined) return;
    this.awaitingFirstExec.delete(sandboxId);
    const ms = performance.now() - restore.startedAt;
    this.restoreFirstExec.observe({ mode: restore.mode }, ms / 1000);
    if (restore.mode === 'lazy') this.clipFirstExec.observe(ms);
  }

  /** The sandbox is gone: a first exec will not come. */
  sandboxRemoved(sandboxId: string): void {
    this.awaitingFirstExec.delete(sandboxId);
  }

  /** An eager restore found its image in the engine (hit) or pulled `bytes` of it (miss). */
  imageCache(hit: boolean, bytes: number): void {
    if (hit) {
      this.cacheHits.inc({ tier: 'image' });
      this.cacheHitBytes.inc({ tier: 'image' }, Math.max(0, bytes));
    } else {
      this.cacheMisses.inc({ tier: 'image' });
      this.cacheMissBytes.inc({ tier: 'image' }, Math.max(0, bytes));
    }
  }

  /**
   * The cumulative fetch counters of every mount process on this host, read from their status
   * files (`key` tells mount processes apart: status file and pid). Mounts missing from `mounts`
   * are forgotten unless `partial` (one mount's last counts, read as it is taken down).
   */
  mountStats(mounts: Array<{ key: string; fetch: Partial<FetchStats> }>, partial = false): void {
    for (const { key, fetch } of mounts) {
      const d = this.mountDeltas.observe(key, fetch);
      this.rangeGets.inc(d.requests);
      this.rangeGetBytes.inc(d.bytes);
      this.inflateSeconds.inc(d.inflateSeconds);
      this.spansFetched.inc(d.spansFetched);
      this.tierFallbacks.inc(d.fallbacks);
      this.cacheHits.inc({ tier: 'memory' }, d.memoryHits);
      this.cacheHitBytes.inc({ tier: 'memory' }, d.memoryHitBytes);
      this.cacheHits.inc({ tier: 'disk' }, d.diskHits);
      this.cacheHitBytes.inc({ tier: 'disk' }, d.diskHitBytes);
      this.cacheMisses.inc({ tier: 'disk' }, d.spansFetched);
      this.cacheMissBytes.inc({ tier: 'disk' }, d.bytes);
    }
    if (!partial) this.mountDeltas.retain(mounts.map((m) => m.key));
  }

  /** The server accepted a heartbeat now. */
  heartbeatAccepted(): void {
    this.lastHeartbeatAt = Date.now();
  }

  /** What the last heartbeat observed: sandboxes by runtime and state, and the image cache's size. */
  observed(sandboxes: Array<{ runtime: string; state: string }>, imageBytes: number): void {
    const counts = new Map<string, { runtime: string; state: string; n: number }>();
    for (const s of sandboxes) {
      const k = `${s.runtime}\u0000${s.state}`;
      const entry = counts.get(k) ?? { runtime: s.runtime, state: s.state, n: 0 };
      entry.n++;
      counts.set(k, entry);
    }
    this.sandboxes.reset();
    for (const { runtime, state, n } of counts.values()) this.sandboxes.set({ runtime, state }, n);
    this.cacheSize.set({ tier: 'image' }, imageBytes);
  }

  /**
   * The host span cache as its service last measured it: its size, and what it evicted since the
   * last call (the service's counts are cumulative since its start).
   */
  spanCache(stats: Pick<ClipCacheStats, 'used_bytes' | 'evicted_spans' | 'evicted_bytes'>): void {
    this.cacheSize.set({ tier: 'disk' }, stats.used_bytes);
    const spans = stats.evicted_spans - this.spanCacheEvicted.spans;
    const bytes = stats.evicted_bytes - this.spanCacheEvicted.bytes;
    if (spans > 0) this.cacheEvictions.inc({ tier: 'disk' }, spans);
    if (bytes > 0) this.cacheEvictedBytes.inc({ tier: 'disk' }, bytes);
    this.spanCacheEvicted = { spans: stats.evicted_spans, bytes: stats.evicted_bytes };
  }

  /** The text exposition format (heartbeat age as of now). */
  async render(): Promise<string> {
    if (this.lastHeartbeatAt !== undefined) this.heartbeatAge.set((Date.now() - this.lastHeartbeatAt) / 1000);
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
