import { getFromCredentialHelper } from './credential-helper';
import {
  credentialServerAddress,
  defaultDockerConfigPath,
  findAuthEntry,
  findCredHelper,
  readDockerConfig,
  type DockerAuthEntry,
  type DockerConfig,
} from './docker-config';
import { ConfigError } from './errors';

export type RegistryCredentials = { username: string; password: string } | { identityToken: string };

export interface ResolveCredentialsOptions {
  /** Credentials from cryo's own configuration; they win over Docker's config.json. */
  explicit?: { username?: string | undefined; password?: string | undefined } | undefined;
  /** Defaults to `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
  dockerConfigPath?: string | undefined;
  /** Environment for DOCKER_CONFIG, HOME and the credential helpers' PATH. */
  env?: NodeJS.ProcessEnv;
}

// Credential helpers answer with this user name when the secret is an identity (refresh) token.
const IDENTITY_TOKEN_USER = '<token>';

/**
 * Finds credentials for a registry host the Docker way: explicit configuration first, then
 * config.json (`credHelpers[host]`, `credsStore`, `auths[host]`). Undefined means anonymous.
 */
export async function resolveCredentials(
  host: string,
  options: ResolveCredentialsOptions = {},
): Promise<RegistryCredentials | undefined> {
  const explicit = options.explicit;
  if (explicit?.username !== undefined && explicit.password !== undefined) {
    return { username: explicit.username, password: explicit.password };
  }
  const env = options.env ?? process.env;
  const file = options.dockerConfigPath ?? defaultDockerConfigPath(env);
  const config = await readDockerConfig(file);
  const found = config ? await fromDockerConfig(host, config, file, env) : undefined;
  if (explicit?.username !== undefined) {
    // A configured user name without a password only uses Docker's credentials of that same user.
    if (found && 'username' in found && found.username === explicit.username) return found;
    throw new ConfigError([
      { path: '', message: `no password for user ${explicit.username} on ${host}: none is configured and none is in ${file}` },
    ]);
  }
  return found;
}

async function fromDockerConfig(
  host: string,
  config: DockerConfig,
  file: string,
  env: NodeJS.ProcessEnv,
): Promise<RegistryCredentials | undefined> {
  const entry = findAuthEntry(config, host);
  const helper = findCredHelper(config, host);
  const store = helper
    ? { name: helper.helper, configuredBy: `credHelpers["${helper.key}"] in ${file}` }
    : config.credsStore
      ? { name: config.credsStore, configuredBy: `credsStore in ${file}` }
      : undefined;
  if (store && store.name !== '') {
    const secret = await getFromCredentialHelper(store.name, credentialServerAddress(host), {
      env,
      configuredBy: store.configuredBy,
    });
    if (secret) {
      if (secret.username === IDENTITY_TOKEN_USER) return { identityToken: secret.secret };
      return { username: secret.username, password: secret.secret };
    }
    // Docker stops here; falling back to an inline auths entry is harmless and helps
    // configs that mix a desktop store with a hand-written entry.
  }
  return entry ? fromAuthEntry(entry, host, file) : undefined;
}

function fromAuthEntry(entry: DockerAuthEntry, host: string, file: string): RegistryCredentials | undefined {
  if (entry.identitytoken) return { identityToken: entry.identitytoken };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) {
      throw new ConfigError([{ path: `auths.${host}.auth`, message: 'is not base64 of "user:password"' }], file);
    }
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (entry.username !== undefined && entry.password !== undefined) {
    return { username: entry.username, password: entry.password };
  }
  return undefined;
}

/** Names who is authenticating, for error messages: never a secret. */
export function describeRegistryUser(credentials: RegistryCredentials | undefined): string {
  if (!credentials) return 'anonymous';
  if ('identityToken' in credentials) return 'an identity token';
  return `user ${credentials.username}`;
}
