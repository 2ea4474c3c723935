/**
 * The zone cache tier: a registry shared by the hosts of a zone that mirrors the snapshot
 * registry's blobs — Debian's `docker-registry` (distribution 2.8) run as a pull-through cache
 * (`proxy.remoteurl`). Reads try host disk -> zone cache -> the registry itself (span-store.ts walks
 * the tiers of a FallbackLayerSource, and a tier whose bytes fail a span digest counts as failed).
 *
 * What distribution 2.8's proxy does, measured (docs/benchmarks-lazy.md): a blob it holds is served
 * from its storage with Range (206). A blob it does not hold yet is answered 200 with the whole
 * blob, streamed from upstream (Range ignored), while it fetches the blob from upstream a second
 * time in the background to store it. So a range read that meets a cold blob would cost the whole
 * blob on the wire twice. This source therefore refuses such an answer unread (closing the
 * connection stops the streaming copy after a few MB; the background fetch goes on and warms the
 * blob), reports the blob cold so the read falls back to the registry, and leaves the zone alone
 * for that blob for a while (1 s, doubling up to 30 s) before asking again: each cold answer costs
 * upstream a few MB.
 */
import { RegistryClient } from '@cryo/oci';
import { isLoopbackHost, isRegistryError, type ZoneCache } from '@cryo/registry-auth';
import type { LayerSource } from './source';

/** A read the zone cache cannot serve yet: it does not hold the blob (it is fetching it). */
export class ZoneCacheCold extends Error {
  override readonly name = 'ZoneCacheCold';
  constructor(
    readonly host: string,
    readonly digest: string,
    readonly retryInMs: number,
  ) {
    super(`zone cache ${host} does not hold ${digest} yet (it is fetching it); reading from the registry, asking the zone cache again in ${Math.round(retryInMs / 1000)} s`);
  }
}

export interface ZoneCacheSourceOptions {
  /** first wait before asking again about a cold blob (default 1 s); doubles up to `maxBackoffMs` */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** the time, for tests */
  now?: () => number;
}

export function zoneCacheClient(zone: ZoneCache, userAgent = 'cryo-clip-zone'): RegistryClient {
  return new RegistryClient({
    host: zone.url,
    insecure: zone.insecure ?? isLoopbackHost(zone.url),
    credentials: zone.username === undefined ? undefined : { username: zone.username, password: zone.password ?? '' },
    userAgent,
  });
}

export class ZoneCacheSource implements LayerSource {
  /** blobs the zone cache answered cold: when to ask again, and the wait after that */
  private readonly cold = new Map<string, { until: number; backoff: number }>();
  private readonly now: () => number;

  constructor(
    readonly client: RegistryClient,
    readonly repository: string,
    private readonly opts: ZoneCacheSourceOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  get host(): string {
    return this.client.host;
  }

  async readRange(digest: string, start: number, endInclusive: number, blobSize?: number): Promise<Buffer> {
    const known = this.cold.get(digest);
    if (known !== undefined && this.now() < known.until) throw new ZoneCacheCold(this.host, digest, known.until - this.now());
    try {
      const bytes = await this.client.getBlobRange(this.repository, digest, start, endInclusive, {
        wholeBlob: 'refuse',
        ...(blobSize === undefined ? {} : { blobSize }),
      });
      this.cold.delete(digest);
      return bytes;
    } catch (err) {
      if (!(isRegistryError(err) && err.status === 200)) throw err;
      const backoff = known === undefined ? this.opts.backoffMs ?? 1000 : Math.min(known.backoff * 2, this.opts.maxBackoffMs ?? 30_000);
      this.cold.set(digest, { until: this.now() + backoff, backoff });
      throw new ZoneCacheCold(this.host, digest, backoff);
    }
  }

  /** The whole blob from the zone cache (a cold one streams through from upstream). */
  async openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    const { stream } = await this.client.getBlob(this.repository, digest, { verify: false });
    return stream;
  }

  /**
   * Ask the zone cache to hold `digest` (e.g. right after it was pushed), without downloading it:
   * 'warm' when it already serves ranges of it, 'warming' when this made it fetch the blob.
   */
  async warm(digest: string): Promise<'warm' | 'warming'> {
    try {
      await this.client.getBlobRange(this.repository, digest, 0, 0, { wholeBlob: 'refuse' });
      return 'warm';
    } catch (err) {
      if (isRegistryError(err) && err.status === 200) return 'warming';
      throw err;
    }
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
