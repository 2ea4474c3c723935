/** A scripted executor-protocol server for unit tests of the operation loop and what runs in it. */
import type { OpResultBody, Operation } from '@cryo/snapshot';
import type { OperationServer } from '../services/operation-loop';

/** A server that hands out the given batches of operations, then waits (until the poll is aborted); results go to `reports`. */
export class ScriptedServer implements OperationServer {
  readonly reports: Array<{ opId: string; body: OpResultBody }> = [];
  /** errors to throw from the next result() calls, in order */
  readonly resultFailures: Error[] = [];
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly batches: Operation[][]) {}

  async operations(_waitMs: number, signal?: AbortSignal): Promise<Operation[]> {
    const next = this.batches.shift();
    if (next !== undefined) return next;
    await new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      signal?.addEventListener('abort', () => resolve(), { once: true });
    });
    throw new Error('aborted');
  }

  async result(opId: string, body: OpResultBody): Promise<void> {
    const failure = this.resultFailures.shift();
    if (failure !== undefined) throw failure;
    this.reports.push({ opId, body });
  }

  /** Offer more operations to a loop that is waiting. */
  offer(batch: Operation[]): void {
    this.batches.push(batch);
    for (const wake of this.waiting.splice(0)) wake();
  }
}
