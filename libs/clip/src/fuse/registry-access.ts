/**
 * How a mount reaches the registry. It is handed its registry access as plain data
 * (@cryo/registry-auth's RegistryAccessSettings: the snapshot registry block and where Docker's
 * config.json is) and resolves credentials from it when the mount starts; nothing is written
 * anywhere. Bearer tokens are refreshed by the client's RegistryAuthenticator before they expire;
 * when the registry still rejects the credentials (a credential helper with a new secret, a
 * rotated config.json), they are resolved again and the request retried, so a mount that lives
 * for days keeps reading.
 */
import { RegistryClient, isRegistryError } from '@cryo/oci';
import type { RegistryAccess } from '@cryo/registry-auth';
import { RegistryLayerSource } from '../registry-source';
import type { LayerSource } from '../source';

export interface RefreshingSourceOptions {
  /** re-resolves access (re-reading Docker's config, asking its credential helper) when the registry rejects the credentials */
  resolve: () => Promise<RegistryAccess>;
  /** attempts per request on network errors and 5xx answers (default 4) */
  attempts?: number;
  /** shortest time between two credential re-resolutions (default 5 s) */
  reresolveEveryMs?: number;
  log?: (message: string, fields: Record<string, unknown>) => void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function transient(err: unknown): boolean {
  if (!isRegistryError(err)) return false;
  return err.code === 'REGISTRY_UNREACHABLE' || (err.status !== undefined && err.status >= 500);
}

/** A registry LayerSource that survives expiring tokens, rotated credentials and brief outages. */
export class RefreshingRegistrySource implements LayerSource {
  private source: RegistryLayerSource;
  private lastResolve: number;
  private refreshing: Promise<void> | undefined;
  private readonly retired: RegistryClient[] = [];

  private constructor(
    readonly host: string,
    readonly repository: string,
    access: RegistryAccess,
    private readonly opts: RefreshingSourceOptions,
  ) {
    this.source = new RegistryLayerSource(this.makeClient(access), repository);
    this.lastResolve = Date.now();
  }

  static async create(host: string, repository: string, opts: RefreshingSourceOptions): Promise<RefreshingRegistrySource> {
    return new RefreshingRegistrySource(host, repository, await opts.resolve(), opts);
  }

  private makeClient(access: RegistryAccess): RegistryClient {
    return new RegistryClient({ host: this.host, insecure: access.insecure, credentials: access.credentials, userAgent: 'cryo-clip-mount' });
  }

  private async refreshCredentials(): Promise<void> {
    if (Date.now() - this.lastResolve < (this.opts.reresolveEveryMs ?? 5000)) return;
    this.refreshing ??= (async () => {
      try {
        const access = await this.opts.resolve();
        this.retired.push(this.source.client);
        this.source = new RegistryLayerSource(this.makeClient(access), this.repository);
        this.opts.log?.('registry credentials resolved again after a rejection', { host: this.host });
      } finally {
        this.lastResolve = Date.now();
        this.refreshing = undefined;
      }
    })();
    await this.refreshing;
  }

  private async withRetries<T>(what: (source: RegistryLayerSource) => Promise<T>): Promise<T> {
    const attempts = this.opts.attempts ?? 4;
    let refreshed = false;
    for (let attempt = 1; ; attempt++) {
      try {
        return await what(this.source);
      } catch (err) {
        if (isRegistryError(err) && err.code === 'REGISTRY_UNAUTHORIZED' && !refreshed) {
          refreshed = true;
          await this.refreshCredentials();
          continue;
        }
        if (!transient(err) || attempt >= attempts) throw err;
        this.opts.log?.('registry read failed; retrying', { host: this.host, attempt, err: err instanceof Error ? err.message : String(err) });
        await sleep(Math.min(200 * 3 ** (attempt - 1), 5000));
      }
    }
  }

  readRange(digest: string, start: number, endInclusive: number, blobSize?: number): Promise<Buffer> {
    return this.withRetries((s) => s.readRange(digest, start, endInclusive, blobSize));
  }

  openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    return this.withRetries((s) => s.openStream(digest));
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.source.close(), ...this.retired.map((c) => c.close())]);
  }
}
