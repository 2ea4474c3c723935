import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  RegistryError,
  describeNetworkError,
  networkErrorCode,
  normalizeRegistryHost,
  type RegistryAuthenticator,
} from '@cryo/registry-auth';
import { request, type Dispatcher } from 'undici';

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface SendOptions {
  method: HttpMethod;
  /** `/v2/...` relative to the registry, or an absolute URL (an upload `Location`). */
  path: string | URL;
  /** Token scope(s) the request needs, e.g. `repository:cryo/snapshots:pull`. */
  scope: string | readonly string[];
  headers?: Record<string, string>;
  /** A Readable cannot be replayed: it is only sent once authorization is known. */
  body?: Buffer | Readable;
  /** Follow 3xx for GET/HEAD (blob storage redirects); default true for those methods. */
  followRedirects?: boolean;
}

export interface RegistryResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Dispatcher.ResponseData['body'];
  /** The URL that answered, after redirects. */
  url: URL;
}

/** What a failed request was about, for messages: `manifest cryo/snapshots:tag`. */
export interface Subject {
  what: string;
  repository?: string;
}

const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
// Connection resets of a reused keep-alive socket are retried once for idempotent requests.
const RETRYABLE_CODES = new Set(['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE']);
const IDEMPOTENT = new Set<HttpMethod>(['GET', 'HEAD', 'PUT', 'DELETE']);
/** Pause before retrying a request whose credentials expired (a fresh token just fetched). */
export const EXPIRED_RETRY_DELAY_MS = 250;

/** A Readable body cannot be sent twice. */
function replayable(options: SendOptions): boolean {
  return options.body === undefined || Buffer.isBuffer(options.body);
}

/**
 * HTTP to one registry: base URL, authorization with one retry after a 401 challenge (or a 403
 * on credentials that worked before: expired), redirects (Authorization dropped when the host
 * changes), and failures mapped to RegistryError codes with messages that name the registry and
 * never a secret.
 */
export class RegistryTransport {
  readonly host: string;
  readonly baseUrl: URL;
  private readonly dispatcher: Dispatcher;
  private readonly authenticator: RegistryAuthenticator;
  private readonly userAgent: string;

  constructor(options: { host: string; insecure: boolean; dispatcher: Dispatcher; authenticator: RegistryAuthenticator; userAgent: string }) {
    this.host = options.host;
    // Docker Hub's names (docker.io, index.docker.io) are not where its API lives.
    const apiHost = normalizeRegistryHost(options.host) === 'docker.io' ? DOCKER_HUB_API_HOST : options.host;
    this.baseUrl = new URL(`${options.insecure ? 'http' : 'https'}://${apiHost}/`);
    this.dispatcher = options.dispatcher;
    this.authenticator = options.authenticator;
    this.userAgent = options.userAgent;
  }

  async send(options: SendOptions): Promise<RegistryResponse> {
    const authorization = await this.authenticator.authorize(options.scope);
    const first = await this.exchange(options, authorization);
    if (first.status === 403 && authorization !== undefined && this.authenticator.acceptedBefore(options.scope)) {
      return this.afterExpiry(options, first, authorization);
    }
    if (first.status !== 401) return this.accepted(options, first, authorization);
    const challenge = headerValue(first.headers, 'www-authenticate');
    await discard(first);
    if (challenge === undefined || !replayable(options)) {
      throw this.unauthorized(first.status);
    }
    const retry = await this.authenticator.onChallenge(challenge, options.scope, authorization);
    if (retry === undefined || retry === authorization) throw this.unauthorized(first.status);
    const second = await this.exchange(options, retry);
    if (second.status === 401) {
      await discard(second);
      throw this.unauthorized(second.status);
    }
    return this.accepted(options, second, retry);
  }

  /** Notes credentials the registry let through (any answer but 401/403/5xx), for `afterExpiry`. */
  private accepted(options: SendOptions, response: RegistryResponse, authorization: string | undefined): RegistryResponse {
    const status = response.status;
    if (authorization !== undefined && status !== 401 && status !== 403 && status < 500) this.authenticator.noteAccepted(options.scope);
    return response;
  }

  /**
   * A 403 on credentials the registry accepted before for this scope: they expired or were
   * revoked (ECR answers `403 DENIED: Your authorization token has expired`, not 401). Treated
   * like a 401: a fresh token when there is one to fetch, one retry after a short pause, and
   * otherwise REGISTRY_UNAUTHORIZED — what makes a caller that can resolve credentials again (a
   * credential helper, a config file) do so and retry. A 403 on credentials that never worked
   * stays REGISTRY_DENIED (`failure`).
   */
  private async afterExpiry(options: SendOptions, first: RegistryResponse, authorization: string): Promise<RegistryResponse> {
    const detail = await registryErrorDetail(first);
    if (replayable(options)) {
      const retry = await this.authenticator.onExpired(options.scope, authorization);
      if (retry !== undefined && retry !== authorization) {
        await sleep(EXPIRED_RETRY_DELAY_MS);
        const second = await this.exchange(options, retry);
        if (second.status !== 401 && second.status !== 403) return this.accepted(options, second, retry);
        await discard(second);
      }
    }
    throw new RegistryError(
      'REGISTRY_UNAUTHORIZED',
      `registry ${this.host} answered HTTP 403${detail.text ? ` ${detail.text}` : ''} to credentials for ${this.authenticator.user} that it accepted before: ` +
        'they have expired or were revoked (resolve them again: credential helper, config, token)',
      { host: this.host, status: 403, registryCode: detail.code },
    );
  }

  /** The error for a response that is not what the caller expected. Consumes the body. */
  async failure(response: RegistryResponse, subject: Subject, action: string): Promise<RegistryError> {
    const detail = await registryErrorDetail(response);
    const status = response.status;
    const suffix = `(HTTP ${status}${detail.text ? ` ${detail.text}` : ''})`;
    const options = { host: this.host, status, registryCode: detail.code };
    switch (status) {
      case 401:
        return this.unauthorized(status);
      case 403:
        return new RegistryError(
          'REGISTRY_DENIED',
          `registry ${this.host} denied ${this.authenticator.user} access to ${subject.repository ?? subject.what} ${suffix}`,
          options,
        );
      case 404:
        return new RegistryError('REGISTRY_NOT_FOUND', `${subject.what} not found in registry ${this.host}`, options);
      case 405:
        return new RegistryError('REGISTRY_DENIED', `registry ${this.host} does not allow ${action} of ${subject.what} ${suffix}`, options);
      case 415:
        return new RegistryError(
          'REGISTRY_UNSUPPORTED_MEDIA_TYPE',
          `registry ${this.host} does not accept the media type for ${action} of ${subject.what} ${suffix}`,
          options,
        );
      case 429:
        return new RegistryError('REGISTRY_BAD_RESPONSE', `registry ${this.host} is rate limiting requests ${suffix}`, options);
      case 502:
      case 503:
      case 504:
        return new RegistryError('REGISTRY_UNREACHABLE', `registry ${this.host} is unavailable ${suffix}`, options);
      default:
        return new RegistryError(
          'REGISTRY_BAD_RESPONSE',
          `registry ${this.host} failed ${action} of ${subject.what} ${suffix}`,
          options,
        );
    }
  }

  badResponse(message: string, status?: number): RegistryError {
    return new RegistryError('REGISTRY_BAD_RESPONSE', `registry ${this.host} ${message}`, { host: this.host, status });
  }

  unauthorized(status: number): RegistryError {
    const message = this.authenticator.hasCredentials
      ? `registry ${this.host} rejected credentials for ${this.authenticator.user} (HTTP ${status})`
      : `registry ${this.host} requires authentication and no credentials are configured for it (HTTP ${status})`;
    return new RegistryError('REGISTRY_UNAUTHORIZED', message, { host: this.host, status });
  }

  resolve(path: string | URL): URL {
    return path instanceof URL ? path : new URL(path, this.baseUrl);
  }

  private async exchange(options: SendOptions, authorization: string | undefined): Promise<RegistryResponse> {
    const follow = options.followRedirects ?? (options.method === 'GET' || options.method === 'HEAD');
    let url = this.resolve(options.path);
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...options.headers };
      // Credentials are for the registry only, never for storage it redirects to.
      if (authorization !== undefined && url.host === this.baseUrl.host) headers.authorization = authorization;
      const response = await this.once(url, options, headers);
      const location = headerValue(response.headers, 'location');
      if (!follow || !REDIRECTS.has(response.status) || location === undefined) return response;
      await discard(response);
      if (hop >= MAX_REDIRECTS) throw this.badResponse(`redirected more than ${MAX_REDIRECTS} times for ${options.method} ${url.pathname}`);
      url = new URL(location, url);
    }
  }

  private async once(url: URL, options: SendOptions, headers: Record<string, string>): Promise<RegistryResponse> {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await request(url, {
          method: options.method,
          headers,
          body: options.body ?? null,
          dispatcher: this.dispatcher,
        });
        return { status: response.statusCode, headers: response.headers, body: response.body, url };
      } catch (error) {
        const code = networkErrorCode(error);
        if (attempt === 1 && replayable(options) && IDEMPOTENT.has(options.method) && code !== undefined && RETRYABLE_CODES.has(code)) {
          await sleep(50);
          continue;
        }
        const where = url.host === this.baseUrl.host ? '' : ` (at ${url.host})`;
        throw new RegistryError('REGISTRY_UNREACHABLE', `registry ${this.host} is unreachable${where}: ${describeNetworkError(error)}`, {
          host: this.host,
          cause: error,
        });
      }
    }
  }
}

export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  if (Array.isArray(value)) return value[0];
  return value;
}

/** Reads and drops a body so the connection can be reused; never throws. */
export async function discard(response: RegistryResponse): Promise<void> {
  await response.body.dump({ limit: 1024 * 1024 }).catch(() => undefined);
}

/**
 * Closes the connection of a response whose body will not be read (the rest is not downloaded).
 * undici answers destroy() by emitting an AbortError on the body: expected here, and it must not
 * reach the process as an uncaught exception.
 */
export function abandon(response: RegistryResponse): void {
  response.body.on('error', () => undefined);
  response.body.destroy();
}

/** Reads a whole body into memory, refusing more than `limit` bytes. */
export async function readBody(response: RegistryResponse, limit: number, what: string, host: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of response.body) {
      const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
      total += buffer.length;
      if (total > limit) {
        response.body.destroy();
        throw new RegistryError('REGISTRY_BAD_RESPONSE', `registry ${host} sent more than ${limit} bytes for ${what}`, {
          host,
          status: response.status,
        });
      }
      chunks.push(buffer);
    }
  } catch (error) {
    if (error instanceof RegistryError) throw error;
    throw new RegistryError('REGISTRY_UNREACHABLE', `registry ${host} is unreachable: ${describeNetworkError(error)} while reading ${what}`, {
      host,
      cause: error,
    });
  }
  return Buffer.concat(chunks, total);
}

/** `MANIFEST_UNKNOWN: manifest unknown` from distribution's `{"errors":[...]}` body. */
async function registryErrorDetail(response: RegistryResponse): Promise<{ code: string | undefined; text: string }> {
  let text = '';
  try {
    text = (await readBody(response, 64 * 1024, 'an error body', '')).toString('utf8');
  } catch {
    return { code: undefined, text: '' };
  }
  try {
    const json: unknown = JSON.parse(text);
    if (typeof json === 'object' && json !== null && 'errors' in json && Array.isArray(json.errors)) {
      const first: unknown = json.errors[0];
      if (typeof first === 'object' && first !== null) {
        const code = 'code' in first && typeof first.code === 'string' ? first.code : undefined;
        const message = 'message' in first && typeof first.message === 'string' ? first.message : undefined;
        return { code, text: [code, message].filter((part) => part !== undefined).join(': ') };
      }
    }
  } catch {
    // not JSON: a proxy's HTML page, say; its first line is still informative
  }
  const line = text.trim().split('\n')[0] ?? '';
  return { code: undefined, text: line.length > 200 ? `${line.slice(0, 200)}...` : line };
}
