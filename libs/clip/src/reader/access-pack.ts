/**
 * Access packs: the bytes an access record names, packed into one gzip stream in the order they
 * were first read. Prefetching a record span by span fetches whole spans (a span is the unit of
 * checkpoints and of verification), so a program that reads 30 MB scattered over the image makes
 * a restore fetch about as much again in compressed spans; the pack carries only what was read,
 * compressed together, and is streamed by the next restore from its first byte while the program
 * starts: what it reads first arrives first.
 *
 * Entries are content-addressed: a layer's uncompressed digest (diff_id), an offset in that
 * layer's uncompressed stream, a length, and the sha256 of those bytes. A pack built for one
 * image is therefore true for every image that has those layers (a snapshot's image keeps its
 * base's layers and adds one), and never serves a file that changed: that one lives in another
 * layer. Each entry is checked against its sha256 as it arrives; a mismatch, a broken stream or a
 * pack that does not arrive in time leaves the reads to the span store, as without a pack.
 *
 * Trust: the digests come with the record (pushed beside the image's index by an executor with
 * push rights to the repository, like the index itself), not from the index: a pack is exactly
 * as trustworthy as the index it accompanies.
 *
 * Ranges are padded to 128 KiB (the kernel asks a FUSE mount for up to 128 KiB at a time, and
 * reads ahead) and merged, so the next run's slightly different reads still land inside.
 */
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, gzip } from 'node:zlib';
import { ClipError } from '../errors';
import type { ClipIndex } from '../format/index-file';
import type { AccessRecord } from './access-record';

export interface PackEntry {
  /** uncompressed digest (diff_id) of the layer the bytes are in */
  layer: string;
  /** offset in that layer's uncompressed stream */
  offset: number;
  length: number;
  /** sha256 of the bytes, hex */
  sha256: string;
}

/** What a record says about its pack: the blob (a gzip stream of the entries' bytes, in order) and its entries. */
export interface AccessPackRef {
  /** digest of the gzip'd blob, pushed as a layer of the access record artifact */
  digest: string;
  size: number;
  entries: PackEntry[];
}

/** Kernel request size on a FUSE mount: ranges are padded to it. */
export const PACK_ALIGN = 128 * 1024;
/** Most bytes a pack holds (uncompressed); what a record names beyond that is prefetched by span. */
export const MAX_PACK_BYTES = 256 * 1024 * 1024;
export const MAX_PACK_ENTRIES = 100_000;
/**
 * Longest entry: a read waits for its whole entry (checked against its sha256 before use), so a
 * large file read at its start must not wait for all of it. A multiple of PACK_ALIGN.
 */
export const MAX_ENTRY_BYTES = 1024 * 1024;
/** gunzip output chunk: each chunk is a turn of the mount's event loop, busy serving FUSE */
const GUNZIP_CHUNK = 256 * 1024;

interface LayerRange {
  layer: number;
  diffId: string;
  offset: number;
  length: number;
  /** where to read it: a file of the image and the offset in it */
  path: string;
  fileOffset: number;
}

/**
 * The layer ranges an access record names in `index`, padded to PACK_ALIGN within each file, in
 * first-read order, without overlaps (a byte is packed once, where it is first needed; adjacent
 * pieces of one file merge up to MAX_ENTRY_BYTES, longer ones are cut there). Files the image
 * does not have as regular files are skipped.
 */
export function packRanges(index: ClipIndex, record: AccessRecord, maxBytes = MAX_PACK_BYTES): LayerRange[] {
  const covered = new Map<number, Array<[number, number]>>(); // per layer: sorted [start, end)
  const out: LayerRange[] = [];
  let total = 0;
  for (const file of record.files) {
    let id: number;
    try {
      id = index.resolve(file.path, true);
    } catch {
      continue;
    }
    const data = index.isRegular(id) ? index.fileData(id) : undefined;
    const layer = data === undefined ? undefined : index.layers[data.layer];
    if (data === undefined || layer === undefined || data.size === 0) continue;
    for (const [off, len] of file.ranges) {
      const start = Math.min(data.size, Math.floor(off / PACK_ALIGN) * PACK_ALIGN);
      const end = Math.min(data.size, Math.ceil((off + len) / PACK_ALIGN) * PACK_ALIGN);
      for (const [a, b] of subtract(covered.get(data.layer) ?? [], data.offset + start, data.offset + end)) {
        if (total + (b - a) > maxBytes) return out;
        for (let p = a; p < b;) {
          const last = out[out.length - 1];
          const merge = last !== undefined && last.layer === data.layer && last.offset + last.length === p && last.path === file.path && last.length < MAX_ENTRY_BYTES;
          const q = Math.min(b, p + (merge ? MAX_ENTRY_BYTES - last.length : MAX_ENTRY_BYTES));
          if (merge) {
            last.length += q - p;
          } else {
            if (out.length >= MAX_PACK_ENTRIES) return out;
            out.push({ layer: data.layer, diffId: layer.diffId, offset: p, length: q - p, path: file.path, fileOffset: p - data.offset });
          }
          total += q - p;
          p = q;
        }
        covered.set(data.layer, addInterval(covered.get(data.layer) ?? [], a, b));
      }
    }
  }
  return out;
}

/** [start, end) minus the sorted intervals: the pieces not covered yet. */
function subtract(intervals: Array<[number, number]>, start: number, end: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let pos = start;
  for (const [a, b] of intervals) {
    if (b <= pos) continue;
    if (a >= end) break;
    if (a > pos) out.push([pos, Math.min(a, end)]);
    pos = Math.max(pos, b);
    if (pos >= end) break;
  }
  if (pos < end) out.push([pos, end]);
  return out;
}

function addInterval(intervals: Array<[number, number]>, start: number, end: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let s = start;
  let e = end;
  let placed = false;
  for (const [a, b] of intervals) {
    if (b < s) out.push([a, b]);
    else if (a > e) {
      if (!placed) {
        out.push([s, e]);
        placed = true;
      }
      out.push([a, b]);
    } else {
      s = Math.min(s, a);
      e = Math.max(e, b);
    }
  }
  if (!placed) out.push([s, e]);
  return out;
}

/**
 * Build the pack of `record` for the image of `read`'s index: the ranges (packRanges) read with
 * `read` (a ClipReader's read: verified bytes, from the caches when the program just read them),
 * hashed, gzip'd in order. Returns the blob and its entries (digest and size: of the blob).
 */
export async function buildAccessPack(
  index: ClipIndex,
  record: AccessRecord,
  read: (path: string, offset: number, length: number) => Promise<Buffer>,
  opts: { maxBytes?: number } = {},
): Promise<{ blob: Buffer; pack: AccessPackRef; bytes: number }> {
  const ranges = packRanges(index, record, opts.maxBytes);
  const parts: Buffer[] = [];
  const entries: PackEntry[] = [];
  let bytes = 0;
  for (const r of ranges) {
    const data = await read(r.path, r.fileOffset, r.length);
    if (data.length !== r.length) throw new ClipError('EIO', `access pack: read ${data.length} of ${r.length} bytes of ${r.path}`);
    parts.push(data);
    bytes += data.length;
    entries.push({ layer: r.diffId, offset: r.offset, length: r.length, sha256: createHash('sha256').update(data).digest('hex') });
  }
  const blob = await new Promise<Buffer>((resolve, reject) => gzip(Buffer.concat(parts), (err, out) => (err ? reject(err) : resolve(out))));
  return { blob, bytes, pack: { digest: `sha256:${createHash('sha256').update(blob).digest('hex')}`, size: blob.length, entries } };
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Check a record's `pack` field; throws naming what is wrong. */
export function parsePackRef(value: unknown): AccessPackRef {
  const corrupt = (what: string): ClipError => new ClipError('ACCESS_RECORD_CORRUPT', `access record: pack ${what}`);
  if (typeof value !== 'object' || value === null) throw corrupt('is not an object');
  const v = value as Record<string, unknown>;
  if (typeof v.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(v.digest)) throw corrupt('digest is not a sha256 digest');
  if (!isCount(v.size)) throw corrupt('size is not a count');
  if (!Array.isArray(v.entries) || v.entries.length > MAX_PACK_ENTRIES) throw corrupt(`entries is not a list of at most ${MAX_PACK_ENTRIES}`);
  let total = 0;
  const entries = v.entries.map((e: unknown, i: number): PackEntry => {
    const entry = e as Record<string, unknown> | null;
    if (typeof entry !== 'object' || entry === null) throw corrupt(`entries[${i}] is not an object`);
    if (typeof entry.layer !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(entry.layer)) throw corrupt(`entries[${i}].layer is not a diff_id`);
    if (!isCount(entry.offset) || !isCount(entry.length) || entry.length === 0) throw corrupt(`entries[${i}] offset/length`);
    if (typeof entry.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(entry.sha256)) throw corrupt(`entries[${i}].sha256 is not a sha256`);
    total += entry.length;
    return { layer: entry.layer, offset: entry.offset, length: entry.length, sha256: entry.sha256 };
  });
  if (total > MAX_PACK_BYTES) throw corrupt(`holds ${total} bytes, more than ${MAX_PACK_BYTES}`);
  return { digest: v.digest, size: v.size, entries };
}

export interface PackStats {
  state: 'streaming' | 'done' | 'failed';
  entries: number;
  /** entries arrived and verified */
  arrived: number;
  /** compressed bytes received */
  received: number;
  /** reads served from the pack, and bytes */
  reads: number;
  bytesServed: number;
  /** reads that fell back to the span store (not in the pack, or it failed) */
  misses: number;
  /** performance.now() of this process when streaming began */
  started_at?: number;
  /** ms from start to the last entry */
  ms?: number;
  error?: string;
}

interface Slot {
  entry: PackEntry;
  data?: Buffer;
  waiters: Array<(data: Buffer | undefined) => void>;
}

/**
 * The reader's side of a pack: streams the blob, checks each entry as it completes, and serves
 * reads of the ranges it holds (waiting for an entry still on its way while the stream lives).
 */
export class AccessPack {
  readonly stats: PackStats;
  private readonly slots: Slot[];
  /** per layer diff_id: slots sorted by offset */
  private readonly byLayer = new Map<string, Slot[]>();
  private failed = false;

  constructor(readonly ref: AccessPackRef) {
    this.slots = ref.entries.map((entry) => ({ entry, waiters: [] }));
    for (const slot of this.slots) {
      const list = this.byLayer.get(slot.entry.layer) ?? [];
      list.push(slot);
      this.byLayer.set(slot.entry.layer, list);
    }
    for (const list of this.byLayer.values()) list.sort((a, b) => a.entry.offset - b.entry.offset);
    this.stats = { state: 'streaming', entries: this.slots.length, arrived: 0, received: 0, reads: 0, bytesServed: 0, misses: 0 };
  }

  /** Whether the pack holds all of [offset, offset+length) of layer `diffId` (arrived or not). */
  covers(diffId: string, offset: number, length: number): boolean {
    return this.slotsFor(diffId, offset, length) !== undefined;
  }

  /**
   * Bytes [offset, offset+length) of layer `diffId`: at once when they arrived, a promise while
   * they are on their way, undefined when the pack does not hold them or failed (read elsewhere;
   * a promise also resolves undefined if the pack fails meanwhile). A range may span adjacent
   * entries (the kernel's reads need not start where an entry does).
   */
  lookup(diffId: string, offset: number, length: number): Buffer | Promise<Buffer | undefined> | undefined {
    const slots = this.slotsFor(diffId, offset, length);
    if (slots === undefined || (this.failed && slots.some((slot) => slot.data === undefined))) {
      this.stats.misses++;
      return undefined;
    }
    const assemble = (): Buffer | undefined => {
      const parts: Buffer[] = [];
      for (const slot of slots) {
        if (slot.data === undefined) {
          this.stats.misses++;
          return undefined;
        }
        const from = Math.max(offset, slot.entry.offset) - slot.entry.offset;
        const to = Math.min(offset + length, slot.entry.offset + slot.entry.length) - slot.entry.offset;
        parts.push(slot.data.subarray(from, to));
      }
      this.stats.reads++;
      this.stats.bytesServed += length;
      return parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts);
    };
    const pending = slots.filter((slot) => slot.data === undefined);
    if (pending.length === 0) return assemble();
    return Promise.all(pending.map((slot) => new Promise<Buffer | undefined>((resolve) => slot.waiters.push(resolve)))).then(assemble);
  }

  /** The entries of layer `diffId` that hold [offset, offset+length) between them, end to end; undefined when they do not. */
  private slotsFor(diffId: string, offset: number, length: number): Slot[] | undefined {
    const list = this.byLayer.get(diffId);
    if (list === undefined) return undefined;
    let lo = 0;
    let hi = list.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if ((list[mid]?.entry.offset ?? Infinity) <= offset) lo = mid;
      else hi = mid - 1;
    }
    const first = list[lo];
    if (first === undefined || first.entry.offset > offset) return undefined;
    const slots = [first];
    let end = first.entry.offset + first.entry.length;
    for (let i = lo + 1; end < offset + length; i++) {
      const next = list[i];
      if (next === undefined || next.entry.offset !== end) return undefined;
      slots.push(next);
      end += next.entry.length;
    }
    return end >= offset + length ? slots : undefined;
  }

  /**
   * Stream the blob (`open`: the registry's blob stream) through gunzip, filling entries in order.
   * Resolves when it is done or failed (never rejects: a failed pack only means reads go to the
   * span store). `log` hears about the end.
   */
  async stream(open: () => Promise<AsyncIterable<Buffer>>, log?: (level: 'info' | 'warn', message: string, fields: Record<string, unknown>) => void): Promise<void> {
    const started = performance.now();
    this.stats.started_at = started;
    let index = 0;
    let current: Buffer[] = [];
    let have = 0;
    let hash = createHash('sha256');
    const blobHash = createHash('sha256');
    const take = (chunk: Buffer): void => {
      let pos = 0;
      while (pos < chunk.length) {
        const slot = this.slots[index];
        if (slot === undefined) throw new Error('more data than its entries');
        const n = Math.min(slot.entry.length - have, chunk.length - pos);
        const piece = chunk.subarray(pos, pos + n);
        current.push(piece);
        hash.update(piece);
        have += n;
        pos += n;
        if (have === slot.entry.length) {
          if (hash.digest('hex') !== slot.entry.sha256) throw new Error(`entry ${index} (${slot.entry.layer} +${slot.entry.offset}) does not match its sha256`);
          slot.data = current.length === 1 && current[0] !== undefined ? Buffer.from(current[0]) : Buffer.concat(current);
          for (const w of slot.waiters.splice(0)) w(slot.data);
          this.stats.arrived++;
          index++;
          current = [];
          have = 0;
          hash = createHash('sha256');
        }
      }
    };
    try {
      const body = await open();
      const stats = this.stats;
      async function* counted(): AsyncIterable<Buffer> {
        for await (const chunk of body) {
          const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
          stats.received += buf.length;
          blobHash.update(buf);
          yield buf;
        }
      }
      await pipeline(Readable.from(counted()), createGunzip({ chunkSize: GUNZIP_CHUNK }), new Writable({
        write(chunk: Buffer, _encoding, done): void {
          try {
            take(chunk);
            done();
          } catch (err) {
            done(err as Error);
          }
        },
      }));
      if (index !== this.slots.length) throw new Error(`ended after ${index} of ${this.slots.length} entries`);
      if (`sha256:${blobHash.digest('hex')}` !== this.ref.digest) throw new Error(`blob is not ${this.ref.digest}`);
      this.stats.state = 'done';
      this.stats.ms = Math.round(performance.now() - started);
      log?.('info', 'access pack done', { entries: this.slots.length, received: this.stats.received, ms: this.stats.ms });
    } catch (err) {
      this.failed = true;
      this.stats.state = 'failed';
      this.stats.error = err instanceof Error ? err.message : String(err);
      for (const slot of this.slots) if (slot.data === undefined) for (const w of slot.waiters.splice(0)) w(undefined);
      log?.('warn', 'access pack failed; reads go to the spans', { err: this.stats.error, arrived: this.stats.arrived, entries: this.slots.length });
    }
  }
}
