/**
 * Secret-bearing keys, and the pino `redact.paths` that cover them at the top level, one level
 * down and at their known homes in cryo's configuration and HTTP logs.
 */
const SECRET_KEYS = [
  'password',
  'token',
  'authorization',
  'api_keys',
  'executor_token',
  'identityToken',
  'identitytoken',
  'secret',
] as const;

export const REDACT_PATHS: readonly string[] = [
  ...SECRET_KEYS.flatMap((key) => [key, `*.${key}`]),
  'snapshot_registry.password',
  'config.snapshot_registry.password',
  'headers.authorization',
  'req.headers.authorization',
  'request.headers.authorization',
  'auth.api_keys',
  'auth.executor_token',
  'credentials.password',
  'credentials.identityToken',
];

export const REDACTED = '[REDACTED]';

const SECRET_KEY_SET = new Set<string>([...SECRET_KEYS.map((key) => key.toLowerCase()), 'refresh_token', 'access_token']);
// `auth` is a secret in Docker's config.json (base64 user:password) but a section name in
// cryo's server config, so only its string values are secrets.
const SECRET_WHEN_STRING = new Set<string>(['auth']);

/** True for keys whose values are secrets wherever they appear (case-insensitive). */
export function isSecretKey(key: string): boolean {
  return SECRET_KEY_SET.has(key.toLowerCase());
}

/**
 * A deep copy of a plain JSON-like value with every secret-keyed value replaced by
 * `[REDACTED]` at any depth, for values printed outside pino (CLI output, error details).
 */
export function redactSecrets<T>(value: T): T {
  return redactNode(value, new WeakSet()) as T;
}

function redactNode(value: unknown, seen: WeakSet<object>): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (seen.has(value)) return '[Circular]';
  seen.add(value);
  if (Array.isArray(value)) return value.map((item) => redactNode(item, seen));
  if (Buffer.isBuffer(value) || value instanceof Date) return value;
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    const secret =
      (isSecretKey(key) && item !== undefined && item !== null) ||
      (SECRET_WHEN_STRING.has(key.toLowerCase()) && typeof item === 'string');
    out[key] = secret ? REDACTED : redactNode(item, seen);
  }
  return out;
}

/** Removes userinfo (`user:pass@`) from a URL string, for logging registry or proxy URLs. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/i, '$1');
}
