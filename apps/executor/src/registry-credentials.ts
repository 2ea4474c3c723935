/**
 * The executor's registry credentials, in the forms its clients need (Docker's X-Registry-Auth,
 * a user description for messages), decided by @cryo/registry-auth's `registryAccess` policy:
 * the `snapshot_registry` block for its own registry, Docker's config.json for any other host.
 */
import { describeRegistryUser, registryAccess, type RegistryAccessSettings, type RegistryCredentials } from '@cryo/registry-auth';

export interface DockerAuthConfig {
  username?: string;
  password?: string;
  identitytoken?: string;
  serveraddress: string;
}

export class RegistryCredentialSource {
  constructor(readonly settings: RegistryAccessSettings) {}

  async credentials(host: string): Promise<RegistryCredentials | undefined> {
    return (await registryAccess(host, this.settings)).credentials;
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
