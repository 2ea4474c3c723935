/**
 * Keeps the host span cache of lazy restores (libs/clip's disk cache, shared by every mount
 * process on this host) within its disk budget, `clip.cache.max_bytes`: every `gc_interval_secs`
 * the least recently used spans beyond it are evicted (libs/clip enforceCacheBudget; eviction never
 * breaks a mount that is reading). Without a budget it only measures. What the cache holds and what
 * was evicted goes into the heartbeat (`capacity.clip_cache`) and, when something was evicted, the log.
 */
import type { Logger } from 'pino';
import { cacheUsage, enforceCacheBudget } from '@cryo/clip';
import type { ClipCacheStats } from '@cryo/snapshot';
import { PeriodicTask } from './periodic';

export interface ClipCacheOptions {
  dir: string;
  /** undefined: no limit, usage is only measured */
  maxBytes: number | undefined;
  intervalMs: number;
  log: Logger;
}

export class ClipCacheService {
  private stats: ClipCacheStats;
  private readonly task: PeriodicTask;

  constructor(private readonly opts: ClipCacheOptions) {
    this.stats = { max_bytes: opts.maxBytes ?? null, used_bytes: 0, spans: 0, evicted_spans: 0, evicted_bytes: 0 };
    this.task = new PeriodicTask(() => this.enforce(), {
      intervalMs: () => opts.intervalMs, runFirst: true, log: opts.log, failure: 'clip cache pass failed', context: { dir: opts.dir },
    });
  }

  /** What the heartbeat reports: as of the last pass. */
  observe(): ClipCacheStats {
    return { ...this.stats };
  }

  /**
   * Compressed bytes a new mount's background fill may bring into the cache: half the budget less
   * what the cache held at the last pass (never negative), so that filling never evicts on its own
   * what programs read; undefined without a budget (fill the whole image).
   */
  fillAllowance(): number | undefined {
    const { maxBytes } = this.opts;
    if (maxBytes === undefined) return undefined;
    return Math.max(0, Math.floor(maxBytes / 2) - this.stats.used_bytes);
  }

  /** One pass: measure, and evict down to the budget when over it. */
  async enforce(): Promise<ClipCacheStats> {
    const { dir, maxBytes, log } = this.opts;
    if (maxBytes === undefined) {
      const usage = await cacheUsage(dir);
      this.stats = { ...this.stats, used_bytes: usage.bytes, spans: usage.spans };
      return this.observe();
    }
    const report = await enforceCacheBudget(dir, maxBytes);
    this.stats = {
      max_bytes: maxBytes,
      used_bytes: report.bytes,
      spans: report.spans,
      evicted_spans: this.stats.evicted_spans + report.evictedSpans,
      evicted_bytes: this.stats.evicted_bytes + report.evictedBytes,
    };
    if (report.evictedSpans > 0) {
      log.info(
        { evicted_spans: report.evictedSpans, evicted_bytes: report.evictedBytes, used_bytes: report.bytes, max_bytes: maxBytes },
        `clip cache over its budget: evicted ${report.evictedSpans} spans (${report.evictedBytes} bytes); ${report.bytes} of ${maxBytes} bytes used`,
      );
    }
    return this.observe();
  }

  start(): void {
    this.task.start();
  }

  async stop(): Promise<void> {
    await this.task.stop();
  }
}
