/**
 * Host-wide cache of uncompressed layer bytes, shared by every image and
 * process on the host. Keyed by the layer's uncompressed digest (content
 * addressed, so two images sharing a layer share its cache) and filled span by
 * span: `<dir>/sha256_<hex>/<uoff>-<ulen>`. A span file appears atomically
 * (temp file + rename), so concurrent processes never see a partial file; if
 * two fetch the same span at once, both write identical bytes and one rename
 * wins. Every file is checked against the span digest when it is read.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface CachedSpan {
  uoff: number;
  ulen: number;
  sha256: Buffer;
}

export class SpanDiskCache {
  constructor(readonly dir: string) {}

  layerDir(diffId: string): string {
    return join(this.dir, diffId.replace(':', '_'));
  }

  path(diffId: string, span: CachedSpan): string {
    return join(this.layerDir(diffId), `${span.uoff}-${span.ulen}`);
  }

  async get(diffId: string, span: CachedSpan): Promise<Buffer | undefined> {
    const file = this.path(diffId, span);
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch {
      return undefined;
    }
    if (data.length !== span.ulen || !createHash('sha256').update(data).digest().equals(span.sha256)) {
      await unlink(file).catch(() => undefined); // damaged: fetch again
      return undefined;
    }
    return data;
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
