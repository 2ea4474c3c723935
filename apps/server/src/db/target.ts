/**
 * What the `database` setting names: a SQLite file (the embedded default) or a PostgreSQL server
 * (`postgres://user:password@host:5432/dbname`, shared by several server replicas). A value that
 * looks like a URL is never taken as a file path: a password must not end up in a file name.
 */
import { resolve } from 'node:path';

export type DatabaseTarget =
  | { kind: 'sqlite'; path: string }
  | { kind: 'postgres'; url: string };

/** `scheme://`, the way RFC 3986 spells a scheme (letters, digits, +, -, .). */
const URL_SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
const POSTGRES_SCHEMES = new Set(['postgres', 'postgresql']);

export class DatabaseSettingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatabaseSettingError';
  }
}

/** The URL scheme of a `database` value, or null when it is a file path. */
export function urlScheme(value: string): string | null {
  return URL_SCHEME.exec(value)?.[1]?.toLowerCase() ?? null;
}

/**
 * Reads a `database` value. Relative SQLite paths are resolved against the working directory.
 * Throws DatabaseSettingError (with the URL's password redacted) for a URL of another scheme or a
 * PostgreSQL URL that does not parse.
 */
export function parseDatabaseTarget(value: string): DatabaseTarget {
  const scheme = urlScheme(value);
  if (scheme === null) return { kind: 'sqlite', path: value === ':memory:' ? value : resolve(value) };
  if (!POSTGRES_SCHEMES.has(scheme)) {
    throw new DatabaseSettingError(
      `unsupported URL scheme "${scheme}:" in ${redactDatabaseUrl(value)}; use a SQLite file path ` +
        '(e.g. ./.cryo/server.db) or a postgres:// URL',
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new DatabaseSettingError(
      `${redactDatabaseUrl(value)} is not a valid URL (percent-encode reserved characters such as @ : / in the ` +
        'user name and password)',
    );
  }
  if (parsed.hostname === '' && parsed.searchParams.get('host') === null) {
    throw new DatabaseSettingError(`${redactDatabaseUrl(value)} names no host`);
  }
  return { kind: 'postgres', url: value };
}

/**
 * The URL with its password replaced by `***`, for logs and error messages. Works on strings
 * that do not parse as URLs too (it only looks at `scheme://user:password@`).
 */
export function redactDatabaseUrl(value: string): string {
  return value
    .replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#@:]*:)[^@]*@/, '$1***@')
    .replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/** The password of a PostgreSQL URL (decoded), to scrub it from driver messages; null if none. */
export function databasePassword(url: string): string | null {
  try {
    const parsed = new URL(url);
    const fromQuery = parsed.searchParams.get('password');
    if (parsed.password !== '') return decodeURIComponent(parsed.password);
    return fromQuery;
  } catch {
    return null;
  }
}

/** Removes every occurrence of `secret` (raw and percent-encoded) from a message. */
export function scrubSecret(message: string, secret: string | null): string {
  if (secret === null || secret === '') return message;
  return message.split(secret).join('***').split(encodeURIComponent(secret)).join('***');
}

/** What a target is called in logs: the file path, or the URL without its password. */
export function describeTarget(target: DatabaseTarget): string {
  return target.kind === 'sqlite' ? `SQLite ${target.path}` : `PostgreSQL ${redactDatabaseUrl(target.url)}`;
}
