import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { API_KEY, EXECUTOR_TOKEN, Harness, runningSandbox } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start();
});
afterEach(async () => {
  await h.close();
});

describe('auth', () => {
  it('answers 401 without a key or with a wrong one, and 200 with a right one', async () => {
    const missing = await h.request('GET', '/v1/namespaces/test/sandboxes', undefined, null);
    expect(missing.status).toBe(401);
    expect(missing.json).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
    expect(missing.headers['www-authenticate']).toBe('Bearer');
    const wrong = await h.request('GET', '/v1/namespaces/test/sandboxes', undefined, 'nope');
    expect(wrong.status).toBe(401);
    expect((await h.request('GET', '/v1/namespaces/test/sandboxes', undefined, API_KEY)).status).toBe(200);
  });

  it('does not accept the executor token on /v1, nor an API key on /internal/v1', async () => {
    expect((await h.request('GET', '/v1/executors', undefined, EXECUTOR_TOKEN)).status).toBe(401);
    const internal = await h.request('POST', '/internal/v1/executors/x/heartbeat', {}, API_KEY);
    expect(internal.status).toBe(401);
  });

  it('leaves /healthz, /metrics and /docs open', async () => {
    expect((await h.request('GET', '/healthz', undefined, null)).json).toMatchObject({ status: 'ok' });
    expect((await h.request('GET', '/metrics', undefined, null)).status).toBe(200);
    const docs = await h.request('GET', '/docs/json', undefined, null);
    expect(docs.json).toMatchObject({ openapi: expect.stringMatching(/^3\./) });
    const paths = Object.keys((docs.json as { paths: Record<string, unknown> }).paths);
    expect(paths).toContain('/v1/namespaces/{ns}/snapshots/{id}/restore');
  });

  it('serves the API reference UI at /docs from its own assets', async () => {
    const page = await h.request('GET', '/docs', undefined, null);
    expect(page.status).toBe(200);
    expect(String(page.headers['content-type'])).toMatch(/^text\/html/);
    expect(String(page.headers['content-security-policy'])).toContain("default-src 'self'");
    const scripts = [...String(page.body).matchAll(/<script src="([^"]+)"/g)].map((m) => m[1] ?? '');
    expect(scripts).toContain('/docs/static/swagger-ui-bundle.js');
    for (const src of scripts) {
      expect(src.startsWith('/docs/'), `${src} is served by cryo itself`).toBe(true);
      expect((await h.request('GET', src, undefined, null)).status, src).toBe(200);
    }
    const init = await h.request('GET', '/docs/static/swagger-initializer.js', undefined, null);
    expect(String(init.body)).toContain('validatorUrl');
  });
});

describe('errors', () => {
  it('names the field of a malformed body (400)', async () => {
    await h.executor('exec-a').heartbeat();
    const wrongType = await h.api('POST', '/sandboxes', { image: 42 });
    expect(wrongType.status).toBe(400);
    expect(wrongType.json).toMatchObject({ error: { code: 'INVALID_REQUEST', message: expect.stringContaining('body.image') } });
    expect((wrongType.json.error as { request_id: string }).request_id).toMatch(/^req-/);
    const unknownKey = await h.api('POST', '/sandboxes', { image: 'busybox', imgae: 'x' });
    expect(unknownKey.status).toBe(400);
    expect(unknownKey.json).toMatchObject({ error: { message: expect.stringContaining('imgae') } });
    const nested = await h.api('POST', '/sandboxes', { image: 'busybox', resources: { cpus: -1 } });
    expect(nested.json).toMatchObject({ error: { message: expect.stringContaining('body.resources.cpus') } });
    const badJson = await h.api('POST', '/sandboxes', '{"image":');
    expect(badJson.status).toBe(400);
    expect(badJson.json).toMatchObject({ error: { code: 'INVALID_REQUEST', message: expect.stringContaining('JSON') } });
  });

  it('answers 404 for unknown ids and routes, 400 for a malformed namespace', async () => {
    const sandbox = await h.api('GET', '/sandboxes/sbx-doesnotexist');
    expect(sandbox.status).toBe(404);
    expect(sandbox.json).toMatchObject({ error: { code: 'NOT_FOUND', message: 'sandbox sbx-doesnotexist not found' } });
    expect((await h.api('GET', '/snapshots/snap-nope')).status).toBe(404);
    expect((await h.api('DELETE', '/snapshots/snap-nope')).status).toBe(404);
    expect((await h.api('POST', '/snapshots/snap-nope/restore', {})).status).toBe(404);
    expect((await h.api('POST', '/sandboxes/sbx-nope/snapshots', {})).status).toBe(404);
    expect((await h.request('GET', '/v1/nothing-here')).status).toBe(404);
    const badNs = await h.request('GET', '/v1/namespaces/Bad_NS!/sandboxes');
    expect(badNs.status).toBe(400);
    expect(badNs.json).toMatchObject({ error: { message: expect.stringContaining('params.ns') } });
  });

  it('answers an unexpected exception with 500, the request id and no stack', async () => {
    vi.spyOn(h.server.sandboxService, 'list').mockImplementation(() => {
      throw new TypeError('boom at secret/place.ts:12');
    });
    const reply = await h.api('GET', '/sandboxes');
    expect(reply.status).toBe(500);
    const error = reply.json.error as { code: string; message: string; request_id: string };
    expect(error.code).toBe('INTERNAL');
    expect(error.message).toContain(error.request_id);
    expect(JSON.stringify(reply.body)).not.toContain('place.ts');
    expect(reply.headers['x-request-id']).toBe(error.request_id);
  });

  it('answers 503 when no executor is registered', async () => {
    const reply = await h.api('POST', '/sandboxes', { image: 'busybox' });
    expect(reply.status).toBe(503);
    expect(reply.json).toMatchObject({ error: { code: 'UNAVAILABLE', message: expect.stringContaining('no executor') } });
  });
});

describe('lists', () => {
  it('pages with an opaque cursor in a stable order, and filters by status and label', async () => {
    const executor = h.executor('exec-a', { capacity: { cpus: 0, memory_mb: 0, max_sandboxes: 100 } });
    await executor.heartbeat();
    const ids: string[] = [];
    for (let i = 0; i < 7; i += 1) {
      const reply = await h.api('POST', '/sandboxes', { image: 'busybox', labels: { team: i % 2 === 0 ? 'even' : 'odd' } });
      ids.push(reply.json.sandbox_id as string);
      if (i % 3 === 0) h.clock.advance(1000); // some share a created_at, some do not
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor === null ? '?limit=3' : `?limit=3&cursor=${encodeURIComponent(cursor)}`;
      const page = await h.api('GET', `/sandboxes${query}`);
      expect(page.status).toBe(200);
      const items = page.json.items as Array<{ sandbox_id: string }>;
      expect(items.length).toBeLessThanOrEqual(3);
      seen.push(...items.map((s) => s.sandbox_id));
      cursor = page.json.next_cursor as string | null;
    } while (cursor !== null);
    expect(seen).toHaveLength(7);
    expect(new Set(seen)).toEqual(new Set(ids));
    expect(seen.at(-1)).toBe(ids[0]); // newest first

    const even = await h.api('GET', '/sandboxes?label=team=even');
    expect((even.json.items as unknown[]).length).toBe(4);
    const pending = await h.api('GET', '/sandboxes?status=pending,running');
    expect((pending.json.items as unknown[]).length).toBe(7);
    expect((await h.api('GET', '/sandboxes?status=terminated')).json.items).toEqual([]);

    const badStatus = await h.api('GET', '/sandboxes?status=sleeping');
    expect(badStatus.status).toBe(400);
    expect(badStatus.json).toMatchObject({ error: { message: expect.stringContaining('querystring.status') } });
    expect((await h.api('GET', '/sandboxes?label=noequals')).status).toBe(400);
    expect((await h.api('GET', '/sandboxes?cursor=garbage')).status).toBe(400);
    expect((await h.api('GET', '/sandboxes?limit=0')).status).toBe(400);
  });

  it('keeps namespaces apart', async () => {
    const { sandboxId } = await runningSandbox(h);
    expect((await h.request('GET', `/v1/namespaces/other/sandboxes/${sandboxId}`)).status).toBe(404);
    expect((await h.request('GET', '/v1/namespaces/other/sandboxes')).json.items).toEqual([]);
  });
});

describe('metrics', () => {
  it('counts requests by route and status', async () => {
    await h.api('GET', '/sandboxes');
    const text = (await h.request('GET', '/metrics', undefined, null)).body as string;
    expect(text).toContain('cryo_http_requests_total{method="GET",route="/v1/namespaces/:ns/sandboxes",status="200"} 1');
    expect(text).toContain('cryo_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/v1/namespaces/:ns/sandboxes"} 1');
    expect(text).toContain('# TYPE cryo_snapshots_expired_total counter');
  });
});
