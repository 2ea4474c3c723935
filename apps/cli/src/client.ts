/**
 * A small typed client of cryo's public REST API (/v1). Every response is parsed with the zod
 * schemas of @cryo/snapshot, so a server that answers something else fails loudly here instead
 * of somewhere in the caller. Used by the `cryo` CLI, the end-to-end tests and the benchmarks.
 */
import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import {
  CreateSandboxResponseSchema,
  CreateSnapshotResponseSchema,
  ErrorBodySchema,
  ExecResultSchema,
  ExecutorViewSchema,
  ForkResponseSchema,
  NAMESPACE_PATTERN,
  RollbackResponseSchema,
  SandboxListItemSchema,
  SandboxSchema,
  SnapshotSchema,
  pageOf,
  type CreateSandboxBody,
  type CreateSnapshotBody,
  type ExecBody,
  type ExecResult,
  type ExecutorView,
  type ForkResponse,
  type ForkSandboxBody,
  type ForkSnapshotBody,
  type RestoreBody,
  type RollbackBody,
  type RollbackResponse,
  type Sandbox,
  type SandboxListItem,
  type SandboxStatus,
  type Snapshot,
  type SnapshotStatus,
} from '@cryo/snapshot';
import {
  CryoApiError,
  CryoClientError,
  CryoConnectionError,
  CryoResponseError,
} from './client-errors';
import { pollUntil, type WaitOptions } from './wait';

export const DEFAULT_SERVER = 'http://127.0.0.1:8900';
export const DEFAULT_NAMESPACE = 'default';

// Responses are parsed loose: fields a newer server adds survive, so `cryo --json` prints them.
const SandboxResponse = SandboxSchema.loose();
const SnapshotResponse = SnapshotSchema.loose();
const ExecutorResponse = ExecutorViewSchema.loose();
// List items leave out `command` (GET one sandbox for it).
const SandboxPage = pageOf(SandboxListItemSchema.loose()).loose();
const SnapshotPage = pageOf(SnapshotResponse).loose();
const CreateSandboxResponse = CreateSandboxResponseSchema.loose();
const CreateSnapshotResponse = CreateSnapshotResponseSchema.loose();
const ExecResponse = ExecResultSchema.loose();
const ExecutorPage = pageOf(ExecutorResponse).loose();
const ForkResponse = ForkResponseSchema.loose();
const RollbackResponse = RollbackResponseSchema.loose();
/** /healthz is not part of the /v1 schemas: `{status: "ok", version}`. */
const HealthResponse = z.object({ status: z.string(), version: z.string().optional() }).loose();

export type CreateSandboxResponse = z.infer<typeof CreateSandboxResponseSchema>;
export type CreateSnapshotResponse = z.infer<typeof CreateSnapshotResponseSchema>;
export type Health = z.infer<typeof HealthResponse>;

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface ListOptions {
  /** Page size (1..500, server default 50). With the listAll* methods: the size of each page. */
  limit?: number;
  cursor?: string;
  status?: string;
  /** Only items carrying every one of these labels. */
  labels?: Record<string, string>;
}

export interface SnapshotListOptions extends ListOptions {
  /** Only the snapshots of this sandbox (GET /sandboxes/{id}/snapshots). */
  sandboxId?: string | undefined;
  /** Only the snapshots named this tag. */
  tag?: string | undefined;
}

/** `tag:NAME` names a snapshot by its tag wherever a snapshot id is taken (resolveSnapshotId). */
export const TAG_REF_PREFIX = 'tag:';

export interface CryoClientOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:8900. */
  server?: string;
  /** Sent as `Authorization: Bearer <key>`; never logged or put in an error message. */
  apiKey?: string;
  namespace?: string;
  /** How long to wait for response headers (default 60 s; exec waits its own timeout longer). */
  timeoutMs?: number;
  /** undici dispatcher, e.g. an Agent with custom connection limits. */
  dispatcher?: Dispatcher;
}

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';
type Query = Record<string, string | number | string[] | undefined>;

const SANDBOX_SETTLED: readonly SandboxStatus[] = ['running', 'terminated'];
const SNAPSHOT_SETTLED: readonly SnapshotStatus[] = ['active', 'failed', 'expired', 'deleted'];

export class CryoClient {
  readonly server: string;
  readonly namespace: string;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;
  private readonly dispatcher: Dispatcher | undefined;

  constructor(options: CryoClientOptions = {}) {
    const server = options.server ?? DEFAULT_SERVER;
    let url: URL;
    try {
      url = new URL(server);
    } catch {
      throw new CryoClientError('INVALID_SERVER_URL', `server URL "${server}" is not a valid URL (expected e.g. ${DEFAULT_SERVER})`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new CryoClientError('INVALID_SERVER_URL', `server URL "${server}" must start with http:// or https://`);
    }
    this.server = server.replace(/\/+$/, '');
    const namespace = options.namespace ?? DEFAULT_NAMESPACE;
    if (!NAMESPACE_PATTERN.test(namespace)) {
      throw new CryoClientError('INVALID_NAMESPACE', `namespace "${namespace}" must match ${NAMESPACE_PATTERN.source}`);
    }
    this.namespace = namespace;
    this.apiKey = options.apiKey === '' ? undefined : options.apiKey;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.dispatcher = options.dispatcher;
  }

  /** The same server and key, another namespace. */
  withNamespace(namespace: string): CryoClient {
    return new CryoClient({
      server: this.server,
      apiKey: this.apiKey,
      namespace,
      timeoutMs: this.timeoutMs,
      dispatcher: this.dispatcher,
    });
  }

  // --- operations ---------------------------------------------------------------------------

  health(): Promise<Health> {
    return this.call(HealthResponse, 'GET', '/healthz');
  }

  /** Every executor the server knows (one page: next_cursor is null). Not namespaced. */
  listExecutors(): Promise<Page<ExecutorView>> {
    return this.call(ExecutorPage, 'GET', '/v1/executors');
  }

  // --- sandboxes ----------------------------------------------------------------------------

  createSandbox(body: CreateSandboxBody): Promise<CreateSandboxResponse> {
    return this.call(CreateSandboxResponse, 'POST', this.ns('/sandboxes'), { body });
  }

  listSandboxes(options: ListOptions = {}): Promise<Page<SandboxListItem>> {
    return this.call(SandboxPage, 'GET', this.ns('/sandboxes'), { query: listQuery(options) });
  }

  listAllSandboxes(options: Omit<ListOptions, 'cursor'> = {}): Promise<SandboxListItem[]> {
    return collectPages((cursor) => this.listSandboxes({ ...options, cursor }));
  }

  getSandbox(id: string): Promise<Sandbox> {
    return this.call(SandboxResponse, 'GET', this.ns(`/sandboxes/${enc(id)}`));
  }

  /** Terminates the sandbox (outcome user) and answers it; idempotent on a terminated sandbox. */
  deleteSandbox(id: string): Promise<Sandbox> {
    return this.call(SandboxResponse, 'DELETE', this.ns(`/sandboxes/${enc(id)}`));
  }

  /** Runs a command and answers when it has finished; the HTTP wait outlasts `timeout_secs`. */
  exec(id: string, body: ExecBody): Promise<ExecResult> {
    const timeoutMs = body.timeout_secs === undefined ? 0 : (body.timeout_secs + 30) * 1000;
    return this.call(ExecResponse, 'POST', this.ns(`/sandboxes/${enc(id)}/exec`), { body, timeoutMs });
  }

  /** Polls until the sandbox is running or terminated (or `until` says otherwise). */
  waitForSandbox(
    id: string,
    options: WaitOptions<Sandbox> & { until?: readonly SandboxStatus[] } = {},
  ): Promise<Sandbox> {
    const until = options.until ?? SANDBOX_SETTLED;
    return pollUntil(() => this.getSandbox(id), (sb) => until.includes(sb.status), {
      ...options,
      describe: (sb) =>
        `sandbox ${id} is ${sb.status}${sb.pending_reason ? ` (${sb.pending_reason})` : ''}, waited for ${until.join(' or ')}`,
    });
  }

  // --- snapshots ----------------------------------------------------------------------------

  createSnapshot(sandboxId: string, body: CreateSnapshotBody = {}): Promise<CreateSnapshotResponse> {
    return this.call(CreateSnapshotResponse, 'POST', this.ns(`/sandboxes/${enc(sandboxId)}/snapshots`), { body });
  }

  listSnapshots(options: SnapshotListOptions = {}): Promise<Page<Snapshot>> {
    const path = options.sandboxId === undefined ? '/snapshots' : `/sandboxes/${enc(options.sandboxId)}/snapshots`;
    return this.call(SnapshotPage, 'GET', this.ns(path), { query: { ...listQuery(options), tag: options.tag } });
  }

  /**
   * A snapshot id, or `tag:NAME` resolved to the snapshot named NAME: the creating or active one
   * (names are unique among those), else the newest that had the name (so the server answers
   * what became of it: 410 expired, or a fallback with on_expired). An unknown name is an error.
   */
  async resolveSnapshotId(ref: string): Promise<string> {
    if (!ref.startsWith(TAG_REF_PREFIX)) return ref;
    const tag = ref.slice(TAG_REF_PREFIX.length);
    if (tag === '') throw new CryoClientError('INVALID_SNAPSHOT_REF', `"${ref}" names no tag; write tag:NAME`);
    const { items } = await this.listSnapshots({ tag, limit: 50 });
    const live = items.find((s) => s.status === 'active' || s.status === 'creating');
    const chosen = live ?? items[0];
    if (chosen === undefined) {
      throw new CryoClientError('SNAPSHOT_TAG_NOT_FOUND', `no snapshot in namespace ${this.namespace} is tagged ${tag}`);
    }
    return chosen.snapshot_id;
  }

  listAllSnapshots(options: Omit<SnapshotListOptions, 'cursor'> = {}): Promise<Snapshot[]> {
    return collectPages((cursor) => this.listSnapshots({ ...options, cursor }));
  }

  getSnapshot(id: string): Promise<Snapshot> {
    return this.call(SnapshotResponse, 'GET', this.ns(`/snapshots/${enc(id)}`));
  }

  /** Sets the TTL; the server recomputes expires_at from created_at. 0 = never expires. */
  setSnapshotTtl(id: string, ttlSecs: number): Promise<Snapshot> {
    return this.call(SnapshotResponse, 'PATCH', this.ns(`/snapshots/${enc(id)}`), { body: { ttl_secs: ttlSecs } });
  }

  /** 202 with the snapshot (deleting): the image is deleted from the registry and executors in the background. */
  deleteSnapshot(id: string): Promise<Snapshot> {
    return this.call(SnapshotResponse, 'DELETE', this.ns(`/snapshots/${enc(id)}`));
  }

  /** Starts a new sandbox from the snapshot; answers at once with the pending sandbox. */
  restoreSnapshot(id: string, body: RestoreBody = {}): Promise<CreateSandboxResponse> {
    return this.call(CreateSandboxResponse, 'POST', this.ns(`/snapshots/${enc(id)}/restore`), { body });
  }

  /** Starts `count` sandboxes from the snapshot, spread over executors; answers at once with them (pending). */
  forkSnapshot(id: string, body: ForkSnapshotBody): Promise<ForkResponse> {
    return this.call(ForkResponse, 'POST', this.ns(`/snapshots/${enc(id)}/fork`), { body });
  }

  /** Snapshots a running sandbox and forks it; the forks start once the snapshot is active. */
  forkSandbox(id: string, body: ForkSandboxBody): Promise<ForkResponse> {
    return this.call(ForkResponse, 'POST', this.ns(`/sandboxes/${enc(id)}/fork`), { body });
  }

  /** Rolls a running sandbox back in place to a snapshot; it is `restoring` until the new container runs. */
  rollbackSandbox(id: string, body: RollbackBody): Promise<RollbackResponse> {
    return this.call(RollbackResponse, 'POST', this.ns(`/sandboxes/${enc(id)}/rollback`), { body });
  }

  /** Polls until the snapshot is active, failed, expired or deleted (or `until` says otherwise). */
  waitForSnapshot(
    id: string,
    options: WaitOptions<Snapshot> & { until?: readonly SnapshotStatus[] } = {},
  ): Promise<Snapshot> {
    const until = options.until ?? SNAPSHOT_SETTLED;
    return pollUntil(() => this.getSnapshot(id), (snap) => until.includes(snap.status), {
      ...options,
      describe: (snap) =>
        `snapshot ${id} is ${snap.status}${snap.progress ? ` (${snap.progress.phase})` : ''}, waited for ${until.join(' or ')}`,
    });
  }

  // --- transport ----------------------------------------------------------------------------

  private ns(path: string): string {
    return `/v1/namespaces/${enc(this.namespace)}${path}`;
  }

  private async call<S extends z.ZodType>(
    schema: S,
    method: Method,
    path: string,
    options: { body?: unknown; query?: Query; timeoutMs?: number } = {},
  ): Promise<z.output<S>> {
    const target = path + queryString(options.query);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    const timeout = options.timeoutMs ?? this.timeoutMs;

    let status: number;
    let text: string;
    try {
      const res = await request(this.server + target, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        headersTimeout: timeout,
        bodyTimeout: timeout,
        dispatcher: this.dispatcher,
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      throw this.connectionError(err, timeout);
    }

    const json = parseJson(text);
    if (status < 200 || status > 299) throw apiError(status, json, text, method, path);
    const parsed = schema.safeParse(json.ok ? json.value : null);
    if (!parsed.success) {
      const issues = parsed.error.issues
        .slice(0, 3)
        .map((issue) => `${issue.path.join('.') || '(body)'}: ${issue.message}`)
        .join('; ');
      throw new CryoResponseError(
        `unexpected answer from ${this.server} to ${method} ${path} (HTTP ${status}): ${json.ok ? issues : 'not JSON'}`,
      );
    }
    return parsed.data;
  }

  private connectionError(err: unknown, timeoutMs: number): CryoConnectionError {
    const code = errorCode(err) ?? 'ECONNECTION';
    const message =
      code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
        ? `cryo server at ${this.server} did not answer within ${Math.round(timeoutMs / 1000)}s`
        : `cannot reach cryo server at ${this.server} (${code})`;
    return new CryoConnectionError(this.server, code, message, err);
  }
}

/** Follows next_cursor from `cursor` (or the first page) to the last page; all items in order. */
export async function collectPages<T>(
  fetchPage: (cursor: string | undefined) => Promise<Page<T>>,
  start?: string,
): Promise<T[]> {
  const items: T[] = [];
  let cursor = start;
  for (;;) {
    const page = await fetchPage(cursor);
    items.push(...page.items);
    if (page.next_cursor === null || page.next_cursor === '' || page.next_cursor === cursor) return items;
    cursor = page.next_cursor;
  }
}

function listQuery(options: ListOptions): Query {
  return {
    limit: options.limit,
    cursor: options.cursor,
    status: options.status,
    label: options.labels && Object.entries(options.labels).map(([k, v]) => `${k}=${v}`),
  };
}

function queryString(query: Query | undefined): string {
  if (query === undefined) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) params.append(key, String(item));
  }
  const s = params.toString();
  return s === '' ? '' : `?${s}`;
}

const enc = encodeURIComponent;

type JsonResult = { ok: true; value: unknown } | { ok: false };

function parseJson(text: string): JsonResult {
  // An empty body parses as null, so that a schema says whether it is acceptable.
  if (text.trim() === '') return { ok: true, value: null };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

function apiError(status: number, json: JsonResult, text: string, method: string, path: string): CryoApiError {
  const body = json.ok ? ErrorBodySchema.safeParse(json.value) : undefined;
  if (body?.success) {
    const { code, message, details, request_id } = body.data.error;
    return new CryoApiError({ status, code, message, details, requestId: request_id, method, path });
  }
  // Not cryo's error shape: a proxy, or not a cryo server at all. Show the start of what came.
  const snippet = text.trim().replace(/\s+/g, ' ').slice(0, 200);
  return new CryoApiError({
    status,
    code: `HTTP_${status}`,
    message: `server answered HTTP ${status} to ${method} ${path}${snippet ? `: ${snippet}` : ''}`,
    method,
    path,
  });
}

/** The errno-style code of a network error (undici puts it on the error or on its cause). */
function errorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if ('code' in e && typeof e.code === 'string') return e.code;
    // AggregateError (happy eyeballs: one per address tried)
    if (e instanceof AggregateError) {
      const first: unknown = e.errors[0];
      if (first instanceof Error && 'code' in first && typeof first.code === 'string') return first.code;
    }
  }
  return undefined;
}
