export { ConfigError, CredentialHelperError, RegistryError, formatKeyPath, isRegistryError } from './errors';
export type { ConfigIssue, RegistryErrorCode, RegistryErrorOptions } from './errors';
export { expandEnv } from './env';
export { SnapshotRegistrySchema, ZoneCacheSchema, loadConfigFile, parseConfig, validateConfig } from './config';
export type { SnapshotRegistry, ZoneCache } from './config';
export { resolveCredentials, describeRegistryUser } from './credentials';
export { RegistryAccessSettingsSchema, hostName, isLoopbackHost, registryAccess } from './access';
export type { RegistryAccess, RegistryAccessSettings } from './access';
export type { RegistryCredentials, ResolveCredentialsOptions } from './credentials';
export {
  DOCKER_HUB_SERVER,
  DockerConfigSchema,
  credentialServerAddress,
  defaultDockerConfigPath,
  normalizeRegistryHost,
  readDockerConfig,
} from './docker-config';
export type { DockerConfig } from './docker-config';
export { getFromCredentialHelper } from './credential-helper';
export { parseWwwAuthenticate } from './challenge';
export type { AuthChallenge } from './challenge';
export { RegistryAuthenticator, basicAuthorization } from './authenticator';
export type { RegistryAuthenticatorOptions } from './authenticator';
export { REDACT_PATHS, REDACTED, isSecretKey, redactSecrets, redactUrl } from './redact';
export { describeNetworkError, isNetworkError, networkErrorCode } from './network-error';
