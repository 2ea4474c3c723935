/**
 * Where the executor's registry credentials come from: the `snapshot_registry` block for its own
 * registry, Docker's config.json (auths, credsStore, credHelpers) for any other host.
 */
import { resolveCredentials, describeRegistryUser, type RegistryCredentials } from '@cryo/registry-auth';
import type { DataplaneConfig } from './config';

export interface DockerAuthConfig {
  username?: string;
  password?: string;
  identitytoken?: string;
  serveraddress: string;
}

export class RegistryCredentialSource {
  constructor(private readonly config: Pick<DataplaneConfig, 'snapshot_registry' | 'docker_config'>) {}

  async credentials(host: string): Promise<RegistryCredentials | undefined> {
    const registry = this.config.snapshot_registry;
    const explicit = registry !== undefined && registry.url === host
      ? { username: registry.username, password: registry.password }
      : undefined;
    return resolveCredentials(host, { explicit, dockerConfigPath: this.config.docker_config });
  }

  async dockerAuth(host: string): Promise<DockerAuthConfig | undefined> {
    const creds = await this.credentials(host);
    if (creds === undefined) return undefined;
    if ('identityToken' in creds) return { identitytoken: creds.identityToken, serveraddress: host };
    return { username: creds.username, password: creds.password, serveraddress: host };
  }

  async describeUser(host: string): Promise<string> {
    return describeRegistryUser(await this.credentials(host));
  }
}

/** The registry host of an image reference, or undefined for Docker Hub style short names. */
export function registryHostOf(ref: string): string | undefined {
  const slash = ref.indexOf('/');
  if (slash < 0) return undefined;
  const first = ref.slice(0, slash);
  return first.includes('.') || first.includes(':') || first === 'localhost' ? first : undefined;
}
