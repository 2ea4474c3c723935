/**
 * ZoneCacheSource against real registries: Debian's docker-registry (distribution 2.8) as the
 * snapshot registry, and a second one run as its pull-through cache (proxy mode), as a zone
 * cache is run.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@cryo/oci';
import { RegistryError } from '@cryo/registry-auth';
import { startRegistry, type TestRegistry } from '../../../test/support/registry';
import { ZoneCacheCold, ZoneCacheSource, zoneCacheClient } from './zone-cache';

const USER = 'snap';
const PASSWORD = 'zone-test-password';
const REPO = 'zone/test';
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let upstream: TestRegistry;
let zone: TestRegistry;
const clients: RegistryClient[] = [];

beforeAll(async () => {
  upstream = await startRegistry({ htpasswd: { username: USER, password: PASSWORD } });
  // distribution 2.8 hands proxy.username/password to Bearer token services only: userinfo for Basic
  zone = await startRegistry({ proxy: { remoteurl: `http://${USER}:${PASSWORD}@${upstream.host}` } });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await zone?.destroy();
  await upstream?.destroy();
});

async function pushed(size: number): Promise<{ data: Buffer; digest: string }> {
  const client = new RegistryClient({ host: upstream.host, insecure: true, credentials: { username: USER, password: PASSWORD } });
  clients.push(client);
  const data = randomBytes(size);
  const digest = sha256(data);
  await client.uploadBlob(REPO, data, digest);
  return { data, digest };
}

describe('ZoneCacheSource (docker-registry in proxy mode)', () => {
  it('a cold blob: refused unread, left alone for a backoff; once the zone holds it, ranges come from it', async () => {
    const { data, digest } = await pushed(3 * 1024 * 1024 + 11);
    let now = 1_000_000;
    const source = new ZoneCacheSource(zoneCacheClient({ url: zone.host }), REPO, { backoffMs: 1000, maxBackoffMs: 4000, now: () => now });
    clients.push(source.client);

    // The zone cache answers a range of a blob it does not hold with a 200 of the whole blob.
    const first = await source.readRange(digest, 100, 4195, data.length).catch((err: unknown) => err);
    expect(first).toBeInstanceOf(ZoneCacheCold);
    expect((first as ZoneCacheCold).retryInMs).toBe(1000);
    // within the backoff no request goes out
    now += 500;
    const during = await source.readRange(digest, 100, 4195, data.length).catch((err: unknown) => err);
    expect(during).toBeInstanceOf(ZoneCacheCold);
    expect((during as ZoneCacheCold).retryInMs).toBe(500);

    // the zone cache stored the blob in the background (distribution fetches it on a miss)
    const deadline = Date.now() + 60_000;
    let state: 'warm' | 'warming' = 'warming';
    while (state !== 'warm' && Date.now() < deadline) {
      state = await source.warm(digest);
      if (state !== 'warm') await new Promise((r) => setTimeout(r, 200));
    }
    expect(state).toBe('warm');

    now += 600; // past the backoff
    const bytes = await source.readRange(digest, 100, 4195, data.length);
    expect(bytes.equals(data.subarray(100, 4196))).toBe(true);
  });

  it('the backoff doubles while the zone cache stays cold, up to its cap; a served range resets it', async () => {
    // a stand-in client: cold (a 200 refused) until told otherwise, as oci's getBlobRange reports it
    let cold = true;
    let requests = 0;
    const stub = {
      host: 'zone.test:5000',
      getBlobRange: async (): Promise<Buffer> => {
        requests++;
        if (cold) throw new RegistryError('REGISTRY_BAD_RESPONSE', 'answered 200 (the whole blob)', { host: 'zone.test:5000', status: 200 });
        return Buffer.from('ok');
      },
    } as unknown as RegistryClient;
    let now = 0;
    const source = new ZoneCacheSource(stub, REPO, { backoffMs: 1000, maxBackoffMs: 3000, now: () => now });
    const digest = sha256(Buffer.from('x'));
    const waits: number[] = [];
    for (let i = 0; i < 4; i++) {
      const err = await source.readRange(digest, 0, 1).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ZoneCacheCold);
      waits.push((err as ZoneCacheCold).retryInMs);
      now += (err as ZoneCacheCold).retryInMs;
    }
    expect(waits).toEqual([1000, 2000, 3000, 3000]);
    expect(requests).toBe(4);
    cold = false;
    await expect(source.readRange(digest, 0, 1)).resolves.toEqual(Buffer.from('ok'));
    cold = true;
    const again = await source.readRange(digest, 0, 1).catch((e: unknown) => e);
    expect((again as ZoneCacheCold).retryInMs).toBe(1000);
  });

  it('a blob the registry lacks is an error, not a cold answer', async () => {
    const source = new ZoneCacheSource(zoneCacheClient({ url: zone.host }), REPO);
    clients.push(source.client);
    const err = await source.readRange(sha256(randomBytes(8)), 0, 9).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(ZoneCacheCold);
  });
});
