/** A tiny HTTP server for unit tests of the client and the CLI: records requests, answers from a handler. */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  body: unknown;
}

export interface FakeAnswer {
  status?: number;
  /** Sent as JSON; a string is sent as it is (to fake proxies and broken servers). */
  body?: unknown;
}

export type FakeHandler = (req: RecordedRequest) => FakeAnswer | Promise<FakeAnswer>;

export interface FakeServer {
  url: string;
  requests: RecordedRequest[];
  /** Replace the handler (tests set it per case). */
  handle(handler: FakeHandler): void;
  close(): Promise<void>;
}

export async function startFakeServer(handler: FakeHandler = () => ({ status: 404 })): Promise<FakeServer> {
  let current = handler;
  const requests: RecordedRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const text = Buffer.concat(chunks).toString('utf8');
      const recorded: RecordedRequest = {
        method: req.method ?? 'GET',
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body: text === '' ? undefined : JSON.parse(text),
      };
      requests.push(recorded);
      Promise.resolve(current(recorded)).then(
        (answer) => {
          const status = answer.status ?? 200;
          if (answer.body === undefined) {
            res.writeHead(status).end();
            return;
          }
          const raw = typeof answer.body === 'string';
          res
            .writeHead(status, { 'content-type': raw ? 'text/html' : 'application/json' })
            .end(raw ? answer.body : JSON.stringify(answer.body));
        },
        (err: unknown) => res.writeHead(599).end(String(err)),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('fake server is not listening on a port');
  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    handle: (next) => {
      current = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A local port nobody listens on (bound, noted, closed), for connection-refused cases. */
export async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return address.port;
}

/** A full sandbox as the server would send it. */
export function sandboxFixture(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    sandbox_id: 'sbx-aaaa1111bbbb',
    namespace: 'default',
    image: 'busybox:latest',
    command: ['sleep', '3600'],
    labels: {},
    resources: {},
    timeout_secs: 0,
    status: 'running',
    pending_reason: null,
    outcome: null,
    executor_id: 'exec-a',
    restored_from_snapshot: null,
    restore_mode: null,
    progress: null,
    created_at: '2025-01-01T00:00:00.000Z',
    started_at: '2025-01-01T00:00:01.000Z',
    terminated_at: null,
    expires_at: null,
    ...overrides,
  };
}

/** A full snapshot as the server would send it. */
export function snapshotFixture(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    snapshot_id: 'snap-cccc2222dddd',
    namespace: 'default',
    sandbox_id: 'sbx-aaaa1111bbbb',
    status: 'active',
    error: null,
    tag: null,
    labels: {},
    image_ref: '127.0.0.1:5001/cryo/snapshots:sb-sbx-aaaa1111bbbb-snap-cccc2222dddd',
    digest: 'sha256:' + 'ab'.repeat(32),
    size_bytes: 5 * 1024 * 1024,
    base_image: 'busybox:latest',
    created_at: '2025-01-01T00:00:00.000Z',
    ttl_secs: 3600,
    expires_at: '2025-01-01T01:00:00.000Z',
    expired_at: null,
    deleted_at: null,
    executor_id: 'exec-a',
    timings: { pause_ms: 15, commit_ms: 70, push_ms: 1200, index_ms: null, precopy_ms: null, flatten_ms: null },
    layers: 3,
    flattened: false,
    progress: null,
    clip_index_ref: null,
    clip_error: null,
    capture: null,
    excluded_mounts: [],
    ttl_from: 'created',
    last_used_at: null,
    keep_last: null,
    deleted_reason: null,
    ...overrides,
  };
}
