/**
 * Credentials under a long-lived mount: resolved at mount time, resolved again (re-reading
 * Docker's config.json) when the registry rejects them, transient failures retried. A tiny HTTP
 * registry with Basic auth whose password changes under the reader plays the registry.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registryAccess } from '@cryo/registry-auth';
import { RefreshingRegistrySource } from './registry-access';

const BLOB = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
const DIGEST = `sha256:${'a'.repeat(64)}`;

describe('RefreshingRegistrySource', () => {
  const dir = mkdtempSync(join(tmpdir(), 'clip-access-'));
  const dockerConfig = join(dir, 'config.json');
  let server: Server;
  let host = '';
  let password = 'first-pass';
  let failNext = 0;
  const seen: string[] = [];

  // Docker's config.json, as `docker login` (or a credential helper's rotation) rewrites it.
  const writeConfig = (pass: string): void => {
    writeFileSync(dockerConfig, JSON.stringify({ auths: { [host]: { auth: Buffer.from(`reader:${pass}`).toString('base64') } } }));
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      const auth = req.headers.authorization ?? '';
      seen.push(auth);
      if (failNext > 0) {
        failNext--;
        res.writeHead(503).end();
        return;
      }
      if (auth !== `Basic ${Buffer.from(`reader:${password}`).toString('base64')}`) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="test"', 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
      const m = /bytes=(\d+)-(\d+)/.exec(String(req.headers.range));
      const [start, end] = m ? [Number(m[1]), Number(m[2])] : [0, BLOB.length - 1];
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${BLOB.length}`, 'content-length': end - start + 1 });
      res.end(BLOB.subarray(start, end + 1));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    host = typeof address === 'object' && address !== null ? `127.0.0.1:${address.port}` : '';
    writeConfig(password);
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it('resolves credentials again when the registry starts rejecting them', async () => {
    const source = await RefreshingRegistrySource.create(host, 'cryo/snapshots', {
      resolve: () => registryAccess(host, { docker_config: dockerConfig }),
      reresolveEveryMs: 0,
    });
    try {
      expect((await source.readRange(DIGEST, 0, 3)).toString()).toBe('0123');
      // The password rotates on the registry and in Docker's config, under a live mount.
      password = 'second-pass';
      writeConfig(password);
      expect((await source.readRange(DIGEST, 10, 15)).toString()).toBe('abcdef');
      expect(seen.at(-1)).toBe(`Basic ${Buffer.from('reader:second-pass').toString('base64')}`);
    } finally {
      await source.close();
    }
  });

  it('retries a registry that is briefly unavailable', async () => {
    const source = await RefreshingRegistrySource.create(host, 'cryo/snapshots', {
      resolve: async () => ({ credentials: { username: 'reader', password }, insecure: true }),
    });
    try {
      failNext = 2;
      expect((await source.readRange(DIGEST, 0, 1)).toString()).toBe('01');
      expect(failNext).toBe(0);
    } finally {
      await source.close();
    }
  });
});
