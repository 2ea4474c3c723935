/**
 * Long-polls the server for leased operations and runs each once. Ops run concurrently (an exec
 * must not wait behind a push); the same op id twice does the work once, also across restarts.
 */
import type { Logger } from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';
import type { OpResultBody, Operation } from '@cryo/snapshot';
import { toCryoError } from '../errors';
import { ServerError, type ServerClient } from '../server-client';
import type { OpJournal } from '../state/op-journal';

/** The part of the server the loop talks to. */
export type OperationServer = Pick<ServerClient, 'operations' | 'result'>;

export type OperationHandler = (op: Operation, log: Logger) => Promise<unknown>;

/** Server answers to a result that sending it again cannot change. */
const REFUSED_FOREVER = new Set([400, 413, 422]);

export class OperationLoop {
  private readonly inFlight = new Map<string, Promise<void>>();
  private stopped = false;
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;

  constructor(
    private readonly server: OperationServer,
    private readonly journal: OpJournal,
    private readonly handle: OperationHandler,
    private readonly log: Logger,
    private readonly waitMs = 20_000,
  ) {}

  start(): void {
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.running;
    await Promise.allSettled(this.inFlight.values());
  }

  private async loop(): Promise<void> {
    let backoff = 500;
    while (!this.stopped) {
      try {
        const ops = await this.server.operations(this.waitMs, this.abort.signal);
        backoff = 500;
        for (const op of ops) this.dispatch(op);
      } catch (err) {
        if (this.stopped) return;
        this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'operation poll failed; retrying');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  }

  private dispatch(op: Operation): void {
    if (this.inFlight.has(op.op_id)) return; // a re-offered lease of work already under way
    const record = this.journal.get(op.op_id);
    if (record?.state === 'done') {
      this.inFlight.set(op.op_id, this.report(op, record.result).finally(() => this.inFlight.delete(op.op_id)));
      return;
    }
    const sandboxId = 'sandbox_id' in op.payload ? op.payload.sandbox_id : null;
    this.journal.started(op.op_id, op.kind, sandboxId);
    const log = this.log.child({ op_id: op.op_id, kind: op.kind, ...(sandboxId === null ? {} : { sandbox_id: sandboxId }),
      ...('snapshot_id' in op.payload ? { snapshot_id: op.payload.snapshot_id } : {}) });
    const work = this.run(op, log).finally(() => this.inFlight.delete(op.op_id));
    this.inFlight.set(op.op_id, work);
  }

  private async run(op: Operation, log: Logger): Promise<void> {
    const started = performance.now();
    let result: OpResultBody;
    try {
      result = { ok: true, result: await this.handle(op, log) };
      log.info({ ms: Math.round(performance.now() - started) }, 'operation done');
    } catch (err) {
      // The error boundary: library and daemon errors become stable codes and actionable messages.
      const failure = toCryoError(err);
      result = { ok: false, error: { code: failure.code, message: failure.message } };
      log.warn({ code: failure.code, error: failure.message, ...(failure === err ? {} : { cause: err instanceof Error ? err.message : String(err) }) }, 'operation failed');
    }
    this.journal.finished(op.op_id, op.kind, result, false);
    await this.report(op, result);
  }

  /**
   * Deliver a result, retrying while the server is unreachable or failing; the journal keeps it
   * meanwhile. A result the server refuses as malformed (400), too large (413) or unprocessable
   * (422) would be refused forever: it is replaced once by a failure saying so, so the operation
   * still ends.
   */
  async report(op: Pick<Operation, 'op_id' | 'kind'>, result: OpResultBody): Promise<void> {
    let delay = 250;
    let body = result;
    let replaced = false;
    for (;;) {
      try {
        await this.server.result(op.op_id, body);
        this.journal.finished(op.op_id, op.kind, body, true);
        return;
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ServerError && err.status !== undefined && REFUSED_FOREVER.has(err.status)) {
          if (!replaced) {
            replaced = true;
            this.log.error({ op_id: op.op_id, err: err.message }, 'the server refused this result; reporting the operation as failed');
            body = { ok: false, error: { code: 'INTERNAL', message: `the executor's ${op.kind} result was refused by the server: ${err.message.slice(0, 2000)}` } };
            this.journal.finished(op.op_id, op.kind, body, false);
            continue;
          }
          this.log.error({ op_id: op.op_id, err: err.message }, 'the server refused the failure report too; giving up (the lease will expire)');
          this.journal.finished(op.op_id, op.kind, body, true);
          return;
        }
        this.log.warn({ op_id: op.op_id, err: err instanceof Error ? err.message : String(err) }, 'could not report result; retrying');
        await sleep(delay);
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }
}
