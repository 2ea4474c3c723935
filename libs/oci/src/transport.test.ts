/**
 * Protocol details a stock distribution registry does not exercise: Bearer tokens and their
 * scopes, redirects to another host, servers that ignore Range, odd media types, pagination.
 * A small node:http registry plays the other side.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RegistryAuthenticator } from '@cryo/registry-auth';
import { Agent } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RegistryClient } from './client';
import { sha256Digest } from './digest';
import { MediaType } from './media-types';
import { RegistryTransport } from './transport';

const BLOB = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
const BLOB_DIGEST = sha256Digest(BLOB);
const OCI_MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    config: { mediaType: MediaType.OciConfig, digest: BLOB_DIGEST, size: BLOB.length },
    layers: [],
  }),
);

let registryServer: Server;
let storageServer: Server;
let tokenServer: Server;
let registryHost: string;
let storagePort: number;
let tokenRealm: string;
let tokenRequests: URL[] = [];
let storageAuthorization: (string | undefined)[] = [];
let registryLog: string[] = [];
/** How the blob storage answers a Range request. */
let storageMode: 'whole' | 'partial-200' | 'partial-200-no-header' | 'short-206' = 'whole';

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** The scope distribution would demand for this request. */
function requiredScopes(req: IncomingMessage, url: URL): string[] {
  const match = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(url.pathname);
  if (!match?.[1]) return [];
  const repo = match[1];
  const method = req.method ?? 'GET';
  const action = method === 'GET' || method === 'HEAD' ? 'pull' : method === 'DELETE' ? 'delete' : 'pull,push';
  const scopes = [`repository:${repo}:${action}`];
  const from = url.searchParams.get('from');
  if (from) scopes.push(`repository:${from}:pull`);
  return scopes;
}

function registryHandler(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://registry');
  registryLog.push(`${req.method} ${url.pathname}${url.search}`);
  const needed = requiredScopes(req, url);
  const granted = (req.headers.authorization ?? '').startsWith('Bearer tok:')
    ? (req.headers.authorization ?? '').slice('Bearer tok:'.length).split(' ')
    : undefined;
  if (granted === undefined || !needed.every((scope) => granted.includes(scope))) {
    const scopeParam = needed.length > 0 ? `,scope="${needed.join(' ')}"` : '';
    json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, {
      'www-authenticate': `Bearer realm="${tokenRealm}",service="fake-registry"${scopeParam}`,
    });
    return;
  }
  const path = url.pathname;
  if (path === '/v2/') return json(res, 200, {});
  if (path === `/v2/app/blobs/${BLOB_DIGEST}`) {
    // Storage on another host name: Authorization must not follow.
    res.writeHead(307, { location: `http://localhost:${storagePort}/storage/blob?sig=abc` });
    res.end();
    return;
  }
  if (path === '/v2/app/manifests/generic') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(OCI_MANIFEST);
    return;
  }
  if (path === '/v2/app/manifests/schema1') {
    res.writeHead(200, { 'content-type': MediaType.DockerSchema1Signed });
    res.end(JSON.stringify({ schemaVersion: 1, name: 'app', tag: 'schema1', fsLayers: [] }));
    return;
  }
  if (path === '/v2/app/manifests/denied') return json(res, 403, { errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] });
  if (path === '/v2/app/manifests/busy') return json(res, 503, { errors: [{ code: 'UNAVAILABLE', message: 'try later' }] });
  if (path === '/v2/app/manifests/broken') return json(res, 500, { errors: [{ code: 'UNKNOWN', message: 'disk on fire' }] });
  if (req.method === 'DELETE' && path.startsWith('/v2/app/manifests/sha256:')) {
    res.writeHead(202);
    res.end();
    return;
  }
  if (req.method === 'POST' && path === '/v2/app/blobs/uploads/' && url.searchParams.get('mount')) {
    res.writeHead(201, { location: `/v2/app/blobs/${url.searchParams.get('mount')}` });
    res.end();
    return;
  }
  if (path === '/v2/app/tags/list') {
    if (url.searchParams.get('last') === 'b') return json(res, 200, { name: 'app', tags: ['c'] });
    return json(res, 200, { name: 'app', tags: ['a', 'b'] }, { link: '</v2/app/tags/list?last=b&n=2>; rel="next"' });
  }
  json(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'nope' }] });
}

beforeAll(async () => {
  tokenServer = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://token');
    tokenRequests.push(url);
    json(res, 200, { token: `tok:${url.searchParams.getAll('scope').join(' ')}`, expires_in: 300 });
  });
  tokenRealm = `http://127.0.0.1:${await listen(tokenServer)}/token`;
  storageServer = createServer((req, res) => {
    storageAuthorization.push(req.headers.authorization);
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    const [start, end] = range ? [Number(range[1]), Math.min(Number(range[2]), BLOB.length - 1)] : [0, BLOB.length - 1];
    const part = BLOB.subarray(start, end + 1);
    if (storageMode === 'whole' || !range) {
      // Object storage that ignores Range and sends the whole blob.
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BLOB.length) });
      res.end(BLOB);
    } else if (storageMode === 'short-206') {
      const cut = part.subarray(0, Math.max(1, part.length - 3));
      res.writeHead(206, { 'content-length': String(cut.length), 'content-range': `bytes ${start}-${start + cut.length - 1}/${BLOB.length}` });
      res.end(cut);
    } else {
      // A proxy that answers with the requested part but status 200.
      const headers: Record<string, string> = { 'content-length': String(part.length) };
      if (storageMode === 'partial-200') headers['content-range'] = `bytes ${start}-${end}/${BLOB.length}`;
      res.writeHead(200, headers);
      res.end(part);
    }
  });
  storagePort = await listen(storageServer);
  registryServer = createServer(registryHandler);
  registryHost = `127.0.0.1:${await listen(registryServer)}`;
});

afterAll(async () => {
  for (const server of [registryServer, storageServer, tokenServer]) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

let client: RegistryClient;
beforeEach(async () => {
  await client?.close();
  tokenRequests = [];
  storageAuthorization = [];
  registryLog = [];
  client = new RegistryClient({ host: registryHost, insecure: true, credentials: { username: 'u', password: 'p' } });
});
afterAll(() => client?.close());

describe('RegistryClient protocol details', () => {
  it('gets a Bearer token for exactly the scope each operation needs', async () => {
    await client.headManifest('app', 'generic');
    await client.deleteManifest('app', BLOB_DIGEST);
    await client.mountBlob('app', BLOB_DIGEST, 'base/img');
    expect(tokenRequests.map((url) => url.searchParams.getAll('scope'))).toEqual([
      ['repository:app:pull'],
      ['repository:app:delete'],
      ['repository:app:pull,push', 'repository:base/img:pull'],
    ]);
    expect(tokenRequests.every((url) => url.searchParams.get('service') === 'fake-registry')).toBe(true);
    // The pull token is cached: no new token request, no new 401.
    const before = registryLog.length;
    await client.getManifest('app', 'generic');
    expect(tokenRequests).toHaveLength(3);
    expect(registryLog.length).toBe(before + 1);
  });

  it('follows a redirect to another host without the Authorization header', async () => {
    const blob = await client.getBlob('app', BLOB_DIGEST);
    const chunks: Buffer[] = [];
    for await (const chunk of blob.stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    expect(Buffer.concat(chunks).equals(BLOB)).toBe(true);
    expect(storageAuthorization).toEqual([undefined]);
  });

  it('slices a range out of a full 200 answer from a server that ignores Range, and warns once', async () => {
    const warnings: string[] = [];
    const warned = new RegistryClient({ host: registryHost, insecure: true, credentials: { username: 'u', password: 'p' }, onWarning: (m) => warnings.push(m) });
    try {
      expect((await warned.getBlobRange('app', BLOB_DIGEST, 10, 15)).toString()).toBe('abcdef');
      expect((await warned.getBlobRange('app', BLOB_DIGEST, 30, 99)).toString()).toBe('uvwxyz');
      expect((await warned.getBlobRange('app', BLOB_DIGEST, 0, 3, { blobSize: BLOB.length })).toString()).toBe('0123');
      await expect(warned.getBlobRange('app', BLOB_DIGEST, 36, 40)).rejects.toMatchObject({ code: 'REGISTRY_BAD_RESPONSE' });
      expect(warnings).toEqual([
        `registry ${registryHost} ignores Range: it answered 200 with the whole blob (36 bytes) to a range request for bytes 10-15 of blob ${BLOB_DIGEST} of app; ` +
          'the bytes needed are kept and the rest discarded, but every read downloads the blob up to its end',
      ]);
    } finally {
      await warned.close();
    }
  });

  it("with wholeBlob: 'refuse', a 200 to a range request is an error with status 200, not a download", async () => {
    const warnings: string[] = [];
    const strict = new RegistryClient({ host: registryHost, insecure: true, credentials: { username: 'u', password: 'p' }, onWarning: (m) => warnings.push(m) });
    try {
      await expect(strict.getBlobRange('app', BLOB_DIGEST, 10, 15, { wholeBlob: 'refuse' })).rejects.toMatchObject({
        code: 'REGISTRY_BAD_RESPONSE',
        status: 200,
        message: expect.stringContaining(`answered 200 (the whole blob, 36 bytes) to a range request for bytes 10-15 of blob ${BLOB_DIGEST} of app`),
      });
      expect(warnings).toEqual([]);
    } finally {
      await strict.close();
    }
  });

  it('a 200 with only the requested part, or a 206 cut short, is a clear error naming the registry and what it did', async () => {
    try {
      storageMode = 'partial-200';
      await expect(client.getBlobRange('app', BLOB_DIGEST, 10, 15)).rejects.toMatchObject({
        code: 'REGISTRY_BAD_RESPONSE',
        message: expect.stringContaining(
          `registry ${registryHost} answered 200 to a range request for bytes 10-15 of blob ${BLOB_DIGEST} of app with 6 bytes and Content-Range "bytes 10-15/36"`,
        ),
      });
      storageMode = 'partial-200-no-header';
      // the size of the blob (from its descriptor) tells the part from the whole
      await expect(client.getBlobRange('app', BLOB_DIGEST, 0, 5, { blobSize: BLOB.length })).rejects.toMatchObject({
        message: expect.stringContaining(`answered 200 to a range request for bytes 0-5 of blob ${BLOB_DIGEST} of app with 6 bytes, but the blob has 36 bytes`),
      });
      // without it, a part that starts past what came back is still caught
      await expect(client.getBlobRange('app', BLOB_DIGEST, 20, 29)).rejects.toMatchObject({
        message: `registry ${registryHost} answered 200 to a range request for bytes 20-29 of blob ${BLOB_DIGEST} of app with 10 bytes (Content-Length 10)`,
      });
      storageMode = 'short-206';
      await expect(client.getBlobRange('app', BLOB_DIGEST, 10, 19)).rejects.toMatchObject({
        message: `registry ${registryHost} answered a range request for bytes 10-19 of blob ${BLOB_DIGEST} of app with 7 bytes (HTTP 206), but the blob has 36 bytes`,
      });
    } finally {
      storageMode = 'whole';
    }
  });

  it('infers the media type of a manifest served as application/json', async () => {
    const got = await client.getManifest('app', 'generic');
    expect(got).toMatchObject({ kind: 'manifest', mediaType: MediaType.OciManifest, digest: sha256Digest(OCI_MANIFEST) });
  });

  it('refuses schema 1 manifests as REGISTRY_UNSUPPORTED_MEDIA_TYPE', async () => {
    await expect(client.getManifest('app', 'schema1')).rejects.toMatchObject({
      code: 'REGISTRY_UNSUPPORTED_MEDIA_TYPE',
      message: `registry ${registryHost} sent manifest app:schema1 as ${MediaType.DockerSchema1Signed}, which is not an OCI or Docker schema 2 manifest or index`,
    });
  });

  it('maps 403, 503, 500 and 404 to stable codes with the registry error in the message', async () => {
    await expect(client.getManifest('app', 'denied')).rejects.toMatchObject({
      code: 'REGISTRY_DENIED',
      status: 403,
      registryCode: 'DENIED',
      message: `registry ${registryHost} denied user u access to app (HTTP 403 DENIED: requested access to the resource is denied)`,
    });
    await expect(client.getManifest('app', 'busy')).rejects.toMatchObject({ code: 'REGISTRY_UNREACHABLE', status: 503 });
    await expect(client.getManifest('app', 'broken')).rejects.toMatchObject({
      code: 'REGISTRY_BAD_RESPONSE',
      message: `registry ${registryHost} failed a manifest fetch of manifest app:broken (HTTP 500 UNKNOWN: disk on fire)`,
    });
    await expect(client.getManifest('app', 'missing')).rejects.toMatchObject({
      code: 'REGISTRY_NOT_FOUND',
      message: `manifest app:missing not found in registry ${registryHost}`,
    });
  });

  it('follows tag list pagination', async () => {
    await expect(client.listTags('app')).resolves.toEqual(['a', 'b', 'c']);
  });

  it('rejects malformed names before sending anything', async () => {
    await expect(client.getManifest('App/../x', 'latest')).rejects.toMatchObject({ code: 'INVALID_IMAGE_REFERENCE' });
    await expect(client.getManifest('app', 'a/b')).rejects.toMatchObject({ code: 'INVALID_IMAGE_REFERENCE' });
    await expect(client.deleteManifest('app', 'latest')).rejects.toMatchObject({ code: 'INVALID_IMAGE_REFERENCE' });
    expect(registryLog).toEqual([]);
  });
});

describe('RegistryTransport', () => {
  it('talks to Docker Hub at its API host, whatever name the reference used', async () => {
    const dispatcher = new Agent();
    const make = (host: string): RegistryTransport =>
      new RegistryTransport({ host, insecure: false, dispatcher, authenticator: new RegistryAuthenticator({ host }), userAgent: 't' });
    expect(make('docker.io').baseUrl.href).toBe('https://registry-1.docker.io/');
    expect(make('index.docker.io').baseUrl.href).toBe('https://registry-1.docker.io/');
    expect(make('127.0.0.1:5001').baseUrl.href).toBe('https://127.0.0.1:5001/');
    await dispatcher.close();
  });
});

// Issue 8 item 4: credentials that expire under a long-lived client. ECR answers 403
// `DENIED: Your authorization token has expired` where other registries answer 401.
describe('403 for expired credentials', () => {
  let server: Server;
  let host = '';
  let scheme: 'basic' | 'bearer' = 'basic';
  let password = 'secret-1';
  const revoked = new Set<string>();
  let tokensIssued = 0;
  let answers: number[] = [];
  const EXPIRED = { errors: [{ code: 'DENIED', message: 'Your authorization token has expired. Reauthenticate and try again.' }] };

  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://registry');
      const auth = req.headers.authorization ?? '';
      const answer = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
        answers.push(status);
        json(res, status, body, headers);
      };
      if (url.pathname === '/token') {
        if (auth !== `Basic ${Buffer.from(`u:${password}`).toString('base64')}`) return json(res, 401, {});
        return json(res, 200, { token: `tok-${++tokensIssued}`, expires_in: 3600 });
      }
      if (auth === '') {
        const challenge = scheme === 'basic' ? 'Basic realm="ecr-like"' : `Bearer realm="http://${host}/token",service="ecr-like"`;
        return answer(401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': challenge });
      }
      const ok = scheme === 'basic' ? auth === `Basic ${Buffer.from(`u:${password}`).toString('base64')}` : auth.startsWith('Bearer tok-') && !revoked.has(auth.slice(7));
      if (!ok) return answer(403, EXPIRED);
      answer(200, { schemaVersion: 2, config: { mediaType: MediaType.OciConfig, digest: BLOB_DIGEST, size: BLOB.length }, layers: [] });
    });
    host = `127.0.0.1:${await listen(server)}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  beforeEach(() => {
    answers = [];
    tokensIssued = 0;
    revoked.clear();
    password = 'secret-1';
  });

  const make = (pass: string): RegistryClient => new RegistryClient({ host, insecure: true, credentials: { username: 'u', password: pass } });

  it('Bearer: a 403 on a token that worked before fetches a fresh token and retries once', async () => {
    scheme = 'bearer';
    const c = make('secret-1');
    try {
      await c.getManifest('app', 'v1');
      revoked.add('tok-1');
      const started = Date.now();
      await expect(c.getManifest('app', 'v1')).resolves.toMatchObject({ kind: 'manifest' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(200); // the retry waited
      expect(tokensIssued).toBe(2);
      expect(answers).toEqual([401, 200, 403, 200]);
    } finally {
      await c.close();
    }
  });

  it('Basic: a 403 on credentials that worked before is REGISTRY_UNAUTHORIZED (resolve them again), not REGISTRY_DENIED', async () => {
    scheme = 'basic';
    const c = make('secret-1');
    try {
      await c.getManifest('app', 'v1');
      password = 'secret-2'; // the credential helper's secret rotated
      await expect(c.getManifest('app', 'v1')).rejects.toMatchObject({
        code: 'REGISTRY_UNAUTHORIZED',
        status: 403,
        registryCode: 'DENIED',
        message: `registry ${host} answered HTTP 403 DENIED: Your authorization token has expired. Reauthenticate and try again. to credentials for user u that it accepted before: they have expired or were revoked (resolve them again: credential helper, config, token)`,
      });
      // a client with the new secret reads again
      const fresh = make('secret-2');
      await expect(fresh.getManifest('app', 'v1')).resolves.toMatchObject({ kind: 'manifest' });
      await fresh.close();
    } finally {
      await c.close();
    }
  });

  it('a 403 on credentials that never worked is a clear REGISTRY_DENIED, without retries', async () => {
    for (const s of ['basic', 'bearer'] as const) {
      scheme = s;
      answers = [];
      const c = make(s === 'basic' ? 'wrong' : 'secret-1');
      if (s === 'bearer') revoked.add('tok-1').add('tok-2').add('tok-3');
      try {
        await expect(c.getManifest('app', 'v1')).rejects.toMatchObject({
          code: 'REGISTRY_DENIED',
          message: `registry ${host} denied user u access to app (HTTP 403 DENIED: Your authorization token has expired. Reauthenticate and try again.)`,
        });
        expect(answers).toEqual([401, 403]);
      } finally {
        await c.close();
      }
    }
  });
});
