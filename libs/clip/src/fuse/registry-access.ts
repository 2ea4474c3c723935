/**
 * How a mount reaches the registry. Credentials are resolved when the mount starts, from the
 * same inputs the executor uses (its dataplane config's `snapshot_registry` block and Docker's
 * config.json), and never written anywhere. Bearer tokens are refreshed by the client's
 * RegistryAuthenticator before they expire; when the registry still rejects the credentials
 * (a rotated password, a credential helper with a new secret), they are resolved again and the
 * request retried, so a mount that lives for days keeps reading.
 */
import { RegistryClient, isRegistryError } from '@cryo/oci';
import { SnapshotRegistrySchema, loadConfigFile, resolveCredentials, validateConfig, type RegistryCredentials } from '@cryo/registry-auth';
import { z } from 'zod';
import { isLoopbackHost, RegistryLayerSource } from '../registry-source';
import type { LayerSource } from '../source';

/** The keys of a dataplane config that concern registry access; every other key is ignored. */
export const RegistryAccessConfigSchema = z.looseObject({
  snapshot_registry: SnapshotRegistrySchema.optional(),
  docker_config: z.string().optional(),
});
export type RegistryAccessConfig = z.infer<typeof RegistryAccessConfigSchema>;

/** Env var naming a dataplane-config-like YAML file (the executor's own config works). */
export const REGISTRY_CONFIG_ENV = 'CRYO_CLIP_REGISTRY_CONFIG';
/** Env var holding the same keys as JSON, for callers whose config is not a file. */
export const REGISTRY_INLINE_ENV = 'CRYO_CLIP_REGISTRY';

/** Reads registry access from a dataplane-config-like YAML file (`${VAR}` expanded from env). */
export function loadRegistryAccess(file: string, env: NodeJS.ProcessEnv = process.env): RegistryAccessConfig {
  return loadConfigFile(file, RegistryAccessConfigSchema, env);
}

export function parseRegistryAccess(value: unknown, source?: string): RegistryAccessConfig {
  return validateConfig(value, RegistryAccessConfigSchema, source);
}

export interface ResolvedAccess {
  credentials: RegistryCredentials | undefined;
  insecure: boolean;
}

/** Credentials and scheme for `host`: the snapshot registry's block when it names that host, else Docker's config. */
export async function resolveAccess(config: RegistryAccessConfig, host: string): Promise<ResolvedAccess> {
  const registry = config.snapshot_registry;
  const own = registry !== undefined && registry.url === host;
  const credentials = await resolveCredentials(host, {
    explicit: own ? { username: registry.username, password: registry.password } : undefined,
    dockerConfigPath: config.docker_config,
  });
  return { credentials, insecure: own ? registry.insecure : isLoopbackHost(host) };
}

export interface RefreshingSourceOptions {
  /** re-resolves access (re-reading config files) when the registry rejects the credentials */
  resolve: () => Promise<ResolvedAccess>;
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
    access: ResolvedAccess,
    private readonly opts: RefreshingSourceOptions,
  ) {
    this.source = new RegistryLayerSource(this.makeClient(access), repository);
    this.lastResolve = Date.now();
  }

  static async create(host: string, repository: string, opts: RefreshingSourceOptions): Promise<RefreshingRegistrySource> {
    return new RefreshingRegistrySource(host, repository, await opts.resolve(), opts);
  }

  private makeClient(access: ResolvedAccess): RegistryClient {
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
