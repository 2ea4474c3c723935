/**
 * The executor's side of the internal protocol: it dials the server (works through NAT). With
 * several server replicas it talks to one at a time and moves to the next when the current one
 * does not answer (connection refused or reset, timeout) or answers 503; every call works through
 * any replica, so the move is invisible to the operation loop and the heartbeat.
 */
import type { Logger } from 'pino';
import { request } from 'undici';
import { z, type ZodType } from 'zod';
import {
  HeartbeatResponseSchema,
  OperationsResponseSchema,
  type HeartbeatBody,
  type HeartbeatResponse,
  type OpResultBody,
  type Operation,
  type Progress,
} from '@cryo/snapshot';

export class ServerError extends Error {
  constructor(message: string, readonly status: number | undefined) {
    super(message);
    this.name = 'ServerError';
  }
}

export class ServerClient {
  private readonly bases: string[];
  private current = 0;

  constructor(serverUrls: string | readonly string[], private readonly executorId: string, private readonly token: string, private readonly log?: Logger) {
    this.bases = (typeof serverUrls === 'string' ? [serverUrls] : [...serverUrls]).map((u) => u.replace(/\/+$/, ''));
    if (this.bases.length === 0) throw new Error('no server URL');
  }

  /** The replica calls go to now. */
  get serverUrl(): string {
    return this.bases[this.current] ?? '';
  }

  /** Tries the current replica, then each other one once, before giving up. */
  private async call<T>(method: 'GET' | 'POST', path: string, body: unknown, schema: ZodType<T>, timeoutMs: number, signal?: AbortSignal): Promise<T> {
    for (let tried = 1; ; tried += 1) {
      const base = this.serverUrl;
      const last = tried >= this.bases.length;
      let res;
      try {
        res = await request(`${base}${path}`, {
          method,
          headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          body: body === undefined ? undefined : JSON.stringify(body),
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
          ...(signal === undefined ? {} : { signal }),
        });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
        if (!last && signal?.aborted !== true) {
          this.next(base, String(code));
          continue;
        }
        throw new ServerError(`cannot reach cryo server at ${base} (${code})`, undefined);
      }
      const text = await res.body.text();
      if (res.statusCode === 503 && !last) {
        this.next(base, 'HTTP 503');
        continue;
      }
      if (res.statusCode >= 400) {
        throw new ServerError(`server answered ${res.statusCode} to ${method} ${path}: ${text.slice(0, 500)}`, res.statusCode);
      }
      return schema.parse(text === '' ? {} : JSON.parse(text));
    }
  }

  private next(failed: string, why: string): void {
    if (this.serverUrl !== failed) return; // another call moved on already
    this.current = (this.current + 1) % this.bases.length;
    this.log?.warn({ failed, reason: why, next: this.serverUrl }, 'cryo server replica not answering; moving to the next');
  }

  heartbeat(body: HeartbeatBody): Promise<HeartbeatResponse> {
    return this.call('POST', `/internal/v1/executors/${encodeURIComponent(this.executorId)}/heartbeat`, body, HeartbeatResponseSchema, 10_000);
  }

  async operations(waitMs: number, signal?: AbortSignal): Promise<Operation[]> {
    const res = await this.call('GET', `/internal/v1/executors/${encodeURIComponent(this.executorId)}/operations?wait_ms=${waitMs}`, undefined, OperationsResponseSchema, waitMs + 15_000, signal);
    return res.operations;
  }

  async progress(opId: string, progress: Progress): Promise<void> {
    await this.call('POST', `/internal/v1/operations/${encodeURIComponent(opId)}/progress`, progress, AnyBody, 10_000);
  }

  async result(opId: string, result: OpResultBody): Promise<void> {
    await this.call('POST', `/internal/v1/operations/${encodeURIComponent(opId)}/result`, result, AnyBody, 15_000);
  }
}

const AnyBody = z.unknown();
