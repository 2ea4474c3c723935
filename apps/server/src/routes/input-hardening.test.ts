/**
 * Issue 15: every bad request gets a 4xx in cryo's envelope naming what is wrong, nothing is
 * silently changed, and what one request can cost is bounded. Each smallest failing input from
 * the issue is a case here.
 */
import { connect } from 'node:net';
import { Ajv2020 } from 'ajv/dist/2020';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { API_LIMITS } from '@cryo/snapshot';
import { PublicRequestTurns } from '../http/turns';
import { API_KEY, EXECUTOR_TOKEN, Harness, runningSandbox, type Reply } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start();
});
afterEach(async () => {
  await h.close();
});

/** Expects a 4xx in cryo's envelope whose message names `field`. */
function expectRefused(reply: Reply, field: string, status = 400): void {
  expect(reply.status, JSON.stringify(reply.body)).toBe(status);
  const error = reply.json.error as { code: string; message: string; request_id: string };
  expect(error.message).toContain(field);
  expect(error.request_id).toMatch(/^req-/);
}

async function rawRequest(method: string, url: string, payload: Buffer | string, contentType = 'application/json'): Promise<Reply> {
  const response = await h.server.app.inject({
    method: method as 'POST',
    url,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': contentType },
    payload,
  });
  const json = (() => {
    try {
      return response.json() as Record<string, unknown>;
    } catch {
      return {};
    }
  })();
  return { status: response.statusCode, body: json, json, headers: response.headers };
}

/** Sends `bytes` on a fresh TCP connection to the listening server and returns all it answers. */
async function overSocket(url: string, bytes: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.write(bytes);
  });
}

function envelopeOf(raw: string): { status: number; body: { error: { code: string; message: string; request_id: string } } } {
  const [head = '', body = ''] = raw.split('\r\n\r\n');
  return { status: Number(head.split(' ')[1]), body: JSON.parse(body) as { error: { code: string; message: string; request_id: string } } };
}

describe('label filters (item 1)', () => {
  it('refuses more than 16 label filters with 400 naming querystring.label on every list, and applies 16', async () => {
    const { sandboxId } = await runningSandbox(h);
    const labels = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v']));
    await h.api('POST', '/sandboxes', { image: 'busybox', labels });
    const many = Array.from({ length: 998 }, () => 'label=a%3Db').join('&');
    for (const path of ['/sandboxes', '/snapshots', `/sandboxes/${sandboxId}/snapshots`]) {
      expectRefused(await h.api('GET', `${path}?${many}`), 'querystring.label: at most 16 label filters');
      expectRefused(await h.api('GET', `${path}?${Array.from({ length: 17 }, () => 'label=a=b').join('&')}`), 'querystring.label');
    }
    const sixteen = Object.keys(labels).map((k) => `label=${k}=v`).join('&');
    const page = await h.api('GET', `/sandboxes?${sixteen}`);
    expect(page.status).toBe(200);
    expect((page.json.items as Array<{ labels: unknown }>).map((item) => item.labels)).toEqual([labels]);
  });

  it('refuses a malformed filter, status or unknown query parameter instead of ignoring it', async () => {
    expectRefused(await h.api('GET', '/sandboxes?label=bad%20key=v'), 'querystring.label: a label filter is key=value');
    expectRefused(await h.api('GET', '/sandboxes?status=sleeping'), 'querystring.status');
    expectRefused(await h.api('GET', '/sandboxes?lable=team=ml'), 'querystring.lable: unknown field');
    expectRefused(await h.api('GET', '/snapshots?limit=501'), 'querystring.limit');
  });
});

describe("cryo's envelope for every answer (item 3)", () => {
  it('answers malformed percent-encoding, a missing route and the router limit in the envelope', async () => {
    const badUrl = await h.request('GET', '/v1/namespaces/a%/sandboxes');
    expectRefused(badUrl, 'path: the path segment "a%" is not valid percent-encoded UTF-8');
    expect(badUrl.json.error).toMatchObject({ code: 'INVALID_REQUEST' });
    const surrogate = await h.request('GET', '/v1/namespaces/test/sandboxes/%ED%A0%80');
    expectRefused(surrogate, 'not valid percent-encoded UTF-8');
    expectRefused(await h.request('GET', '/nothing/here'), 'no route GET /nothing/here', 404);
    // Beyond Node's 16 KiB request line no real client gets here; inject does.
    const huge = await h.api('GET', `/sandboxes/${'a'.repeat(20_000)}`);
    expectRefused(huge, 'path: a path parameter is longer than');
    const tooLarge = await rawRequest('POST', '/v1/namespaces/test/sandboxes', JSON.stringify({ image: 'busybox', command: ['x'.repeat(1024 * 1024)] }));
    expectRefused(tooLarge, 'body: larger than the 1048576 bytes this route accepts', 413);
    expect(tooLarge.json.error).toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
    expectRefused(await rawRequest('POST', '/v1/namespaces/test/sandboxes', 'image=busybox', 'text/plain'), 'body: Content-Type must be application/json');
  });

  it('answers a bad request line and oversized headers in the envelope, written on the socket', async () => {
    const url = await h.server.app.listen({ host: '127.0.0.1', port: 0 });
    const badLine = envelopeOf(await overSocket(url, 'GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(badLine.status).toBe(400);
    expect(badLine.body.error).toMatchObject({ code: 'INVALID_REQUEST', message: expect.stringContaining('malformed HTTP request') });
    expect(badLine.body.error.request_id).toMatch(/^req-/);
    const bigHeaders = envelopeOf(await overSocket(url, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    expect(bigHeaders.status).toBe(431);
    expect(bigHeaders.body.error).toMatchObject({ code: 'HEADERS_TOO_LARGE', message: expect.stringContaining('16384 bytes') });
    const badChunk = envelopeOf(await overSocket(url, 'POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'));
    expect(badChunk.body.error).toMatchObject({ code: 'INVALID_REQUEST', message: expect.stringContaining('chunk size') });
    // Node itself answers these two with an empty body unless told not to.
    const noHost = envelopeOf(await overSocket(url, 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'));
    expect(noHost.status).toBe(400);
    expect(noHost.body.error).toMatchObject({ code: 'INVALID_REQUEST', message: expect.stringContaining('Host header') });
    const expectation = await overSocket(url, 'GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: something\r\nConnection: close\r\n\r\n');
    expect(envelopeOf(expectation).status).toBe(200);
  });

  it('answers a request that arrives while the server shuts down with 503 in the envelope', async () => {
    const url = await h.server.app.listen({ host: '127.0.0.1', port: 0 });
    await h.executor('exec-a').heartbeat();
    const { hostname, port } = new URL(url);
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = new Promise((resolve) => socket.on('close', resolve));
    // A long poll keeps the connection (and the closing server) busy; the next request on it
    // arrives after close began.
    socket.write(`GET /internal/v1/executors/exec-a/operations?wait_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${EXECUTOR_TOKEN}\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 200));
    const closed = h.server.app.close();
    await new Promise((r) => setTimeout(r, 100));
    socket.write(`GET /v1/namespaces/test/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${API_KEY}\r\n\r\n`);
    await ended;
    await closed;
    const raw = Buffer.concat(chunks).toString('utf8');
    const reply = envelopeOf(raw.slice(raw.indexOf('HTTP/1.1', 10)));
    expect(reply.status).toBe(503);
    expect(reply.body.error).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('shutting down') });
  });
});

describe('path parameter limits (item 4)', () => {
  it('registers executors with ids of 101 to 128 characters and refuses 129 naming params.id', async () => {
    for (const length of [101, 128]) {
      expect((await h.executor('e'.repeat(length)).heartbeat()).status).toBe(200);
    }
    const tooLong = await h.request('POST', `/internal/v1/executors/${'e'.repeat(129)}/heartbeat`, h.executor('x').body(), EXECUTOR_TOKEN);
    expectRefused(tooLong, 'params.id: executor ids are 1-128 letters');
    const executors = await h.request('GET', '/v1/executors');
    expect((executors.json.items as Array<{ executor_id: string }>).map((e) => e.executor_id.length).sort()).toEqual([101, 128]);
  });

  it('answers sandbox ids of 64 characters 404 and of 65 or 200 characters 400 naming params.id', async () => {
    expect((await h.api('GET', `/sandboxes/${'s'.repeat(64)}`)).status).toBe(404);
    expectRefused(await h.api('GET', `/sandboxes/${'s'.repeat(65)}`), 'params.id: ids are at most 64 characters');
    expectRefused(await h.api('DELETE', `/snapshots/${'s'.repeat(200)}`), 'params.id');
  });
});

describe('image references (item 5)', () => {
  it('refuses images that can never be pulled with 400 naming body.image and the grammar', async () => {
    await h.executor('exec-a').heartbeat();
    for (const image of [' ', 'UPPER-Case', '../../etc/passwd', 'a\nb', ' busybox', 'busybox:', 'reg..example.com/app', `${'a'.repeat(256)}`]) {
      const reply = await h.api('POST', '/sandboxes', { image });
      expectRefused(reply, 'body.image: invalid image reference');
      expect((reply.json.error as { message: string }).message).toContain('distribution grammar');
    }
    const digest = `sha256:${'a'.repeat(64)}`;
    for (const image of ['busybox', 'busybox:1.36', 'library/busybox', '127.0.0.1:5001/cryo/snapshots:sb-1', `localhost/app@${digest}`, 'a__b/c--d:V1']) {
      expect((await h.api('POST', '/sandboxes', { image })).status, image).toBe(202);
    }
  });
});

describe('NUL bytes (item 6)', () => {
  it('refuses NUL in command elements (create, exec, restore) and env values (create, restore), naming the field', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    expectRefused(await h.api('POST', '/sandboxes', { image: 'busybox', command: ['sh', 'a\0b'] }), 'body.command.1: a command element must not contain NUL');
    expectRefused(await h.api('POST', '/sandboxes', { image: 'busybox', env: { A: 'x\0y' } }), 'body.env.A: an env value must not contain NUL');
    expectRefused(await h.api('POST', `/sandboxes/${sandboxId}/exec`, { command: ['echo', '\0'] }), 'body.command.1');
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const { snapshotId } = await executor.pushNext();
    expectRefused(await h.api('POST', `/snapshots/${snapshotId}/restore`, { command: ['\0'] }), 'body.command.0');
    expectRefused(await h.api('POST', `/snapshots/${snapshotId}/restore`, { env: { B: '\0' } }), 'body.env.B');
    expectRefused(await h.api('POST', `/snapshots/${snapshotId}/restore`, { env: { 'B\0': 'x' } }), 'env names must not contain "=" or NUL');
  });
});

describe('prototype poisoning (item 7)', () => {
  it('refuses "__proto__" keys in labels and env and constructor.prototype with 400, and keeps a plain "constructor" label', async () => {
    const { sandboxId } = await runningSandbox(h);
    const cases: Array<[string, string]> = [
      ['/sandboxes', '{"image":"busybox","labels":{"__proto__":"x"}}'],
      ['/sandboxes', '{"image":"busybox","labels":{"__proto__":{"polluted":"yes"}}}'],
      ['/sandboxes', '{"image":"busybox","env":{"__proto__":"x"}}'],
      ['/sandboxes', '{"image":"busybox","labels":{"constructor":{"prototype":{"x":"y"}}}}'],
      [`/sandboxes/${sandboxId}/snapshots`, '{"labels":{"__proto__":"x"}}'],
    ];
    for (const [path, body] of cases) {
      const reply = await h.api('POST', path, body);
      expectRefused(reply, 'prototype poisoning');
      expect((reply.json.error as { message: string }).message).toMatch(/^body\.(labels|env)\./);
    }
    const kept = await h.api('POST', '/sandboxes', { image: 'busybox', labels: { constructor: 'c', prototype: 'p' } });
    expect(kept.status).toBe(202);
    const view = await h.api('GET', `/sandboxes/${kept.json.sandbox_id as string}`);
    expect(view.json.labels).toEqual({ constructor: 'c', prototype: 'p' });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('strict nested objects (item 8)', () => {
  it('refuses a misspelt resources key naming body.resources.memory instead of running without a limit', async () => {
    await h.executor('exec-a').heartbeat();
    expectRefused(await h.api('POST', '/sandboxes', { image: 'busybox', resources: { memory: 512 } }), 'body.resources.memory: unknown field');
    expectRefused(await h.api('POST', '/sandboxes', { image: 'busybox', resources: { cpus: 1, memory_mb: 64, swap: 1 } }), 'body.resources.swap');
    expect((await h.api('POST', '/sandboxes', { image: 'busybox', resources: { memory_mb: 512 } })).status).toBe(202);
  });
});

describe('text is kept exactly (item 9)', () => {
  it('refuses lone UTF-16 surrogates in values and keys, naming where, and keeps paired ones unchanged', async () => {
    await h.executor('exec-a').heartbeat();
    expectRefused(await h.api('POST', '/sandboxes', '{"image":"busybox","labels":{"a":"\\ud800"}}'), 'body.labels.a: holds a lone UTF-16 surrogate');
    expectRefused(await h.api('POST', '/sandboxes', '{"image":"busybox","command":["echo","x\\udc00"]}'), 'body.command.1');
    expectRefused(await h.api('POST', '/sandboxes', '{"image":"busybox","env":{"\\ud83d":"x"}}'), 'the key holds a lone UTF-16 surrogate');
    const emoji = 'snow \u2603 and \ud83d\ude00';
    const created = await h.api('POST', '/sandboxes', { image: 'busybox', command: ['echo', emoji], labels: { note: emoji } });
    expect(created.status).toBe(202);
    const view = await h.api('GET', `/sandboxes/${created.json.sandbox_id as string}`);
    expect(view.json.command).toEqual(['echo', emoji]);
    expect(view.json.labels).toEqual({ note: emoji });
  });

  it('refuses bytes that are not UTF-8 in the body and percent-escapes that are not UTF-8 in the query', async () => {
    await h.executor('exec-a').heartbeat();
    const invalid = Buffer.concat([Buffer.from('{"image":"busybox","labels":{"a":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}}')]);
    expectRefused(await rawRequest('POST', '/v1/namespaces/test/sandboxes', invalid), 'body: not valid UTF-8');
    const cesu = Buffer.concat([Buffer.from('{"image":"busybox","labels":{"a":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}}')]);
    expectRefused(await rawRequest('POST', '/v1/namespaces/test/sandboxes', cesu), 'body: not valid UTF-8');
    expectRefused(await h.api('GET', '/sandboxes?label=a=%FF'), 'querystring: "label=a=%FF" is not valid percent-encoded UTF-8');
    expectRefused(await h.api('GET', '/sandboxes?label=a=%ED%A0%80'), 'querystring');
    const plus = await h.api('GET', '/sandboxes?label=note=a+b');
    expect(plus.status).toBe(200);
  });

  it('refuses bodies nested deeper than 32 levels without overflowing the stack', async () => {
    const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
    expectRefused(await h.api('POST', '/sandboxes', `{"image":"busybox","labels":${deep}}`), 'nested deeper than 32 levels');
    const result = await h.request('POST', '/internal/v1/operations/op-x/result', `{"ok":true,"result":${deep}}`, EXECUTOR_TOKEN);
    expectRefused(result, 'nested deeper than 32 levels');
  });
});

describe('what a request may cost (item 10)', () => {
  it('bounds command, env and labels at their limits and names the rule when over', async () => {
    await h.executor('exec-a', { capacity: { cpus: 0, memory_mb: 0, max_sandboxes: 100 } }).heartbeat();
    const create = (body: Record<string, unknown>): Promise<Reply> => h.api('POST', '/sandboxes', { image: 'busybox', ...body });
    expect((await create({ command: Array.from({ length: API_LIMITS.commandElements }, () => 'x') })).status).toBe(202);
    expectRefused(await create({ command: Array.from({ length: API_LIMITS.commandElements + 1 }, () => 'x') }), 'body.command: command has at most 1024 elements');
    expect((await create({ command: ['sh', '-c', 'x'.repeat(API_LIMITS.argBytes)] })).status).toBe(202);
    expectRefused(await create({ command: ['x'.repeat(API_LIMITS.argBytes + 1)] }), 'body.command.0: a command element is at most 131071 bytes');
    expectRefused(await create({ command: ['\u00e9'.repeat(70_000)] }), 'at most 131071 bytes of UTF-8');
    expectRefused(await create({ command: ['a', 'b', 'c'].map(() => 'x'.repeat(100_000)) }), 'body.command: command elements together are 300000 bytes; at most 262144');

    const env = (count: number, size = 1): Record<string, string> => Object.fromEntries(Array.from({ length: count }, (_, i) => [`V${i}`, 'x'.repeat(size)]));
    expect((await create({ env: env(API_LIMITS.envVariables) })).status).toBe(202);
    expectRefused(await create({ env: env(API_LIMITS.envVariables + 1) }), 'body.env: at most 1024 variables');
    expectRefused(await create({ env: env(3, 100_000) }), 'body.env: all NAME=value strings together are');
    expectRefused(await create({ env: { ['N'.repeat(100_000)]: 'x'.repeat(40_000) } }), 'NAME=value is 140001 bytes');

    const labels = (count: number, size = 1): Record<string, string> => Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, 'v'.repeat(size)]));
    expect((await create({ labels: labels(API_LIMITS.labels) })).status).toBe(202);
    expectRefused(await create({ labels: labels(API_LIMITS.labels + 1) }), 'body.labels: at most 64 labels');
    expectRefused(await create({ labels: labels(40, 255) }), 'body.labels: keys and values together are');
    expectRefused(await create({ labels: { a: 'line\nbreak' } }), 'body.labels.a: label values are at most 255 characters without control characters');
  });

  it('takes 1 MiB on public routes and 8 MiB on the executor protocol', async () => {
    await h.executor('exec-a').heartbeat();
    expectRefused(await rawRequest('POST', '/v1/namespaces/test/sandboxes', `{"image":"busybox","command":["${'x'.repeat(1024 * 1024)}"]}`), 'body: larger than the 1048576 bytes', 413);
    const bigResult = JSON.stringify({ ok: true, result: { exit_code: 0, stdout: 'x'.repeat(6 * 1024 * 1024), stderr: '' } });
    const reply = await h.request('POST', '/internal/v1/operations/op-nothing/result', bigResult, EXECUTOR_TOKEN);
    expect(reply.status).not.toBe(413);
  });

  it('lists sandboxes without their commands; one sandbox has it', async () => {
    await h.executor('exec-a').heartbeat();
    const command = ['sh', '-c', 'x'.repeat(100_000)];
    const created = await h.api('POST', '/sandboxes', { image: 'busybox', command });
    const page = await h.api('GET', '/sandboxes?limit=500');
    const item = (page.json.items as Array<Record<string, unknown>>)[0];
    expect(item).toMatchObject({ sandbox_id: created.json.sandbox_id, image: 'busybox' });
    expect(item).not.toHaveProperty('command');
    expect(JSON.stringify(page.body).length).toBeLessThan(2000);
    expect((await h.api('GET', `/sandboxes/${created.json.sandbox_id as string}`)).json.command).toEqual(command);
  });

  it('gives public requests one turn per event-loop iteration', async () => {
    const turns = new PublicRequestTurns();
    let iteration = 0;
    let ticking = true;
    const tick = (): void => {
      iteration += 1;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const started = await Promise.all(Array.from({ length: 5 }, () => turns.wait().then(() => iteration)));
    ticking = false;
    expect(new Set(started).size).toBe(5);
    expect([...started].sort((a, b) => a - b)).toEqual(started);
  });
});

describe('the published OpenAPI document is the enforced schema (item 13)', () => {
  type Schema = Record<string, unknown>;
  async function documentOf(): Promise<{ paths: Record<string, Record<string, { requestBody?: { required: boolean; content: Record<string, { schema: Schema }> } }>> }> {
    return (await h.request('GET', '/docs/json', undefined, null)).json as never;
  }

  it('accepts exactly the create and restore bodies the published schema accepts', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const { snapshotId } = await executor.pushNext();
    const doc = await documentOf();
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    const published = (path: string): ((body: unknown) => boolean) => {
      const body = doc.paths[path]?.post?.requestBody;
      const schema = body?.content['application/json']?.schema;
      if (schema === undefined) throw new Error(`no published body for ${path}`);
      return ajv.compile(schema);
    };
    const createValid = published('/v1/namespaces/{ns}/sandboxes');
    const restoreValid = published('/v1/namespaces/{ns}/snapshots/{id}/restore');
    const bodies: Array<Record<string, unknown>> = [
      { image: 'busybox' },
      { image: 'busybox', labels: { 'team/ml.x_y-z': 'a b' } },
      { image: 'busybox', labels: { 'a b': 'x' } },
      { image: 'busybox', labels: { ['k'.repeat(64)]: 'x' } },
      { image: 'busybox', labels: { a: 'x'.repeat(256) } },
      { image: 'busybox', labels: { a: 'tab\there' } },
      { image: 'busybox', env: { 'MY.VAR-1': 'x', PATH: '/bin' } },
      { image: 'busybox', env: { 'A=B': 'x' } },
      { image: 'busybox', env: { '': 'x' } },
      { image: 'busybox', command: [] },
      { image: 'busybox', command: ['a\0'] },
      { image: 'busybox', resources: { memory: 1 } },
      { image: 'busybox', resources: { cpus: 0.5, memory_mb: 64 } },
      { image: 'busybox', executor_id: 'exec-a' },
      { image: 'busybox', executor_id: '-x' },
      { image: 'busybox', timeout_secs: -1 },
      { image: 'busybox', extra: 1 },
    ];
    for (const body of bodies) {
      const reply = await h.api('POST', '/sandboxes', body);
      expect(reply.status === 400, `${JSON.stringify(body)}: ${JSON.stringify(reply.body)}`).toBe(!createValid(body));
      const { image: _image, ...rest } = body;
      if ('extra' in rest || 'resources' in rest) continue;
      const restored = await h.api('POST', `/snapshots/${snapshotId}/restore`, rest);
      expect(restored.status === 400, `restore ${JSON.stringify(rest)}: ${JSON.stringify(restored.body)}`).toBe(!restoreValid(rest));
    }
  });

  it('publishes the key rules, marks optional bodies optional, and keeps the rule in refusals', async () => {
    const { sandboxId } = await runningSandbox(h);
    const doc = await documentOf();
    const create = doc.paths['/v1/namespaces/{ns}/sandboxes']?.post?.requestBody;
    const properties = (create?.content['application/json']?.schema as { properties: Record<string, Schema> }).properties;
    expect(properties.labels).toMatchObject({ propertyNames: { pattern: '^[A-Za-z0-9._/-]{1,63}$' }, maxProperties: 64 });
    expect(properties.env).toMatchObject({ propertyNames: { pattern: '^[^=\\u0000]+$' } });
    expect(properties.image?.description).toContain('distribution grammar');
    expect(properties.command?.description).toContain('262144 bytes');
    expect(create?.required).toBe(true);
    for (const path of ['/v1/namespaces/{ns}/sandboxes/{id}/snapshots', '/v1/namespaces/{ns}/snapshots/{id}/restore']) {
      const body = doc.paths[path]?.post?.requestBody;
      expect(body?.required, path).toBe(false);
      expect(body?.content['application/json']?.schema).toMatchObject({ type: 'object' });
    }
    expect((await h.api('POST', `/sandboxes/${sandboxId}/snapshots`)).status).toBe(202);
    const badKey = await h.api('POST', '/sandboxes', { image: 'busybox', labels: { 'a b': 'x' } });
    expectRefused(badKey, 'body.labels.a b: invalid key: label keys are 1-63 letters, digits, ".", "_", "/", "-"');
  });
});
