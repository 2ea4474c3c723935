/**
 * A disk budget for the host span cache (disk-cache.ts): least recently used spans are evicted
 * until the cache holds at most `maxBytes`. The cache is shared by every mount process on the host,
 * so eviction must never break a reader, and it does not:
 * - a span is evicted by unlinking its file; a reader that has opened it reads it to the end
 *   (POSIX keeps an unlinked file's data while it is open), and one that comes after finds no file
 *   and fetches the span again (the span store's normal miss path);
 * - files are only ever created whole (temp file + rename), so no reader sees half a span;
 * - "recently used" is the file's mtime: a cache hit touches it (at most once a minute per span).
 * Fetch claims (`.lock`) are left alone; temp files and claims older than an hour are debris of
 * killed processes and are removed.
 */
import { readdir, rmdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface CacheUsage {
  /** bytes of span files */
  bytes: number;
  spans: number;
  /** layers with at least one span cached */
  layers: number;
}

export interface EvictionReport extends CacheUsage {
  /** spans removed by this pass, and their bytes */
  evictedSpans: number;
  evictedBytes: number;
}

export interface CacheBudgetOptions {
  /** evict down to this share of maxBytes, so that not every pass evicts (default 0.9) */
  lowWater?: number;
  /** the time (ms since the epoch), for tests */
  now?: number;
}

const SPAN_FILE = /^\d+-\d+$/;
const DEBRIS_MS = 3600_000;

interface SpanFile {
  path: string;
  size: number;
  mtimeMs: number;
}

/** Every span file under `dir` (layer directories `sha256_<hex>/<uoff>-<ulen>`); removes old debris on the way. */
async function scan(dir: string, now: number): Promise<{ files: SpanFile[]; layerDirs: string[] }> {
  const files: SpanFile[] = [];
  const layerDirs: string[] = [];
  let layers: string[];
  try {
    layers = await readdir(dir);
  } catch {
    return { files, layerDirs }; // no cache yet
  }
  for (const layer of layers) {
    if (!layer.startsWith('sha256_')) continue;
    const layerDir = join(dir, layer);
    let names: string[];
    try {
      names = await readdir(layerDir);
    } catch {
      continue;
    }
    layerDirs.push(layerDir);
    for (const name of names) {
      const path = join(layerDir, name);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) continue;
      if (SPAN_FILE.test(name)) files.push({ path, size: st.size, mtimeMs: st.mtimeMs });
      else if ((name.includes('.tmp-') || name.endsWith('.lock')) && now - st.mtimeMs > DEBRIS_MS) await unlink(path).catch(() => undefined);
    }
  }
  return { files, layerDirs };
}

function usageOf(files: SpanFile[]): CacheUsage {
  const layers = new Set(files.map((f) => f.path.slice(0, f.path.lastIndexOf('/'))));
  return { bytes: files.reduce((n, f) => n + f.size, 0), spans: files.length, layers: layers.size };
}

/** What the cache at `dir` holds now. */
export async function cacheUsage(dir: string): Promise<CacheUsage> {
  return usageOf((await scan(dir, Date.now())).files);
}

/**
 * Evict least recently used spans until the cache at `dir` holds at most `maxBytes` (when it
 * holds more: down to `lowWater` of it). A span used again since the scan is skipped.
 */
export async function enforceCacheBudget(dir: string, maxBytes: number, opts: CacheBudgetOptions = {}): Promise<EvictionReport> {
  const now = opts.now ?? Date.now();
  const { files, layerDirs } = await scan(dir, now);
  const before = usageOf(files);
  let bytes = before.bytes;
  let spans = before.spans;
  let evictedSpans = 0;
  let evictedBytes = 0;
  if (bytes > maxBytes) {
    const target = Math.floor(maxBytes * (opts.lowWater ?? 0.9));
    files.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of files) {
      if (bytes <= target) break;
      const st = await stat(f.path).catch(() => undefined);
      if (st === undefined) {
        bytes -= f.size; // gone already (another pass, or a damaged file its reader removed)
        spans--;
        continue;
      }
      if (st.mtimeMs !== f.mtimeMs) continue; // read again since the scan: recently used after all
      try {
        await unlink(f.path);
      } catch {
        continue;
      }
      bytes -= f.size;
      spans--;
      evictedSpans++;
      evictedBytes += f.size;
    }
    // Layer directories left empty go too (a writer racing this recreates its directory).
    for (const d of layerDirs) await rmdir(d).catch(() => undefined);
  }
  return { bytes, spans, layers: before.layers, evictedSpans, evictedBytes };
}
