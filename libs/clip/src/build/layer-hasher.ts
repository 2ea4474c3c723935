/**
 * The three digests of a layer build: the blob (compressed), the diff
 * (uncompressed) and each span. Inflation keeps one core busy, so for
 * large layers the hashing (a third of the work) runs on a worker thread.
 */
import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

export interface LayerHashes {
  blob: string;
  diff: string;
  spans: Buffer[];
}

export interface LayerHasher {
  blob(chunk: Buffer): void;
  data(chunk: Buffer): void;
  /** the following data belongs to a new span */
  cut(): void;
  /** a provisional cut here: hash on as if there were one and as if there were none, until keep() or drop() */
  fork(): void;
  /** the provisional cut stands: the span before it ends where fork() was called */
  keep(): void;
  /** there is no cut at the fork */
  drop(): void;
  finish(): Promise<LayerHashes>;
}

export class InlineHasher implements LayerHasher {
  private readonly blobHash = createHash('sha256');
  private readonly diffHash = createHash('sha256');
  private span: Hash | undefined;
  /** while a cut is provisional: the span up to the fork, and the span from it */
  private forked: { before: Hash; after: Hash } | undefined;
  private readonly spans: Buffer[] = [];

  blob(chunk: Buffer): void {
    this.blobHash.update(chunk);
  }

  data(chunk: Buffer): void {
    this.diffHash.update(chunk);
    this.span?.update(chunk);
    this.forked?.after.update(chunk);
  }

  cut(): void {
    if (this.span) this.spans.push(this.span.digest());
    this.span = createHash('sha256');
  }

  fork(): void {
    if (this.span) this.forked = { before: this.span.copy(), after: createHash('sha256') };
  }

  keep(): void {
    if (!this.forked) return;
    this.spans.push(this.forked.before.digest());
    this.span = this.forked.after;
    this.forked = undefined;
  }

  drop(): void {
    this.forked = undefined;
  }

  async finish(): Promise<LayerHashes> {
    if (this.span) this.spans.push(this.span.digest());
    this.span = undefined;
    return { blob: `sha256:${this.blobHash.digest('hex')}`, diff: `sha256:${this.diffHash.digest('hex')}`, spans: this.spans };
  }
}

type Mark = 'c' | 'f' | 'k' | 'x';

const WORKER = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const blob = createHash('sha256');
const diff = createHash('sha256');
let span;
let forked;
const spans = [];
const update = (d) => { diff.update(d); if (span) span.update(d); if (forked) forked.after.update(d); };
const mark = (t) => {
  if (t === 'c') { if (span) spans.push(span.digest()); span = createHash('sha256'); }
  else if (t === 'f') { if (span) forked = { before: span.copy(), after: createHash('sha256') }; }
  else if (t === 'k') { if (forked) { spans.push(forked.before.digest()); span = forked.after; forked = undefined; } }
  else if (t === 'x') forked = undefined;
};
parentPort.on('message', (m) => {
  if (m.t === 'b') blob.update(m.d);
  else if (m.t === 'd') {
    // marks apply at their offset in this batch, in order
    let at = 0;
    for (const [offset, t] of m.m) { if (offset > at) update(m.d.subarray(at, offset)); at = offset; mark(t); }
    if (at < m.d.length) update(m.d.subarray(at));
  }
  else if (m.t === 'e') {
    if (span) spans.push(span.digest());
    parentPort.postMessage({ t: 'e', blob: blob.digest('hex'), diff: diff.digest('hex'), spans });
    return;
  }
  // the buffer goes back to be filled again: fresh memory costs page faults, reused memory does not
  if (m.d.byteLength > 0) parentPort.postMessage({ t: 'r', b: m.d.buffer }, [m.d.buffer]);
});
`;

const BATCH = 4 << 20;

/**
 * Hashes on a worker thread. Blob and uncompressed bytes are copied into 4 MiB buffers that are
 * transferred to the worker and come back to be filled again (fresh memory would cost a page fault
 * per 4 KiB; each message costs the sending thread a wake-up of the worker, so they are few); span
 * marks (cut, fork, keep, drop) travel inside the batch message with the offset they apply at, so
 * a mark costs no extra message and no new buffer.
 */
export class WorkerHasher implements LayerHasher {
  private readonly worker: Worker;
  private batch: Uint8Array | undefined;
  private fill = 0;
  private blobBatch: Uint8Array | undefined;
  private blobFill = 0;
  private marks: Array<[number, Mark]> = [];
  private readonly free: ArrayBuffer[] = [];
  private result: ((r: { blob: string; diff: string; spans: Uint8Array[] }) => void) | undefined;

  constructor() {
    this.worker = new Worker(WORKER, { eval: true });
    this.worker.on('message', (m: { t: 'r'; b: ArrayBuffer } | { t: 'e'; blob: string; diff: string; spans: Uint8Array[] }) => {
      if (m.t === 'r') {
        if (m.b.byteLength === BATCH) this.free.push(m.b);
      } else {
        this.result?.(m);
      }
    });
    // An abandoned build (stream error) must not keep the process alive; finish() refs it.
    this.worker.unref();
  }

  private buffer(): Uint8Array {
    return new Uint8Array(this.free.pop() ?? Buffer.allocUnsafeSlow(BATCH).buffer, 0, BATCH);
  }

  blob(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      this.blobBatch ??= this.buffer();
      const n = Math.min(BATCH - this.blobFill, chunk.length - pos);
      this.blobBatch.set(chunk.subarray(pos, pos + n), this.blobFill);
      this.blobFill += n;
      pos += n;
      if (this.blobFill === BATCH) this.flushBlob();
    }
  }

  private flushBlob(): void {
    if (this.blobBatch === undefined || this.blobFill === 0) return;
    const d = this.blobBatch.subarray(0, this.blobFill);
    this.worker.postMessage({ t: 'b', d }, [d.buffer as ArrayBuffer]);
    this.blobBatch = undefined;
    this.blobFill = 0;
  }

  data(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      // not zero-filled: every byte sent is written first
      this.batch ??= this.buffer();
      const n = Math.min(BATCH - this.fill, chunk.length - pos);
      this.batch.set(chunk.subarray(pos, pos + n), this.fill);
      this.fill += n;
      pos += n;
      if (this.fill === BATCH) this.flush();
    }
  }

  cut(): void {
    this.marks.push([this.fill, 'c']);
  }

  fork(): void {
    this.marks.push([this.fill, 'f']);
  }

  keep(): void {
    this.marks.push([this.fill, 'k']);
  }

  drop(): void {
    this.marks.push([this.fill, 'x']);
  }

  async finish(): Promise<LayerHashes> {
    this.flushBlob();
    this.flush();
    const result = new Promise<{ blob: string; diff: string; spans: Uint8Array[] }>((resolve, reject) => {
      this.result = resolve;
      this.worker.once('error', reject);
    });
    this.worker.ref();
    this.worker.postMessage({ t: 'e' });
    try {
      const r = await result;
      return { blob: `sha256:${r.blob}`, diff: `sha256:${r.diff}`, spans: r.spans.map((s) => Buffer.from(s)) };
    } finally {
      await this.worker.terminate();
    }
  }

  private flush(): void {
    if (this.fill === 0 && this.marks.length === 0) return;
    const out = this.batch?.subarray(0, this.fill) ?? new Uint8Array(0);
    this.worker.postMessage({ t: 'd', d: out, m: this.marks }, out.byteLength > 0 ? [out.buffer as ArrayBuffer] : []);
    this.batch = undefined;
    this.fill = 0;
    this.marks = [];
  }
}
