import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { parseWwwAuthenticate } from './challenge';
import { describeRegistryUser, type RegistryCredentials } from './credentials';
import { RegistryError } from './errors';
import { describeNetworkError } from './network-error';

export interface RegistryAuthenticatorOptions {
  /** Registry host (`host[:port]`), used in error messages. */
  host: string;
  credentials?: RegistryCredentials | undefined;
  /** undici dispatcher for token requests (the registry client passes its own). */
  dispatcher?: Dispatcher | undefined;
  userAgent?: string | undefined;
  /** Clock in milliseconds; injectable for tests. */
  now?: () => number;
  /** Fraction of a token's lifetime after which it is refreshed before use (default 0.8). */
  refreshAt?: number;
  /** Timeout for one token request, in milliseconds (default 30 s). */
  timeoutMs?: number;
  /** OAuth2 client_id sent with identity-token requests (default `cryo`). */
  clientId?: string;
}

type Scheme = { kind: 'basic' } | { kind: 'bearer'; realm: string; service: string | undefined };

interface CachedToken {
  header: string;
  refreshAt: number;
  expiresAt: number;
}

// Token lifetime when the token service does not say (distribution's token spec).
const DEFAULT_EXPIRES_IN_SECS = 60;

const TokenResponseSchema = z.looseObject({
  token: z.string().optional(),
  access_token: z.string().optional(),
  expires_in: z.number().optional(),
  refresh_token: z.string().optional(),
});

/**
 * Authorization for one registry host and one set of credentials.
 *
 * The scheme is learnt from the registry's first 401 (`onChallenge`); after that `authorize`
 * answers without a round trip: Basic credentials, or a Bearer token cached per scope and
 * refreshed once `refreshAt` of its lifetime has passed. Concurrent callers share one token
 * request per scope.
 */
export class RegistryAuthenticator {
  readonly host: string;
  private credentials: RegistryCredentials | undefined;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly userAgent: string;
  private readonly now: () => number;
  private readonly refreshFraction: number;
  private readonly timeoutMs: number;
  private readonly clientId: string;
  private scheme: Scheme | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<CachedToken>>();
  /** scope keys for which the registry has accepted these credentials */
  private readonly accepted = new Set<string>();

  constructor(options: RegistryAuthenticatorOptions) {
    this.host = options.host;
    this.credentials = options.credentials;
    this.dispatcher = options.dispatcher;
    this.userAgent = options.userAgent ?? 'cryo';
    this.now = options.now ?? Date.now;
    this.refreshFraction = options.refreshAt ?? 0.8;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.clientId = options.clientId ?? 'cryo';
  }

  /** Who authenticates, for error messages (`user myuser`, `an identity token`, `anonymous`). */
  get user(): string {
    return describeRegistryUser(this.credentials);
  }

  get hasCredentials(): boolean {
    return this.credentials !== undefined;
  }

  /**
   * The Authorization header value for a request needing `scope` (e.g.
   * `repository:cryo/snapshots:pull,push`; several scopes as an array), or undefined before
   * the registry has asked for authentication or when there is nothing to send.
   */
  async authorize(scope: string | readonly string[]): Promise<string | undefined> {
    const scheme = this.scheme;
    if (scheme === undefined) return undefined;
    if (scheme.kind === 'basic') return this.basicHeader();
    const scopes = normalizeScopes(scope);
    const key = scopes.join(' ');
    const cached = this.tokens.get(key);
    if (cached && this.now() < cached.refreshAt) return cached.header;
    try {
      return (await this.fetchShared(scheme, key, scopes)).header;
    } catch (error) {
      // A failed early refresh is not fatal while the old token is still valid.
      if (cached && this.now() < cached.expiresAt) return cached.header;
      throw error;
    }
  }

  /**
   * Handles a 401's `WWW-Authenticate` header and returns the Authorization value to retry
   * with (undefined: nothing better to send). `rejected` is the value the 401 answered; when
   * another caller already replaced it, the replacement is returned without a new request.
   */
  async onChallenge(wwwAuthenticate: string, scope: string | readonly string[], rejected?: string): Promise<string | undefined> {
    const challenges = parseWwwAuthenticate(wwwAuthenticate);
    const bearer = challenges.find((challenge) => challenge.scheme === 'bearer');
    const basic = challenges.find((challenge) => challenge.scheme === 'basic');
    if (bearer) {
      const realm = bearer.params.realm;
      if (realm === undefined || realm === '') {
        throw new RegistryError('REGISTRY_BAD_RESPONSE', `registry ${this.host} sent a Bearer challenge without a realm`, {
          host: this.host,
          status: 401,
        });
      }
      const scheme: Scheme = { kind: 'bearer', realm, service: bearer.params.service };
      this.scheme = scheme;
      const requested = normalizeScopes(scope);
      const key = requested.join(' ');
      // The registry may name the scope it wants (e.g. `*` instead of `delete` on old versions).
      const scopes = normalizeScopes([...requested, ...(bearer.params.scope ?? '').split(' ')]);
      const cached = this.tokens.get(key);
      if (cached && cached.header !== rejected && this.now() < cached.expiresAt) return cached.header;
      const pending = this.inflight.get(key);
      if (pending) return (await pending).header;
      this.tokens.delete(key);
      return (await this.fetchShared(scheme, key, scopes)).header;
    }
    if (basic) {
      this.scheme = { kind: 'basic' };
      return this.basicHeader();
    }
    return undefined;
  }

  /** Records that the registry accepted this authenticator's authorization for `scope`. */
  noteAccepted(scope: string | readonly string[]): void {
    this.accepted.add(normalizeScopes(scope).join(' '));
  }

  /**
   * Whether the registry accepted these credentials for `scope` before. A 403 then means they
   * expired or were revoked (ECR: `DENIED: Your authorization token has expired`), not that they
   * never allowed the access.
   */
  acceptedBefore(scope: string | readonly string[]): boolean {
    return this.accepted.has(normalizeScopes(scope).join(' '));
  }

  /**
   * After a 403 on credentials that worked before: an Authorization value to retry with — a
   * freshly fetched Bearer token (the cached one is dropped) — or undefined when nothing fresher
   * can be had here (Basic credentials: only resolving them again helps). `rejected` is the value
   * the 403 answered; when another caller already replaced it, the replacement is returned.
   */
  async onExpired(scope: string | readonly string[], rejected: string): Promise<string | undefined> {
    const scheme = this.scheme;
    if (scheme?.kind !== 'bearer') return undefined;
    const scopes = normalizeScopes(scope);
    const key = scopes.join(' ');
    const cached = this.tokens.get(key);
    if (cached && cached.header !== rejected && this.now() < cached.expiresAt) return cached.header;
    const pending = this.inflight.get(key);
    if (pending) return (await pending).header;
    this.tokens.delete(key);
    return (await this.fetchShared(scheme, key, scopes)).header;
  }

  /** Forgets cached tokens (e.g. after credentials changed on the registry side). */
  reset(): void {
    this.tokens.clear();
  }

  private basicHeader(): string | undefined {
    const credentials = this.credentials;
    if (!credentials || !('username' in credentials)) return undefined;
    return basicAuthorization(credentials.username, credentials.password);
  }

  private fetchShared(scheme: Extract<Scheme, { kind: 'bearer' }>, key: string, scopes: string[]): Promise<CachedToken> {
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const started = this.now();
    const promise = this.fetchToken(scheme, scopes)
      .then(({ token, expiresInSecs }) => {
        const lifetimeMs = expiresInSecs * 1000;
        const cached: CachedToken = {
          header: `Bearer ${token}`,
          refreshAt: started + lifetimeMs * this.refreshFraction,
          expiresAt: started + lifetimeMs,
        };
        this.tokens.set(key, cached);
        return cached;
      })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, promise);
    return promise;
  }

  private async fetchToken(
    scheme: Extract<Scheme, { kind: 'bearer' }>,
    scopes: string[],
  ): Promise<{ token: string; expiresInSecs: number }> {
    const credentials = this.credentials;
    const realm = parseRealm(scheme.realm, this.host);
    let response: Dispatcher.ResponseData;
    try {
      if (credentials && 'identityToken' in credentials) {
        // OAuth2 refresh-token grant, as the Docker CLI does with an identity token.
        const form = new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: credentials.identityToken,
          client_id: this.clientId,
          access_type: 'offline',
        });
        if (scheme.service !== undefined) form.set('service', scheme.service);
        if (scopes.length > 0) form.set('scope', scopes.join(' '));
        response = await request(realm, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': this.userAgent },
          body: form.toString(),
          dispatcher: this.dispatcher,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
        });
      } else {
        const url = new URL(realm);
        if (scheme.service !== undefined) url.searchParams.set('service', scheme.service);
        for (const scope of scopes) url.searchParams.append('scope', scope);
        const headers: Record<string, string> = { 'user-agent': this.userAgent };
        if (credentials) {
          url.searchParams.set('account', credentials.username);
          headers.authorization = basicAuthorization(credentials.username, credentials.password);
        }
        response = await request(url, {
          method: 'GET',
          headers,
          dispatcher: this.dispatcher,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
        });
      }
    } catch (error) {
      throw new RegistryError(
        'REGISTRY_UNREACHABLE',
        `token service ${realm.host} of registry ${this.host} is unreachable: ${describeNetworkError(error)}`,
        { host: this.host, cause: error },
      );
    }
    const text = await response.body.text().catch(() => '');
    const status = response.statusCode;
    if (status === 401) {
      throw new RegistryError(
        'REGISTRY_UNAUTHORIZED',
        `registry ${this.host} rejected credentials for ${this.user} (HTTP 401 from token service ${realm.host})`,
        { host: this.host, status },
      );
    }
    if (status === 403) {
      throw new RegistryError(
        'REGISTRY_DENIED',
        `registry ${this.host} denied ${this.user} access to ${scopes.join(' ') || 'the registry'} (HTTP 403 from token service ${realm.host})`,
        { host: this.host, status },
      );
    }
    if (status < 200 || status >= 300) {
      throw new RegistryError(
        'REGISTRY_BAD_RESPONSE',
        `token service ${realm.host} of registry ${this.host} answered HTTP ${status}`,
        { host: this.host, status },
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const parsed = TokenResponseSchema.safeParse(json);
    const token = parsed.success ? (parsed.data.token ?? parsed.data.access_token) : undefined;
    if (!parsed.success || token === undefined || token === '') {
      throw new RegistryError(
        'REGISTRY_BAD_RESPONSE',
        `token service ${realm.host} of registry ${this.host} answered without a token`,
        { host: this.host, status },
      );
    }
    if (credentials && 'identityToken' in credentials && parsed.data.refresh_token) {
      // Token services may rotate the refresh token; keep the newest.
      this.credentials = { identityToken: parsed.data.refresh_token };
    }
    const expiresIn = parsed.data.expires_in;
    return { token, expiresInSecs: expiresIn !== undefined && expiresIn > 0 ? expiresIn : DEFAULT_EXPIRES_IN_SECS };
  }
}

export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

function normalizeScopes(scope: string | readonly string[]): string[] {
  const list = typeof scope === 'string' ? scope.split(' ') : scope;
  return [...new Set(list.map((item) => item.trim()).filter((item) => item !== ''))].sort();
}

function parseRealm(realm: string, host: string): URL {
  try {
    const url = new URL(realm);
    if (url.protocol === 'http:' || url.protocol === 'https:') return url;
  } catch {
    // reported below
  }
  throw new RegistryError('REGISTRY_BAD_RESPONSE', `registry ${host} sent a Bearer challenge with an invalid realm "${realm}"`, {
    host,
    status: 401,
  });
}
