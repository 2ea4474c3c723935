/**
 * Gzip on every core: each chunk of a layer becomes one independent gzip member, compressed on a
 * worker thread. Concatenated members are one valid gzip stream (RFC 1952 §2.2; Docker,
 * containerd and GNU gzip read them), and every member start is a clip checkpoint that needs no
 * window, so the layer's clip index costs nothing extra (push-pipeline.ts).
 *
 * A chunk that does not compress (random or already compressed data) is stored (deflate level
 * 0) instead of being run through the compressor for nothing: a sample decides.
 * The worker also hashes the chunk (sha256): that is the clip span digest of the member.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

export interface CompressedChunk {
  /** one gzip member (10-byte header: no name, no extra field) */
  gzip: Buffer;
  /** sha256 of the uncompressed chunk */
  sha256: Buffer;
  /** the level used (0 when the chunk was stored) */
  level: number;
}

/** Bytes of gzip header before the deflate data of a member made here (no FNAME, FEXTRA, FCOMMENT). */
export const MEMBER_HEADER_BYTES = 10;

const WORKER = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
const { createHash } = require('node:crypto');
const SAMPLE = 16 * 1024;
function incompressible(data, level) {
  if (level === 0 || data.length < 4 * SAMPLE) return false;
  for (const at of [0, Math.floor(data.length / 2), data.length - SAMPLE]) {
    const sample = data.subarray(at, at + SAMPLE);
    if (zlib.deflateRawSync(sample, { level: 1 }).length < sample.length * 0.97) return false;
  }
  return true;
}
parentPort.on('message', ({ id, buffer, offset, length, level, close }) => {
  // Messages come in order: every chunk sent before the pool closed is done by now.
  if (close) return parentPort.close();
  try {
    const data = Buffer.from(buffer, offset, length);
    const used = incompressible(data, level) ? 0 : level;
    const gz = zlib.gzipSync(data, { level: used });
    const sha = createHash('sha256').update(data).digest();
    const out = new Uint8Array(gz.length);
    out.set(gz);
    parentPort.postMessage({ id, gzip: out.buffer, sha256: sha, level: used }, [out.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.stack || err) });
  }
});
`;

interface Job {
  resolve: (c: CompressedChunk) => void;
  reject: (e: Error) => void;
}

interface Reply {
  id: number;
  gzip?: ArrayBuffer;
  sha256?: Uint8Array;
  level?: number;
  error?: string;
}

export interface GzipPoolOptions {
  /** worker threads (default: the cores Node may use) */
  workers?: number;
  /** zlib level 1..9 for chunks that compress */
  level: number;
}

/** How long close() waits for the threads to finish the chunks they hold before terminating them. */
const CLOSE_GRACE_MS = 60_000;

export class GzipPool {
  private readonly workers: Worker[] = [];
  private readonly exited: Array<Promise<void>> = [];
  private readonly jobs = new Map<number, Job>();
  private nextId = 0;
  private turn = 0;
  private failed: Error | undefined;

  constructor(private readonly opts: GzipPoolOptions) {
    const n = Math.max(1, opts.workers ?? availableParallelism());
    for (let i = 0; i < n; i++) {
      const worker = new Worker(WORKER, { eval: true });
      worker.on('message', (reply: Reply) => this.settle(reply));
      worker.on('error', (err) => this.fail(err));
      this.exited.push(new Promise((resolve) => worker.once('exit', () => resolve())));
      this.workers.push(worker);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /** Compress one chunk (copied to the worker: the caller may keep using it, e.g. in a socket write). */
  compress(chunk: Buffer): Promise<CompressedChunk> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    const worker = this.workers[this.turn++ % this.workers.length];
    if (worker === undefined) return Promise.reject(new Error('gzip pool is closed'));
    const promise = new Promise<CompressedChunk>((resolve, reject) => this.jobs.set(id, { resolve, reject }));
    const copy = new Uint8Array(chunk.byteLength);
    copy.set(chunk);
    worker.postMessage({ id, buffer: copy.buffer, offset: 0, length: copy.byteLength, level: this.opts.level }, [copy.buffer]);
    return promise;
  }

  private settle(reply: Reply): void {
    const job = this.jobs.get(reply.id);
    if (job === undefined) return;
    this.jobs.delete(reply.id);
    if (reply.error !== undefined || reply.gzip === undefined || reply.sha256 === undefined) {
      job.reject(new Error(`gzip worker failed: ${reply.error ?? 'no output'}`));
      return;
    }
    job.resolve({ gzip: Buffer.from(reply.gzip), sha256: Buffer.from(reply.sha256), level: reply.level ?? this.opts.level });
  }

  private fail(err: Error): void {
    this.failed = err;
    for (const job of this.jobs.values()) job.reject(err);
    this.jobs.clear();
  }

  /**
   * Stop the threads once they have finished the chunks they were given (those jobs still
   * settle). Not terminate(): a thread stopped inside zlib's gzipSync leaves a zlib handle that was
   * never initialised, and Node aborts the whole process when it cleans the thread up ("close
   * before init", node_zlib.cc) — a failed push closing its pool would take the executor down.
   * A thread that has not finished within a minute is terminated all the same.
   */
  async close(): Promise<void> {
    const workers = this.workers.splice(0);
    const exited = this.exited.splice(0);
    for (const w of workers) w.postMessage({ close: true });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), CLOSE_GRACE_MS); });
    try {
      if (await Promise.race([Promise.all(exited), late]) === 'late') await Promise.all(workers.map((w) => w.terminate()));
    } finally {
      clearTimeout(timer);
    }
  }
}
