/**
 * A long-lived reader outlives its registry token: a loopback registry that speaks the Bearer
 * token flow and expires tokens after one second. Reads spread over several seconds must all
 * succeed, each expiry costing one token refresh, never an error.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ClipReader, RegistryLayerSource, registryClient } from '@cryo/clip';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mixedData } from '../libs/clip/src/testing/data';
import { buildImage, type BuiltImage } from '../libs/clip/src/testing/fixtures';
import { writeTar } from '../libs/clip/src/testing/tar-writer';

const USER = 'tokenuser';
const PASS = 'token-pass';
const TOKEN_LIFETIME_MS = 1000;

let server: Server;
let host = '';
let img: BuiltImage;
const data = mixedData(6_000_000, 21);
const tokens = new Map<string, number>(); // token -> expiry
let tokensIssued = 0;
let rejectedExpired = 0;

function challenge(res: ServerResponse, scope: string): void {
  res.writeHead(401, {
    'www-authenticate': `Bearer realm="http://${host}/token",service="fake-registry",scope="${scope}"`,
    'content-type': 'application/json',
  });
  res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', `http://${host}`);
  if (url.pathname === '/token') {
    const auth = req.headers.authorization ?? '';
    if (auth !== `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`) {
      res.writeHead(401).end();
      return;
    }
    const token = `tok-${++tokensIssued}`;
    tokens.set(token, Date.now() + TOKEN_LIFETIME_MS);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, expires_in: 1, issued_at: new Date().toISOString() }));
    return;
  }
  const blob = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
  const scope = `repository:${blob?.[1] ?? 'x'}:pull`;
  const bearer = (req.headers.authorization ?? '').replace(/^Bearer /, '');
  const expiry = tokens.get(bearer);
  if (expiry === undefined || expiry < Date.now()) {
    if (expiry !== undefined) rejectedExpired++;
    challenge(res, scope);
    return;
  }
  const body = blob ? img.blobs.get(blob[2] ?? '') : undefined;
  if (!body) {
    res.writeHead(404).end();
    return;
  }
  const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  if (!range) {
    res.writeHead(200, { 'content-length': body.length, 'accept-ranges': 'bytes' });
    res.end(body);
    return;
  }
  const start = Number(range[1]);
  const end = Math.min(Number(range[2]), body.length - 1);
  res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${body.length}` });
  res.end(body.subarray(start, end + 1));
}

beforeAll(async () => {
  img = await buildImage([writeTar([{ name: 'data.bin', data }])], 'gzip', { span: 256 * 1024 });
  server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe('clip reader and expiring registry tokens', () => {
  it('keeps reading across token expiries without an error', async () => {
    const source = new RegistryLayerSource(
      registryClient(host, { insecure: true, credentials: { username: USER, password: PASS } }),
      'clip/token',
    );
    const reader = new ClipReader(img.index, { source });
    for (let i = 0; i < 4; i++) {
      const off = 500_000 + i * 1_300_000;
      const got = await reader.read('/data.bin', off, 10_000);
      expect(got.equals(data.subarray(off, off + 10_000))).toBe(true);
      await new Promise((r) => setTimeout(r, TOKEN_LIFETIME_MS + 200));
    }
    expect(reader.stats.requests).toBe(4);
    // one token per expiry, whether renewed ahead of time or after the registry refused a stale one
    expect(tokensIssued).toBeGreaterThanOrEqual(4);
    expect(rejectedExpired).toBeLessThanOrEqual(4);
    await source.close();
  });
});
