/**
 * Turns the cumulative fetch counters that mount processes publish (their status file's `fetch`,
 * rewritten every 2 s and at unmount) into increments, so a process that watches many mounts
 * can add them to its own counters: a mount that ends keeps what it counted, and a new mount
 * process behind the same status file (its counters back at zero) starts over without a loss.
 * Plain numbers: the library knows no metrics client.
 */
import { emptyFetchStats, type FetchStats } from './reader/span-store';

const FIELDS = Object.keys(emptyFetchStats()) as Array<keyof FetchStats>;

export class FetchStatsDeltas {
  private readonly last = new Map<string, FetchStats>();

  /**
   * What mount `key` (e.g. its status file and pid) counted since its previous `observe`. A
   * counter that went down means a new process: its whole value is new. Fields missing from an
   * older mount process's file count as 0.
   */
  observe(key: string, now: Partial<FetchStats>): FetchStats {
    const current = { ...emptyFetchStats(), ...pickNumbers(now) };
    const before = this.last.get(key) ?? emptyFetchStats();
    const restarted = FIELDS.some((f) => current[f] < before[f]);
    const delta = emptyFetchStats();
    for (const f of FIELDS) delta[f] = restarted ? current[f] : current[f] - before[f];
    this.last.set(key, current);
    return delta;
  }

  /** Forget the mounts not in `keys` (gone: their last counts were taken already). */
  retain(keys: Iterable<string>): void {
    const keep = new Set(keys);
    for (const key of this.last.keys()) if (!keep.has(key)) this.last.delete(key);
  }
}

function pickNumbers(stats: Partial<FetchStats>): Partial<FetchStats> {
  const out: Partial<FetchStats> = {};
  for (const f of FIELDS) {
    const v = stats[f];
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) out[f] = v;
  }
  return out;
}
