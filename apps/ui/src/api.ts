/**
 * The dashboard's client of the REST API (/v1). Types come from the API's zod schemas in
 * libs/snapshot (type-only imports: nothing of the server ships to the browser). The API key
 * travels only in the Authorization header, never in a URL.
 */
import type {
  CreateSandboxBody,
  CreateSnapshotBody,
  ErrorBody,
  ExecutorView,
  ForkResponse,
  ForkSandboxBody,
  ForkSnapshotBody,
  RestoreBody,
  RollbackBody,
  RollbackResponse,
  Sandbox,
  Snapshot,
} from '@cryo/snapshot';

export type { ExecutorView, ForkResponse, Progress, RestoreMode, Sandbox, Snapshot } from '@cryo/snapshot';

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** An answer other than 2xx: the server's error code and message, or what went wrong on the way. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface Credentials {
  apiKey: string;
  namespace: string;
}

/** How many rows a list page asks for (the API allows up to 500). */
export const LIST_LIMIT = 200;

export class CryoApi {
  constructor(private readonly credentials: Credentials, private readonly base = '') {}

  get namespace(): string {
    return this.credentials.namespace;
  }

  listSandboxes(): Promise<Page<Sandbox>> {
    return this.request('GET', this.ns(`/sandboxes?limit=${LIST_LIMIT}`));
  }

  createSandbox(body: CreateSandboxBody): Promise<{ sandbox_id: string; status: string }> {
    return this.request('POST', this.ns('/sandboxes'), body);
  }

  deleteSandbox(id: string): Promise<Sandbox> {
    return this.request('DELETE', this.ns(`/sandboxes/${enc(id)}`));
  }

  createSnapshot(sandboxId: string, body: CreateSnapshotBody): Promise<{ snapshot_id: string; status: string }> {
    return this.request('POST', this.ns(`/sandboxes/${enc(sandboxId)}/snapshots`), body);
  }

  listSnapshots(): Promise<Page<Snapshot>> {
    return this.request('GET', this.ns(`/snapshots?limit=${LIST_LIMIT}`));
  }

  setSnapshotTtl(id: string, ttlSecs: number): Promise<Snapshot> {
    return this.request('PATCH', this.ns(`/snapshots/${enc(id)}`), { ttl_secs: ttlSecs });
  }

  deleteSnapshot(id: string): Promise<Snapshot> {
    return this.request('DELETE', this.ns(`/snapshots/${enc(id)}`));
  }

  restoreSnapshot(id: string, body: RestoreBody): Promise<{ sandbox_id: string; status: string }> {
    return this.request('POST', this.ns(`/snapshots/${enc(id)}/restore`), body);
  }

  forkSnapshot(id: string, body: ForkSnapshotBody): Promise<ForkResponse> {
    return this.request('POST', this.ns(`/snapshots/${enc(id)}/fork`), body);
  }

  forkSandbox(id: string, body: ForkSandboxBody): Promise<ForkResponse> {
    return this.request('POST', this.ns(`/sandboxes/${enc(id)}/fork`), body);
  }

  rollbackSandbox(id: string, body: RollbackBody): Promise<RollbackResponse> {
    return this.request('POST', this.ns(`/sandboxes/${enc(id)}/rollback`), body);
  }

  listExecutors(): Promise<Page<ExecutorView>> {
    return this.request('GET', '/v1/executors');
  }

  private ns(path: string): string {
    return `/v1/namespaces/${enc(this.credentials.namespace)}${path}`;
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    // An empty key: a server without auth.api_keys (loopback only) takes requests without one.
    if (this.credentials.apiKey !== '') headers.authorization = `Bearer ${this.credentials.apiKey}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (err) {
      throw new ApiError(0, 'UNREACHABLE', `cannot reach the cryo server (${err instanceof Error ? err.message : String(err)})`);
    }
    const text = await response.text();
    const parsed = parseJson(text);
    if (!response.ok) throw errorOf(response.status, method, path, parsed, text);
    return parsed as T;
  }
}

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function errorOf(status: number, method: string, path: string, parsed: unknown, text: string): ApiError {
  if (isErrorBody(parsed)) return new ApiError(status, parsed.error.code, parsed.error.message);
  return new ApiError(status, `HTTP_${status}`, `${method} ${path} answered HTTP ${status}: ${text.slice(0, 200)}`);
}

function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== 'object' || value === null || !('error' in value)) return false;
  const error = value.error;
  return typeof error === 'object' && error !== null && 'code' in error && 'message' in error
    && typeof error.code === 'string' && typeof error.message === 'string';
}

const enc = encodeURIComponent;
