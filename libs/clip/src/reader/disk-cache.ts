/**
 * Host-wide cache of uncompressed layer bytes, shared by every image and
 * process on the host. Keyed by the layer's uncompressed digest (content
 * addressed, so two images sharing a layer share its cache) and filled span by
 * span: `<dir>/sha256_<hex>/<uoff>-<ulen>`. A span file appears atomically
 * (temp file + rename), so concurrent processes never see a partial file; if
 * two fetch the same span at once, both write identical bytes and one rename
 * wins. Every file is checked against the span digest when it is read.
 *
 * To keep N processes on a host from fetching the same span N times, a
 * fetcher first claims `<span>.lock` (O_EXCL); others wait for the span file
 * to appear. A lock older than a minute is from a dead process and is broken.
 *
 * A hit touches the file's mtime (at most once a minute), which is what the
 * disk budget (cache-budget.ts) evicts by: least recently used first.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface CachedSpan {
  uoff: number;
  ulen: number;
  sha256: Buffer;
}

/** a hit refreshes the span's mtime when it is older than this */
const TOUCH_AFTER_MS = 60_000;

export class SpanDiskCache {
  constructor(readonly dir: string) {}

  layerDir(diffId: string): string {
    return join(this.dir, diffId.replace(':', '_'));
  }

  path(diffId: string, span: CachedSpan): string {
    return join(this.layerDir(diffId), `${span.uoff}-${span.ulen}`);
  }

  /** Whether the span's file is there (not verified: `get` verifies when it reads). */
  async has(diffId: string, span: CachedSpan): Promise<boolean> {
    return stat(this.path(diffId, span)).then((st) => st.size === span.ulen, () => false);
  }

  async get(diffId: string, span: CachedSpan): Promise<Buffer | undefined> {
    const file = this.path(diffId, span);
    let data: Buffer;
    let mtimeMs: number;
    try {
      // open, then stat and read the open file: an eviction in between cannot cut it short
      const fh = await open(file, 'r');
      try {
        mtimeMs = (await fh.stat()).mtimeMs;
        data = await fh.readFile();
      } finally {
        await fh.close();
      }
    } catch {
      return undefined; // not cached, or evicted
    }
    if (data.length !== span.ulen || !createHash('sha256').update(data).digest().equals(span.sha256)) {
      await unlink(file).catch(() => undefined); // damaged: fetch again
      return undefined;
    }
    const now = Date.now();
    if (now - mtimeMs > TOUCH_AFTER_MS) await utimes(file, now / 1000, now / 1000).catch(() => undefined);
    return data;
  }

  /** Is someone (this or another process) fetching this span right now? */
  async claimed(diffId: string, span: CachedSpan): Promise<boolean> {
    return (await stat(`${this.path(diffId, span)}.lock`).catch(() => undefined)) !== undefined;
  }

  /**
   * Claim the right to fetch a span: a release function, or undefined when
   * another process holds a fresh claim (wait for the file instead).
   */
  async claim(diffId: string, span: CachedSpan, staleMs = 60_000): Promise<(() => Promise<void>) | undefined> {
    const lock = `${this.path(diffId, span)}.lock`;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await mkdir(this.layerDir(diffId), { recursive: true });
        const fh = await open(lock, 'wx');
        await fh.close();
        return () => unlink(lock).catch(() => undefined);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return async () => undefined; // unusable cache: just fetch
        const st = await stat(lock).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs < staleMs) return undefined;
        await unlink(lock).catch(() => undefined); // stale (or just released): try again
      }
    }
    return undefined;
  }

  async put(diffId: string, span: CachedSpan, data: Buffer): Promise<void> {
    const dir = this.layerDir(diffId);
    await mkdir(dir, { recursive: true });
    const final = this.path(diffId, span);
    const tmp = `${final}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(tmp, data);
      await rename(tmp, final);
    } catch {
      // A full or read-only cache must not fail the read: the bytes are in hand.
      await unlink(tmp).catch(() => undefined);
    }
  }
}
