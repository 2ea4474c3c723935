/**
 * clip behind a proxy in front of a real registry (distribution 2.8), doing what proxies and
 * registries out there do and distribution does not:
 * - ignore Range and answer 200 with the whole blob: lazy reads keep working, with one warning
 *   (issue 8 item 6);
 * - answer 200 with only the requested part: a clear error naming the registry and what it did,
 *   never a gzip error (item 6);
 * - check credentials of their own that rotate, answering 403 `DENIED: Your authorization token
 *   has expired` (ECR) to the old secret: a long-lived lazy FUSE mount asks the credential helper
 *   again and keeps reading; credentials that never worked are a clear REGISTRY_DENIED (item 4).
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { ClipIndex, ClipReader, RegistryLayerSource, buildIndex } from '@cryo/clip';
import { mountClip, mountsUnder } from '@cryo/clip/fuse';
import { MediaType, RegistryClient } from '@cryo/oci';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lazyCapabilities } from '../apps/executor/src/runtime/lazy/capabilities';
import { mixedData } from '../libs/clip/src/testing/data';
import { sha256 } from '../libs/clip/src/testing/fixtures';
import { writeTar } from '../libs/clip/src/testing/tar-writer';
import { startRegistryProxy, type RegistryProxy } from './support/registry-proxy';
import { startRegistry, type TestRegistry } from './support/registry';

const execFileAsync = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const REPO = 'clip/proxied';
const work = mkdtempSync('/var/tmp/cryo-clip-proxy-');
const fileA = mixedData(3_000_000, 41);
const fileB = mixedData(3_000_000, 42);
const tar = writeTar([{ name: 'data/a.bin', data: fileA }, { name: 'data/b.bin', data: fileB }]);
let registry: TestRegistry;
let proxy: RegistryProxy;

/** Pushes a one-layer image straight to the registry (no proxy, no auth). */
async function pushImage(): Promise<void> {
  const client = new RegistryClient({ host: registry.host, insecure: true });
  try {
    const gz = gzipSync(tar);
    await client.uploadBlob(REPO, gz, sha256(gz), gz.length);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } }));
    await client.uploadBlob(REPO, config, sha256(config), config.length);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: sha256(config), size: config.length },
      layers: [{ mediaType: MediaType.OciLayerGzip, digest: sha256(gz), size: gz.length }],
    }));
    await client.putManifest(REPO, 'v1', manifest, MediaType.OciManifest);
  } finally {
    await client.close();
  }
}

beforeAll(async () => {
  registry = await startRegistry();
  await pushImage();
  proxy = await startRegistryProxy(registry.host);
});

afterAll(async () => {
  const left = mountsUnder(work).map((m) => m.mountpoint);
  await proxy?.close();
  await registry?.destroy();
  if (left.length === 0) rmSync(work, { recursive: true, force: true });
  expect(left).toEqual([]);
});

/** The index of the image as seen through the proxy (its host is the one reads go to), and its bytes. */
async function indexThroughProxy(credentials?: { username: string; password: string }): Promise<ClipIndex & { bytes: Buffer }> {
  const built = await buildIndex(`${proxy.host}/${REPO}:v1`, { span: 256 * 1024, ...(credentials ? { credentials } : {}) });
  return Object.assign(ClipIndex.fromBuffer(built.index), { bytes: built.index });
}

describe('a registry or proxy that ignores Range (issue 8 item 6)', () => {
  it('answering 200 with the whole blob: reads stay exact, the rest is discarded, one warning', async () => {
    const index = await indexThroughProxy();
    proxy.hooks = { forwardHeaders: (_req, headers) => ({ ...headers, range: undefined }) };
    proxy.requests.length = 0;
    const warnings: string[] = [];
    const client = new RegistryClient({ host: proxy.host, insecure: true, onWarning: (m) => warnings.push(m) });
    const reader = new ClipReader(index, { source: new RegistryLayerSource(client, REPO) });
    try {
      expect((await reader.read('/data/a.bin', 1_000_000, 4096)).equals(fileA.subarray(1_000_000, 1_004_096))).toBe(true);
      expect((await reader.readFile('/data/b.bin')).equals(fileB)).toBe(true);
      expect((await reader.read('/data/a.bin', 0, 100)).equals(fileA.subarray(0, 100))).toBe(true);
      const blobReads = proxy.requests.filter((r) => r.path.includes('/blobs/'));
      expect(blobReads.length).toBeGreaterThan(2);
      expect(blobReads.every((r) => r.range !== undefined && r.status === 200)).toBe(true);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(new RegExp(`^registry ${proxy.host} ignores Range: it answered 200 with the whole blob \\(\\d+ bytes\\) to a range request for bytes \\d+-\\d+ of blob sha256:`));
    } finally {
      await client.close();
      proxy.hooks = {};
    }
  });

  it('`cryo clip cat` through such a proxy prints the file and warns once on stderr', async () => {
    const file = join(work, 'proxied.clip');
    writeFileSync(file, (await indexThroughProxy()).bytes);
    proxy.hooks = { forwardHeaders: (_req, headers) => ({ ...headers, range: undefined }) };
    try {
      // asynchronously: the proxy answers from this process's event loop
      const cat = await execFileAsync('npx', ['tsx', 'apps/cli/src/main.ts', 'clip', 'cat', file, '/data/b.bin', '--no-cache'], {
        cwd: REPO_ROOT, maxBuffer: 1 << 26, encoding: 'buffer',
      });
      expect(cat.stdout.equals(fileB)).toBe(true);
      expect(cat.stderr.toString().match(/ignores Range/g)).toHaveLength(1);
    } finally {
      proxy.hooks = {};
    }
  });

  it('answering 200 with only the requested part: a clear error naming the registry and what it did', async () => {
    const index = await indexThroughProxy();
    const layer = index.layers[0];
    const client = new RegistryClient({ host: proxy.host, insecure: true });
    try {
      for (const keepContentRange of [true, false]) {
        // a proxy that passes the registry's 206 on as a 200 (with or without its Content-Range)
        proxy.hooks = {
          answer: (_req, status, headers) => (status === 206 ? { status: 200, headers: keepContentRange ? headers : { ...headers, 'content-range': undefined } } : { status, headers }),
        };
        const reader = new ClipReader(index, { source: new RegistryLayerSource(client, REPO) });
        const failure = await reader.read('/data/b.bin', 2_000_000, 4096).then(() => undefined, (err: unknown) => err as Error);
        expect(failure?.message).toMatch(
          new RegExp(`registry ${proxy.host} answered 200 to a range request for bytes \\d+-\\d+ of blob ${layer?.digest} of ${REPO} with \\d+ bytes`),
        );
        expect(failure?.message).toMatch(keepContentRange ? /and Content-Range "bytes \d+-\d+\/\d+"/ : new RegExp(`but the blob has ${layer?.size} bytes`));
        expect(failure?.message).not.toMatch(/inflate|checkpoint|corrupt/i);
      }
    } finally {
      await client.close();
      proxy.hooks = {};
    }
  });
});

const caps = await lazyCapabilities();

describe.skipIf(!caps.lazy)('credentials that expire under a long-lived lazy mount (issue 8 item 4)', () => {
  const helperDir = join(work, 'helper');
  const dockerConfig = join(work, 'docker-config.json');
  const EXPIRED = JSON.stringify({ errors: [{ code: 'DENIED', message: 'Your authorization token has expired. Reauthenticate and try again.' }] });
  let secret = 'secret-1';
  const savedPath = process.env.PATH;

  const helperCalls = (): number => readFileSync(join(helperDir, 'calls.log'), 'utf8').split('\n').filter((l) => l !== '').length;

  beforeAll(() => {
    // A docker credential helper (`docker-credential-rotating get`) answering with the current secret.
    mkdirSync(helperDir, { recursive: true });
    writeFileSync(join(helperDir, 'secret'), secret);
    writeFileSync(join(helperDir, 'calls.log'), '');
    const helper = join(helperDir, 'docker-credential-rotating');
    writeFileSync(helper, [
      '#!/bin/sh',
      'read -r server',
      `echo "$server" >> ${join(helperDir, 'calls.log')}`,
      `printf '{"ServerURL":"%s","Username":"AWS","Secret":"%s"}\\n' "$server" "$(cat ${join(helperDir, 'secret')})"`,
    ].join('\n') + '\n');
    chmodSync(helper, 0o755);
    writeFileSync(dockerConfig, JSON.stringify({ credHelpers: { [proxy.host]: 'rotating' } }));
    process.env.PATH = `${helperDir}:${savedPath ?? ''}`;
    // ECR-like: Basic credentials of the proxy's own, a 403 (not 401) for a secret that is no longer valid
    proxy.hooks = {
      intercept: (req, res) => {
        const auth = req.headers.authorization;
        if (auth === `Basic ${Buffer.from(`AWS:${secret}`).toString('base64')}`) return false;
        if (auth === undefined) {
          res.writeHead(401, { 'www-authenticate': 'Basic realm="ecr-like"', 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        } else {
          res.writeHead(403, { 'content-type': 'application/json' });
          res.end(EXPIRED);
        }
        return true;
      },
    };
  });

  afterAll(() => {
    process.env.PATH = savedPath;
    proxy.hooks = {};
  });

  it('a 403 after the secret rotated makes the mount ask the helper again; it keeps reading', async () => {
    const index = await indexThroughProxy({ username: 'AWS', password: secret });
    const indexPath = join(work, 'rotating.clip');
    writeFileSync(indexPath, index.bytes);
    const mnt = join(work, 'mnt-rotating');
    const logged: string[] = [];
    const mountedAt = Date.now();
    const mount = await mountClip(indexPath, mnt, { registry: { docker_config: dockerConfig }, log: (_l, message, fields) => logged.push(`${message} ${JSON.stringify(fields)}`) });
    try {
      expect((await readFile(join(mnt, 'data/a.bin'))).equals(fileA)).toBe(true);
      const callsBefore = helperCalls();
      expect(callsBefore).toBeGreaterThanOrEqual(1);

      // the secret rotates: the proxy answers the old one with 403 DENIED ... expired
      secret = 'secret-2';
      writeFileSync(join(helperDir, 'secret'), secret);
      proxy.requests.length = 0;
      // (the mount re-resolves credentials at most every 5 s)
      await new Promise((r) => setTimeout(r, Math.max(0, mountedAt + 5500 - Date.now())));
      expect((await readFile(join(mnt, 'data/b.bin'))).equals(fileB)).toBe(true);
      expect(helperCalls()).toBe(callsBefore + 1);
      expect(proxy.requests.map((r) => r.status)).toEqual(expect.arrayContaining([403, 401, 206]));
      expect(mount.stats().fs.ioErrors).toBe(0);
      expect(logged.join('\n')).toMatch(/registry credentials resolved again after a rejection/);
    } finally {
      await mount.unmount();
    }
  });

  it('a 403 on credentials that never worked is a clear REGISTRY_DENIED', async () => {
    const index = await indexThroughProxy({ username: 'AWS', password: secret });
    const client = new RegistryClient({ host: proxy.host, insecure: true, credentials: { username: 'AWS', password: 'never-valid' } });
    proxy.requests.length = 0;
    try {
      const reader = new ClipReader(index, { source: new RegistryLayerSource(client, REPO) });
      const failure = await reader.read('/data/a.bin', 0, 10).then(() => undefined, (err: unknown) => err as Error);
      expect(failure?.message).toContain(`registry ${proxy.host} denied user AWS access to ${REPO} (HTTP 403 DENIED: Your authorization token has expired. Reauthenticate and try again.)`);
      expect(failure?.cause).toMatchObject({ code: 'REGISTRY_DENIED', status: 403 });
      expect(proxy.requests.filter((r) => r.status === 403)).toHaveLength(1); // no retry
    } finally {
      await client.close();
    }
  });
});
