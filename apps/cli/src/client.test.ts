import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CryoClient } from './client';
import {
  CryoApiError,
  CryoClientError,
  CryoConnectionError,
  CryoResponseError,
  CryoWaitTimeoutError,
} from './client-errors';
import { closedPort, sandboxFixture, snapshotFixture, startFakeServer, type FakeServer } from './testing/fake-server';

let fake: FakeServer;
beforeAll(async () => {
  fake = await startFakeServer();
});
afterAll(() => fake.close());
beforeEach(() => {
  fake.requests.length = 0;
});

describe('CryoClient requests', () => {
  it('sends the API key as a bearer token and JSON bodies to namespaced routes', async () => {
    fake.handle(() => ({ status: 202, body: { sandbox_id: 'sbx-new000000001', status: 'pending' } }));
    const client = new CryoClient({ server: fake.url + '/', apiKey: 'sekrit', namespace: 'team-a' });
    const created = await client.createSandbox({ image: 'busybox', command: ['sleep', '1'], labels: { a: 'b' } });
    expect(created).toEqual({ sandbox_id: 'sbx-new000000001', status: 'pending' });
    const [req] = fake.requests;
    expect(req?.method).toBe('POST');
    expect(req?.path).toBe('/v1/namespaces/team-a/sandboxes');
    expect(req?.headers.authorization).toBe('Bearer sekrit');
    expect(req?.headers['content-type']).toBe('application/json');
    expect(req?.body).toEqual({ image: 'busybox', command: ['sleep', '1'], labels: { a: 'b' } });
  });

  it('sends no authorization header without a key', async () => {
    fake.handle(() => ({ body: { status: 'ok' } }));
    await new CryoClient({ server: fake.url }).health();
    expect(fake.requests[0]?.path).toBe('/healthz');
    expect(fake.requests[0]?.headers.authorization).toBeUndefined();
  });

  it('puts list filters in the query, one label parameter per label', async () => {
    fake.handle(() => ({ body: { items: [], next_cursor: null } }));
    await new CryoClient({ server: fake.url }).listSandboxes({
      limit: 5,
      cursor: 'c1',
      status: 'running',
      labels: { team: 'ml', tier: 'a=b' },
    });
    const req = fake.requests[0];
    expect(req?.path).toBe('/v1/namespaces/default/sandboxes');
    expect(req?.query.get('limit')).toBe('5');
    expect(req?.query.get('cursor')).toBe('c1');
    expect(req?.query.get('status')).toBe('running');
    expect(req?.query.getAll('label')).toEqual(['team=ml', 'tier=a=b']);
  });

  it('lists the snapshots of one sandbox under the sandbox route, and escapes ids', async () => {
    fake.handle(() => ({ body: { items: [snapshotFixture()], next_cursor: null } }));
    const page = await new CryoClient({ server: fake.url }).listSnapshots({ sandboxId: 'sbx-a/b' });
    expect(fake.requests[0]?.path).toBe('/v1/namespaces/default/sandboxes/sbx-a%2Fb/snapshots');
    expect(page.items[0]?.snapshot_id).toBe('snap-cccc2222dddd');
  });

  it('uses the documented route for every operation', async () => {
    const client = new CryoClient({ server: fake.url });
    fake.handle((req) => {
      if (req.path.endsWith('/exec')) return { body: { exit_code: 0, stdout: '', stderr: '' } };
      if (req.path.endsWith('/restore') || req.path.endsWith('/sandboxes')) return { status: 202, body: { sandbox_id: 'sbx-x', status: 'pending' } };
      if (req.path.endsWith('/snapshots') && req.method === 'POST') return { status: 202, body: { snapshot_id: 'snap-x', status: 'creating' } };
      if (req.path.includes('/snapshots/')) return { status: req.method === 'DELETE' ? 202 : 200, body: snapshotFixture() };
      if (req.path === '/v1/executors') return { body: { items: [], next_cursor: null } };
      return { body: sandboxFixture() };
    });
    await client.getSandbox('sbx-1');
    await client.deleteSandbox('sbx-1');
    await client.exec('sbx-1', { command: ['true'] });
    await client.createSnapshot('sbx-1', { ttl_secs: 60 });
    await client.getSnapshot('snap-1');
    await client.setSnapshotTtl('snap-1', 0);
    await client.deleteSnapshot('snap-1');
    await client.restoreSnapshot('snap-1', { mode: 'lazy' });
    await client.listExecutors();
    const ns = '/v1/namespaces/default';
    expect(fake.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      `GET ${ns}/sandboxes/sbx-1`,
      `DELETE ${ns}/sandboxes/sbx-1`,
      `POST ${ns}/sandboxes/sbx-1/exec`,
      `POST ${ns}/sandboxes/sbx-1/snapshots`,
      `GET ${ns}/snapshots/snap-1`,
      `PATCH ${ns}/snapshots/snap-1`,
      `DELETE ${ns}/snapshots/snap-1`,
      `POST ${ns}/snapshots/snap-1/restore`,
      'GET /v1/executors',
    ]);
    expect(fake.requests[5]?.body).toEqual({ ttl_secs: 0 });
    expect(fake.requests[7]?.body).toEqual({ mode: 'lazy' });
  });

  it('keeps fields a newer server adds (so --json prints them)', async () => {
    fake.handle(() => ({ body: sandboxFixture({ future_field: 42 }) }));
    const sandbox = await new CryoClient({ server: fake.url }).getSandbox('sbx-aaaa1111bbbb');
    expect(JSON.parse(JSON.stringify(sandbox))).toEqual(sandboxFixture({ future_field: 42 }));
  });

  it('lists executors as a page', async () => {
    const executor = {
      executor_id: 'exec-a',
      host: 'host-a',
      labels: {},
      state: 'ready',
      last_heartbeat_at: '2025-01-01T00:00:00.000Z',
      version: '0.1.0',
      capacity: { cpus: 2, memory_mb: 4096, max_sandboxes: 10 },
      capabilities: { lazy: true, lazy_unavailable_reason: null },
      sandboxes: 1,
      cached_snapshot_images: [],
    };
    fake.handle(() => ({ body: { items: [executor], next_cursor: null } }));
    const page = await new CryoClient({ server: fake.url }).listExecutors();
    expect(page.items.map((e) => e.executor_id)).toEqual(['exec-a']);
  });

  it('follows cursors through every page', async () => {
    fake.handle((req) => {
      const cursor = req.query.get('cursor');
      if (cursor === null) return { body: { items: [sandboxFixture({ sandbox_id: 'sbx-1' })], next_cursor: 'p2' } };
      if (cursor === 'p2') return { body: { items: [sandboxFixture({ sandbox_id: 'sbx-2' })], next_cursor: 'p3' } };
      return { body: { items: [sandboxFixture({ sandbox_id: 'sbx-3' })], next_cursor: null } };
    });
    const all = await new CryoClient({ server: fake.url }).listAllSandboxes({ limit: 1 });
    expect(all.map((sb) => sb.sandbox_id)).toEqual(['sbx-1', 'sbx-2', 'sbx-3']);
    expect(fake.requests.map((r) => r.query.get('limit'))).toEqual(['1', '1', '1']);
  });

  it('rejects a bad server URL or namespace before sending anything', () => {
    expect(() => new CryoClient({ server: 'localhost:8900' })).toThrow(/must start with http/);
    expect(() => new CryoClient({ server: 'not a url' })).toThrow(/not a valid URL/);
    expect(() => new CryoClient({ namespace: 'Team A' })).toThrow(CryoClientError);
  });
});

describe('CryoClient errors', () => {
  it("turns cryo's error body into a CryoApiError with code, details and request id", async () => {
    fake.handle(() => ({
      status: 409,
      body: { error: { code: 'CONFLICT', message: 'sandbox sbx-1 is pending', details: { status: 'pending' }, request_id: 'req-1' } },
    }));
    const err = await new CryoClient({ server: fake.url }).createSnapshot('sbx-1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CryoApiError);
    expect(err).toMatchObject({
      status: 409,
      code: 'CONFLICT',
      message: 'sandbox sbx-1 is pending',
      details: { status: 'pending' },
      requestId: 'req-1',
      method: 'POST',
      path: '/v1/namespaces/default/sandboxes/sbx-1/snapshots',
    });
  });

  it('reports an error answer in another shape by its HTTP status and the start of the body', async () => {
    fake.handle(() => ({ status: 502, body: '<html>\n<h1>Bad Gateway</h1></html>' }));
    const err = await new CryoClient({ server: fake.url }).getSandbox('sbx-1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CryoApiError);
    expect(err).toMatchObject({ status: 502, code: 'HTTP_502' });
    expect(String(err)).toContain('<html> <h1>Bad Gateway</h1></html>');
  });

  it('fails with CryoResponseError when a 2xx body does not match the schema', async () => {
    fake.handle(() => ({ body: sandboxFixture({ status: 'sleeping' }) }));
    const err = await new CryoClient({ server: fake.url }).getSandbox('sbx-1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CryoResponseError);
    expect(String(err)).toMatch(/unexpected answer .* GET \/v1\/namespaces\/default\/sandboxes\/sbx-1 \(HTTP 200\): status: /);
  });

  it('fails with CryoResponseError on an empty 2xx where a resource is expected', async () => {
    fake.handle(() => ({ status: 204 }));
    await expect(new CryoClient({ server: fake.url }).deleteSandbox('sbx-1')).rejects.toThrow(CryoResponseError);
  });

  it('fails with CryoResponseError on a 2xx that is not JSON', async () => {
    fake.handle(() => ({ body: 'hello' }));
    await expect(new CryoClient({ server: fake.url }).health()).rejects.toThrow(/not JSON/);
  });

  it('reports a refused connection as CryoConnectionError ECONNREFUSED naming the server', async () => {
    const server = `http://127.0.0.1:${await closedPort()}`;
    const err = await new CryoClient({ server, apiKey: 'sekrit' }).health().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CryoConnectionError);
    expect(err).toMatchObject({ code: 'ECONNREFUSED', server });
    expect(String(err)).toContain(`cannot reach cryo server at ${server} (ECONNREFUSED)`);
    expect(String(err)).not.toContain('sekrit');
  });

  it('gives up on a server that does not answer within timeoutMs', async () => {
    fake.handle(() => new Promise((resolve) => setTimeout(() => resolve({ body: {} }), 2000)));
    const err = await new CryoClient({ server: fake.url, timeoutMs: 200 }).health().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CryoConnectionError);
    expect(String(err)).toContain('did not answer within');
  });
});

describe('CryoClient waits', () => {
  it('polls a sandbox until it runs, reporting every state seen', async () => {
    const states = [
      sandboxFixture({ status: 'pending', pending_reason: 'no executor has capacity', started_at: null }),
      sandboxFixture({ status: 'pending', pending_reason: 'pulling image', started_at: null }),
      sandboxFixture({ status: 'running' }),
    ];
    fake.handle(() => ({ body: states.shift() ?? sandboxFixture() }));
    const seen: string[] = [];
    const sandbox = await new CryoClient({ server: fake.url }).waitForSandbox('sbx-aaaa1111bbbb', {
      intervalMs: 5,
      onUpdate: (sb) => seen.push(`${sb.status}:${sb.pending_reason ?? ''}`),
    });
    expect(sandbox.status).toBe('running');
    expect(seen).toEqual(['pending:no executor has capacity', 'pending:pulling image', 'running:']);
  });

  it('stops waiting for a snapshot at failed too', async () => {
    fake.handle(() => ({ body: snapshotFixture({ status: 'failed', error: 'registry rejected credentials' }) }));
    const snap = await new CryoClient({ server: fake.url }).waitForSnapshot('snap-cccc2222dddd', { intervalMs: 5 });
    expect(snap.error).toBe('registry rejected credentials');
  });

  it('gives up after timeoutMs with what it last saw', async () => {
    fake.handle(() => ({ body: snapshotFixture({ status: 'creating', progress: { phase: 'pushing', bytes_done: 1, bytes_total: 2 } }) }));
    const err = await new CryoClient({ server: fake.url })
      .waitForSnapshot('snap-cccc2222dddd', { intervalMs: 20, timeoutMs: 60 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CryoWaitTimeoutError);
    expect(String(err)).toContain('snapshot snap-cccc2222dddd is creating (pushing)');
  });
});
