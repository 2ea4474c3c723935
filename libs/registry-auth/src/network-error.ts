// TLS failures that usually mean "this registry speaks plain http" or "self-signed certificate".
const TLS_CODES = new Set([
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
  ...TLS_CODES,
]);

/** The errno-style code of a connection failure, looking through undici's `cause` chain. */
export function networkErrorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    if ('code' in current && typeof current.code === 'string' && current.code !== '') return current.code;
    if (current instanceof AggregateError) {
      const first: unknown = current.errors[0];
      if (first !== undefined) {
        current = first;
        continue;
      }
    }
    current = current.cause;
  }
  return undefined;
}

/** True when the error means the server could not be talked to (as opposed to a bad answer). */
export function isNetworkError(error: unknown): boolean {
  const code = networkErrorCode(error);
  return code !== undefined && NETWORK_CODES.has(code);
}

/** `ECONNREFUSED`, or `UND_ERR_CONNECT_TIMEOUT`, with a hint for TLS mismatches. */
export function describeNetworkError(error: unknown): string {
  const code = networkErrorCode(error);
  if (code === undefined) return error instanceof Error ? error.message : String(error);
  if (TLS_CODES.has(code)) {
    return `${code} (TLS failed: a plain-http registry needs insecure: true)`;
  }
  return code;
}
