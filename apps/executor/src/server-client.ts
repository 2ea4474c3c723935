/** The executor's side of the internal protocol: it dials the server (works through NAT). */
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
  private readonly base: string;
  constructor(serverUrl: string, private readonly executorId: string, private readonly token: string) {
    this.base = serverUrl.replace(/\/+$/, '');
  }

  private async call<T>(method: 'GET' | 'POST', path: string, body: unknown, schema: ZodType<T>, timeoutMs: number, signal?: AbortSignal): Promise<T> {
    let res;
    try {
      res = await request(`${this.base}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        ...(signal === undefined ? {} : { signal }),
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
      throw new ServerError(`cannot reach cryo server at ${this.base} (${code})`, undefined);
    }
    const text = await res.body.text();
    if (res.statusCode >= 400) {
      throw new ServerError(`server answered ${res.statusCode} to ${method} ${path}: ${text.slice(0, 500)}`, res.statusCode);
    }
    return schema.parse(text === '' ? {} : JSON.parse(text));
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
