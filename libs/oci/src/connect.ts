/**
 * The one way cryo's apps open a RegistryClient for a host: credentials and http/https from
 * @cryo/registry-auth's `registryAccess` policy, so every caller decides the same way.
 */
import { registryAccess, type RegistryAccessSettings } from '@cryo/registry-auth';
import { RegistryClient, type RegistryClientOptions } from './client';

export interface ConnectOptions extends Omit<RegistryClientOptions, 'host' | 'insecure' | 'credentials'> {
  /** environment for DOCKER_CONFIG, HOME and credential helpers (default process.env) */
  env?: NodeJS.ProcessEnv;
}

/** A client for `host` with the credentials and scheme `settings` give it; close it when done. */
export async function connectRegistry(host: string, settings: RegistryAccessSettings = {}, options: ConnectOptions = {}): Promise<RegistryClient> {
  const { env, ...clientOptions } = options;
  const access = await registryAccess(host, settings, env);
  return new RegistryClient({ ...clientOptions, host, insecure: access.insecure, credentials: access.credentials });
}
