import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RegistryAuthenticator, basicAuthorization } from './authenticator';
import { RegistryError } from './errors';

interface SeenRequest {
  method: string;
  url: URL;
  authorization: string | undefined;
  body: string;
}

// A tiny token service: records every request and answers with `respond`.
let server: Server;
let realm: string;
let seen: SeenRequest[] = [];
let respond: (req: SeenRequest) => { status: number; body: unknown; delayMs?: number };
let issued = 0;

const scope = 'repository:cryo/snapshots:pull,push';
const host = 'registry.test:5000';

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request: SeenRequest = {
        method: req.method ?? '',
        url: new URL(req.url ?? '/', 'http://token.local'),
        authorization: req.headers.authorization,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      seen.push(request);
      const answer = respond(request);
      setTimeout(() => {
        res.writeHead(answer.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer.body));
      }, answer.delayMs ?? 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  realm = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
beforeEach(() => {
  seen = [];
  issued = 0;
  respond = () => ({ status: 200, body: { token: `t-${++issued}`, expires_in: 100 } });
});

function bearerChallenge(extra = ''): string {
  return `Bearer realm="${realm}",service="registry.test"${extra}`;
}

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('RegistryAuthenticator', () => {
  it('sends nothing before a challenge, then Basic credentials after a Basic challenge', async () => {
    const auth = new RegistryAuthenticator({ host, credentials: { username: 'myuser', password: 'pw' } });
    expect(await auth.authorize(scope)).toBeUndefined();
    const header = await auth.onChallenge('Basic realm="Registry Realm"', scope);
    expect(header).toBe(basicAuthorization('myuser', 'pw'));
    expect(header).toBe(`Basic ${Buffer.from('myuser:pw').toString('base64')}`);
    expect(await auth.authorize('repository:other:pull')).toBe(header);
    expect(seen).toHaveLength(0);
  });

  it('has nothing to answer a Basic challenge with when anonymous', async () => {
    const auth = new RegistryAuthenticator({ host });
    expect(await auth.onChallenge('Basic realm="x"', scope)).toBeUndefined();
  });

  it('fetches a Bearer token with Basic credentials, service and scope, and caches it per scope', async () => {
    const time = clock();
    const auth = new RegistryAuthenticator({ host, credentials: { username: 'myuser', password: 'pw' }, now: time.now });
    expect(await auth.onChallenge(bearerChallenge(), scope)).toBe('Bearer t-1');
    expect(seen).toHaveLength(1);
    const first = seen[0];
    expect(first?.method).toBe('GET');
    expect(first?.url.pathname).toBe('/token');
    expect(first?.url.searchParams.get('service')).toBe('registry.test');
    expect(first?.url.searchParams.getAll('scope')).toEqual([scope]);
    expect(first?.url.searchParams.get('account')).toBe('myuser');
    expect(first?.authorization).toBe(basicAuthorization('myuser', 'pw'));

    expect(await auth.authorize(scope)).toBe('Bearer t-1');
    expect(await auth.authorize('repository:other:pull')).toBe('Bearer t-2');
    expect(await auth.authorize(scope)).toBe('Bearer t-1');
    expect(seen).toHaveLength(2);
  });

  it('refreshes a token once 80% of its lifetime has passed, transparently', async () => {
    const time = clock();
    const auth = new RegistryAuthenticator({ host, credentials: { username: 'u', password: 'p' }, now: time.now });
    await auth.onChallenge(bearerChallenge(), scope); // expires_in 100 s
    time.advance(79_000);
    expect(await auth.authorize(scope)).toBe('Bearer t-1');
    time.advance(2_000); // 81 s: past 80 %, still valid, refreshed before use
    expect(await auth.authorize(scope)).toBe('Bearer t-2');
    expect(seen).toHaveLength(2);
    time.advance(79_000);
    expect(await auth.authorize(scope)).toBe('Bearer t-2');
    expect(seen).toHaveLength(2);
  });

  it('defaults expires_in to 60 s', async () => {
    respond = () => ({ status: 200, body: { access_token: `a-${++issued}` } });
    const time = clock();
    const auth = new RegistryAuthenticator({ host, now: time.now });
    expect(await auth.onChallenge(bearerChallenge(), scope)).toBe('Bearer a-1');
    time.advance(47_000);
    expect(await auth.authorize(scope)).toBe('Bearer a-1');
    time.advance(2_000); // 49 s > 48 s
    expect(await auth.authorize(scope)).toBe('Bearer a-2');
    // anonymous token requests carry no Authorization
    expect(seen.every((request) => request.authorization === undefined)).toBe(true);
  });

  it('keeps using a still-valid token when an early refresh fails, and fails once it has expired', async () => {
    const time = clock();
    const auth = new RegistryAuthenticator({ host, credentials: { username: 'u', password: 'p' }, now: time.now });
    await auth.onChallenge(bearerChallenge(), scope);
    respond = () => ({ status: 503, body: {} });
    time.advance(90_000);
    expect(await auth.authorize(scope)).toBe('Bearer t-1');
    time.advance(20_000);
    await expect(auth.authorize(scope)).rejects.toMatchObject({ code: 'REGISTRY_BAD_RESPONSE', status: 503 });
  });

  it('shares one token request per scope among concurrent callers', async () => {
    respond = () => ({ status: 200, body: { token: `t-${++issued}`, expires_in: 300 }, delayMs: 50 });
    const auth = new RegistryAuthenticator({ host, credentials: { username: 'u', password: 'p' } });
    const challenged = await Promise.all(Array.from({ length: 5 }, () => auth.onChallenge(bearerChallenge(), scope)));
    expect(new Set(challenged)).toEqual(new Set(['Bearer t-1']));
    const other = await Promise.all(Array.from({ length: 10 }, () => auth.authorize('repository:x:pull')));
    expect(new Set(other)).toEqual(new Set(['Bearer t-2']));
    expect(seen).toHaveLength(2);
  });

  it('fetches a new token when the registry rejects the cached one, but not when another caller already did', async () => {
    const auth = new RegistryAuthenticator({ host, credentials: { username: 'u', password: 'p' } });
    const first = await auth.onChallenge(bearerChallenge(), scope);
    expect(first).toBe('Bearer t-1');
    const second = await auth.onChallenge(bearerChallenge(), scope, first);
    expect(second).toBe('Bearer t-2');
    // A request that went out with t-1 comes back 401 after t-2 was fetched: reuse t-2.
    expect(await auth.onChallenge(bearerChallenge(), scope, first)).toBe('Bearer t-2');
    expect(seen).toHaveLength(2);
  });

  it('adds the scope named by the challenge to the token request', async () => {
    const auth = new RegistryAuthenticator({ host });
    await auth.onChallenge(bearerChallenge(',scope="repository:cryo/snapshots:*"'), 'repository:cryo/snapshots:delete');
    expect(seen[0]?.url.searchParams.getAll('scope')).toEqual(['repository:cryo/snapshots:*', 'repository:cryo/snapshots:delete']);
    expect(await auth.authorize('repository:cryo/snapshots:delete')).toBe('Bearer t-1');
    expect(seen).toHaveLength(1);
  });

  it('uses the OAuth2 refresh-token grant for an identity token', async () => {
    respond = () => ({ status: 200, body: { access_token: 'oauth-1', expires_in: 300, refresh_token: 'rotated' } });
    const auth = new RegistryAuthenticator({ host, credentials: { identityToken: 'idt-secret' } });
    expect(await auth.onChallenge(bearerChallenge(), [scope, 'repository:base:pull'])).toBe('Bearer oauth-1');
    const request = seen[0];
    expect(request?.method).toBe('POST');
    expect(request?.authorization).toBeUndefined();
    const form = new URLSearchParams(request?.body);
    expect(form.get('grant_type')).toBe('refresh_token');
    expect(form.get('refresh_token')).toBe('idt-secret');
    expect(form.get('service')).toBe('registry.test');
    expect(form.get('scope')).toBe(`repository:base:pull ${scope}`);
    expect(form.get('client_id')).toBe('cryo');
    // the rotated refresh token is used next time
    await auth.authorize('repository:z:pull');
    expect(new URLSearchParams(seen[1]?.body).get('refresh_token')).toBe('rotated');
  });

  it('reports rejected credentials with host and user, never the password', async () => {
    respond = () => ({ status: 401, body: { details: 'incorrect username or password' } });
    const auth = new RegistryAuthenticator({ host, credentials: { username: 'myuser', password: 'hunter2' } });
    const error = await auth.onChallenge(bearerChallenge(), scope).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RegistryError);
    expect(error).toMatchObject({ code: 'REGISTRY_UNAUTHORIZED', host, status: 401 });
    expect((error as Error).message).toBe(
      `registry ${host} rejected credentials for user myuser (HTTP 401 from token service 127.0.0.1:${new URL(realm).port})`,
    );
    expect((error as Error).message).not.toContain('hunter2');
  });

  it('reports a token response without a token and a denied scope', async () => {
    respond = () => ({ status: 200, body: { nope: true } });
    const auth = new RegistryAuthenticator({ host });
    await expect(auth.onChallenge(bearerChallenge(), scope)).rejects.toMatchObject({ code: 'REGISTRY_BAD_RESPONSE' });
    respond = () => ({ status: 403, body: {} });
    await expect(auth.onChallenge(bearerChallenge(), scope)).rejects.toMatchObject({ code: 'REGISTRY_DENIED', status: 403 });
  });

  it('reports an unreachable token service', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const auth = new RegistryAuthenticator({ host });
    await expect(auth.onChallenge(`Bearer realm="http://127.0.0.1:${port}/token"`, scope)).rejects.toMatchObject({
      code: 'REGISTRY_UNREACHABLE',
      message: `token service 127.0.0.1:${port} of registry ${host} is unreachable: ECONNREFUSED`,
    });
  });

  it('rejects a Bearer challenge without a usable realm', async () => {
    const auth = new RegistryAuthenticator({ host });
    await expect(auth.onChallenge('Bearer service="x"', scope)).rejects.toMatchObject({ code: 'REGISTRY_BAD_RESPONSE' });
    await expect(auth.onChallenge('Bearer realm="ftp://x/y"', scope)).rejects.toMatchObject({ code: 'REGISTRY_BAD_RESPONSE' });
  });
});
