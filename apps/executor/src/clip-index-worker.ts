/**
 * The thread clip indexes are built on (clip-index-job.ts), so the executor's event loop keeps
 * answering heartbeats and long polls while a layer is inflated. One long-lived worker, started
 * at the first job (TypeScript is compiled on the thread once, ~1 s), jobs one at a time.
 */
import { Worker } from 'node:worker_threads';
import { ClipError, type ClipErrorCode } from '@cryo/clip';
import { RegistryError, type RegistryErrorCode } from '@cryo/registry-auth';
import type { IndexJob, IndexJobResult } from './clip-index-job';

const BOOT = `
const { parentPort, workerData } = require('node:worker_threads');
const ready = (async () => {
  const { register } = await import(workerData.tsx);
  register();
  return import(workerData.job);
})();
parentPort.on('message', async ({ id, job }) => {
  try {
    const { runIndexJob } = await ready;
    const result = await runIndexJob(job);
    const index = new Uint8Array(result.index.length); // its own ArrayBuffer, so it can move
    index.set(result.index);
    parentPort.postMessage({ id, result: { ...result, index } }, [index.buffer]);
  } catch (err) {
    const e = err || {};
    parentPort.postMessage({ id, error: { message: e.message || String(err), name: e.name, code: e.code, host: e.host, status: e.status, registryCode: e.registryCode } });
  }
});
`;

interface ThreadError {
  message: string;
  name?: string;
  code?: string;
  host?: string;
  status?: number;
  registryCode?: string;
}

interface Reply {
  id: number;
  result?: Omit<IndexJobResult, 'index'> & { index: Uint8Array };
  error?: ThreadError;
}

/** The error the thread threw, as the class it was (the executor's error boundary maps by class). */
export function reviveError(e: ThreadError | undefined): Error {
  if (e?.name === 'ClipError' && e.code !== undefined) return new ClipError(e.code as ClipErrorCode, e.message);
  if (e?.name === 'RegistryError' && e.code !== undefined && e.host !== undefined) {
    return new RegistryError(e.code as RegistryErrorCode, e.message, { host: e.host, status: e.status, registryCode: e.registryCode });
  }
  return new Error(e?.message ?? 'the clip index job failed');
}

export class ClipIndexWorker {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (r: IndexJobResult) => void; reject: (e: Error) => void }>();
  private queue: Promise<unknown> = Promise.resolve();

  private start(): Worker {
    if (this.worker !== undefined) return this.worker;
    const worker = new Worker(BOOT, {
      eval: true,
      workerData: {
        tsx: import.meta.resolve('tsx/esm/api'),
        job: new URL('./clip-index-job.ts', import.meta.url).href,
      },
    });
    worker.unref();
    worker.on('message', (reply: Reply) => {
      const job = this.pending.get(reply.id);
      if (job === undefined) return;
      this.pending.delete(reply.id);
      if (reply.result !== undefined) job.resolve({ ...reply.result, index: Buffer.from(reply.result.index.buffer, reply.result.index.byteOffset, reply.result.index.byteLength) });
      else job.reject(reviveError(reply.error));
    });
    const failAll = (err: Error): void => {
      for (const job of this.pending.values()) job.reject(err);
      this.pending.clear();
      this.worker = undefined;
    };
    worker.on('error', failAll);
    worker.on('exit', (code) => failAll(new Error(`the clip index thread exited (${code})`)));
    this.worker = worker;
    return worker;
  }

  /** Start the thread now (it compiles for about a second), so the first job does not wait for it. */
  warm(): void {
    this.start();
  }

  /** Build one index on the thread; jobs run one after another. */
  run(job: IndexJob): Promise<IndexJobResult> {
    const result = this.queue.then(() => new Promise<IndexJobResult>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      const worker = this.start();
      worker.ref(); // a job in flight keeps the process alive
      worker.postMessage({ id, job });
    }).finally(() => this.worker?.unref()));
    this.queue = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
    this.worker = undefined;
  }
}
