/**
 * Access records: which files (and which byte ranges of them) a program read from a lazily
 * mounted image, in the order it first read them. The first lazy start of an image records one
 * (its FUSE mount notes every read it serves); later starts of that image, or of snapshots built
 * on it, prefetch those ranges in that order before and while the program starts
 * (ClipReader.prefetchRecord), so it finds them in the caches instead of waiting on the registry.
 *
 * Ranges are file offsets, not layer offsets: a record stays true for an image that stores the
 * same file in another layer (a snapshot's new top layer). Paths are byte strings (../names.ts);
 * JSON keeps them exactly (a character 0x80-0xff is written as its UTF-8 and read back as the
 * same character).
 *
 * On the wire (the registry artifact `<tag>.access`, see apps/executor/src/clip-artifacts.ts) a
 * record is gzip'd JSON:
 *   { "format": "cryo.clip.access/v1", "image": "sha256:<manifest digest it was recorded on>",
 *     "duration_ms": N, "files": [ { "path": "/usr/bin/python3.11", "first_ms": 12,
 *     "ranges": [[0, 4096], [1048576, 131072]] }, ... ] }
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import { ClipError } from '../errors';
import { parsePackRef, type AccessPackRef } from './access-pack';

export const ACCESS_RECORD_FORMAT = 'cryo.clip.access/v1';

/** One file a program read. */
export interface AccessedFile {
  /** absolute path in the image, as bytes (a byte string) */
  path: string;
  /** ms after the recording started at which the file was first read */
  first_ms: number;
  /** [offset, length] pairs in the file, sorted and merged */
  ranges: Array<[number, number]>;
}

export interface AccessRecord {
  format: typeof ACCESS_RECORD_FORMAT;
  /** manifest digest of the image the reads were recorded on */
  image: string;
  /** how long the recording ran (ms) */
  duration_ms: number;
  /** in the order they were first read */
  files: AccessedFile[];
  /** the bytes of these files' ranges, packed (access-pack.ts); absent: prefetch by span */
  pack?: AccessPackRef;
}

/** Most files a record keeps; reads of further files are not recorded. */
export const MAX_RECORDED_FILES = 100_000;
/** Most ranges kept per file; beyond that the file's ranges collapse into one. */
export const MAX_RANGES_PER_FILE = 64;
/** Reads closer than this (bytes) merge into one range: a span is far coarser anyway. */
const MERGE_GAP = 64 * 1024;
/** Largest encoded record accepted (gzip'd), and largest once unpacked. */
const MAX_ENCODED_BYTES = 16 * 1024 * 1024;
const MAX_JSON_BYTES = 128 * 1024 * 1024;

/** Adds [offset, offset+length) to sorted, merged ranges (in place). */
function addRange(ranges: Array<[number, number]>, offset: number, length: number): void {
  let start = offset;
  let end = offset + length;
  let i = 0;
  while (i < ranges.length && (ranges[i]?.[0] ?? 0) + (ranges[i]?.[1] ?? 0) + MERGE_GAP < start) i++;
  let j = i;
  while (j < ranges.length) {
    const r = ranges[j];
    if (r === undefined || r[0] > end + MERGE_GAP) break;
    start = Math.min(start, r[0]);
    end = Math.max(end, r[0] + r[1]);
    j++;
  }
  ranges.splice(i, j - i, [start, end - start]);
  if (ranges.length > MAX_RANGES_PER_FILE) {
    const first = ranges[0] ?? [0, 0];
    const last = ranges[ranges.length - 1] ?? first;
    ranges.splice(0, ranges.length, [first[0], last[0] + last[1] - first[0]]);
  }
}

/** Notes reads as a FUSE mount serves them; `record()` gives the access record so far. */
export class AccessRecorder {
  private readonly files = new Map<string, AccessedFile>();
  /** performance.now() when recording began: `first_ms` counts from here */
  readonly startedAt = performance.now();

  constructor(private readonly image: string) {}

  /** A read of `length` bytes at `offset` of `path` (a byte string). */
  note(path: string, offset: number, length: number): void {
    if (length <= 0) return;
    let file = this.files.get(path);
    if (file === undefined) {
      if (this.files.size >= MAX_RECORDED_FILES) return;
      file = { path, first_ms: Math.round(performance.now() - this.startedAt), ranges: [] };
      this.files.set(path, file);
    }
    addRange(file.ranges, offset, length);
  }

  get fileCount(): number {
    return this.files.size;
  }

  /** A copy of what was read so far, files in the order of their first read. */
  record(): AccessRecord {
    return {
      format: ACCESS_RECORD_FORMAT,
      image: this.image,
      duration_ms: Math.round(performance.now() - this.startedAt),
      files: [...this.files.values()].map((f) => ({ path: f.path, first_ms: f.first_ms, ranges: f.ranges.map(([o, l]) => [o, l] as [number, number]) })),
    };
  }
}

export function encodeAccessRecord(record: AccessRecord): Buffer {
  return gzipSync(Buffer.from(JSON.stringify(record), 'utf8'));
}

function corrupt(what: string): ClipError {
  return new ClipError('ACCESS_RECORD_CORRUPT', `access record: ${what}`);
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Check a parsed record: shapes, limits and byte-string paths. Throws ACCESS_RECORD_CORRUPT naming what is wrong. */
export function parseAccessRecord(value: unknown): AccessRecord {
  if (typeof value !== 'object' || value === null) throw corrupt('not a JSON object');
  const v = value as Record<string, unknown>;
  if (v.format !== ACCESS_RECORD_FORMAT) throw corrupt(`format is ${JSON.stringify(v.format)}, expected ${ACCESS_RECORD_FORMAT}`);
  if (typeof v.image !== 'string') throw corrupt('image is not a string');
  if (!isCount(v.duration_ms)) throw corrupt('duration_ms is not a count');
  if (!Array.isArray(v.files) || v.files.length > MAX_RECORDED_FILES) throw corrupt(`files is not a list of at most ${MAX_RECORDED_FILES}`);
  const files: AccessedFile[] = v.files.map((f: unknown, i: number) => {
    const file = f as Record<string, unknown> | null;
    if (typeof file !== 'object' || file === null) throw corrupt(`files[${i}] is not an object`);
    // eslint-disable-next-line no-control-regex
    if (typeof file.path !== 'string' || !file.path.startsWith('/') || /[^\x01-\xff]/.test(file.path)) throw corrupt(`files[${i}].path is not an absolute byte-string path`);
    if (!isCount(file.first_ms)) throw corrupt(`files[${i}].first_ms is not a count`);
    if (!Array.isArray(file.ranges) || file.ranges.length > MAX_RANGES_PER_FILE) throw corrupt(`files[${i}].ranges is not a list of at most ${MAX_RANGES_PER_FILE}`);
    const ranges = file.ranges.map((r: unknown, j: number): [number, number] => {
      if (!Array.isArray(r) || r.length !== 2 || !isCount(r[0]) || !isCount(r[1])) throw corrupt(`files[${i}].ranges[${j}] is not [offset, length]`);
      return [r[0], r[1]];
    });
    return { path: file.path, first_ms: file.first_ms, ranges };
  });
  return { format: ACCESS_RECORD_FORMAT, image: v.image, duration_ms: v.duration_ms, files, ...(v.pack === undefined ? {} : { pack: parsePackRef(v.pack) }) };
}

/** gzip'd JSON -> record; throws ACCESS_RECORD_CORRUPT on anything else. */
export function decodeAccessRecord(bytes: Buffer): AccessRecord {
  if (bytes.length > MAX_ENCODED_BYTES) throw corrupt(`${bytes.length} bytes is more than the ${MAX_ENCODED_BYTES} accepted`);
  let text: string;
  try {
    text = gunzipSync(bytes, { maxOutputLength: MAX_JSON_BYTES }).toString('utf8');
  } catch (err) {
    throw corrupt(`not gzip'd JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
  return parseAccessRecord(value);
}
