/**
 * Errors of this library are values with a stable `code`; messages name what a user can fix
 * (a key path, a registry host, a user name) and never carry a password or a token.
 */

export interface ConfigIssue {
  /** Dotted key path such as `snapshot_registry.url`; empty for the document itself. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID' as const;
  readonly issues: readonly ConfigIssue[];
  readonly file: string | undefined;

  constructor(issues: readonly ConfigIssue[], file?: string) {
    super(formatIssues(issues, file));
    this.name = 'ConfigError';
    this.issues = issues;
    this.file = file;
  }

  /** The same issues, attributed to a configuration file. */
  inFile(file: string): ConfigError {
    return new ConfigError(this.issues, file);
  }
}

function formatIssues(issues: readonly ConfigIssue[], file: string | undefined): string {
  if (issues.length === 0) return file ? `${file}: invalid configuration` : 'invalid configuration';
  return issues
    .map((issue) => [file, issue.path, issue.message].filter((part) => part !== undefined && part !== '').join(': '))
    .join('\n');
}

/** `['snapshot_registry', 'url']` -> `snapshot_registry.url`; array indices as `[0]`. */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

export type RegistryErrorCode =
  | 'REGISTRY_UNAUTHORIZED'
  | 'REGISTRY_DENIED'
  | 'REGISTRY_NOT_FOUND'
  | 'REGISTRY_UNREACHABLE'
  | 'REGISTRY_BAD_RESPONSE'
  | 'REGISTRY_UNSUPPORTED_MEDIA_TYPE';

export interface RegistryErrorOptions {
  /** Registry host (`host[:port]`) the failure is about. */
  host: string;
  /** HTTP status, when the registry (or its token service) answered. */
  status?: number;
  /** Error code from the registry's JSON error body (`MANIFEST_UNKNOWN`, `DENIED`, ...). */
  registryCode?: string;
  cause?: unknown;
}

export class RegistryError extends Error {
  readonly code: RegistryErrorCode;
  readonly host: string;
  readonly status: number | undefined;
  readonly registryCode: string | undefined;

  constructor(code: RegistryErrorCode, message: string, options: RegistryErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.host = options.host;
    this.status = options.status;
    this.registryCode = options.registryCode;
  }
}

export function isRegistryError(error: unknown): error is RegistryError {
  return error instanceof RegistryError;
}

export class CredentialHelperError extends Error {
  readonly code = 'CREDENTIAL_HELPER_FAILED' as const;
  readonly helper: string;

  constructor(helper: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CredentialHelperError';
    this.helper = helper;
  }
}
