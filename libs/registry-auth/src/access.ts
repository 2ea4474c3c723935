/**
 * One policy for reaching a registry host, used by every part of cryo that talks to a registry
 * (executor pushes and pulls, clip indexes, lazy mounts, the server's reaper): which credentials,
 * and plain http or https.
 *
 * - The configured `snapshot_registry` block answers for its own host: its user and password
 *   (else Docker's credentials of that user), and its `insecure` setting.
 * - Any other host gets Docker's credentials (config.json: credHelpers, credsStore, auths), and
 *   plain http only when it is a loopback address, as dockerd allows without configuration.
 *
 * - A `zone_cache` (optional) mirrors the snapshot registry's blobs for a zone; lazy mounts read
 *   layers from it first (libs/clip's ZoneCacheSource), with its own credentials.
 *
 * `RegistryAccessSettings` is plain data: a process that must reach registries on its own (a
 * lazy mount) is handed these settings and resolves them itself, again whenever the registry
 * rejects its credentials, so helper-issued secrets keep refreshing for as long as it lives.
 */
import { z } from 'zod';
import { SnapshotRegistrySchema, ZoneCacheSchema } from './config';
import { resolveCredentials, type RegistryCredentials } from './credentials';

export const RegistryAccessSettingsSchema = z.strictObject({
  snapshot_registry: SnapshotRegistrySchema.optional(),
  /** Docker's config.json (auths, credsStore, credHelpers); default `$DOCKER_CONFIG` or `~/.docker`. */
  docker_config: z.string().optional(),
  /** a zone's pull-through mirror of the snapshot registry, read before it (lazy mounts) */
  zone_cache: ZoneCacheSchema.optional(),
});
export type RegistryAccessSettings = z.infer<typeof RegistryAccessSettingsSchema>;

export interface RegistryAccess {
  /** undefined: anonymous */
  credentials: RegistryCredentials | undefined;
  /** plain http instead of https */
  insecure: boolean;
}

/**
 * The host part of `host`, `host:port`, `[v6]:port` or a bare IPv6 address, lowercased.
 * `127.0.0.1:5000` -> `127.0.0.1`; `[::1]:5000` -> `::1`; `::1` -> `::1`.
 */
export function hostName(host: string): string {
  const value = host.trim().toLowerCase();
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    return end < 0 ? value.slice(1) : value.slice(1, end);
  }
  const colons = value.split(':').length - 1;
  return colons === 1 ? value.slice(0, value.indexOf(':')) : value;
}

/** True for `localhost`, 127.0.0.0/8 and ::1, with or without a port. */
export function isLoopbackHost(host: string): boolean {
  const name = hostName(host);
  return name === 'localhost' || name === '::1' || name === '0:0:0:0:0:0:0:1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** Credentials and scheme for `host` under `settings` (see the policy above). */
export async function registryAccess(host: string, settings: RegistryAccessSettings = {}, env?: NodeJS.ProcessEnv): Promise<RegistryAccess> {
  const registry = settings.snapshot_registry;
  const own = registry !== undefined && registry.url === host;
  const credentials = await resolveCredentials(host, {
    explicit: own ? { username: registry.username, password: registry.password } : undefined,
    dockerConfigPath: settings.docker_config,
    ...(env === undefined ? {} : { env }),
  });
  return { credentials, insecure: own ? registry.insecure : isLoopbackHost(host) };
}
