import type { Statement } from 'better-sqlite3';
import type { Database } from './database';

const caches = new WeakMap<Database, Map<string, Statement>>();

/**
 * A prepared statement for `sql`, compiled once per database connection. Compiling is the most
 * expensive part of a small query; the reaper and the list routes run the same few thousands of times.
 */
export function statement(db: Database, sql: string): Statement {
  let cache = caches.get(db);
  if (cache === undefined) {
    cache = new Map();
    caches.set(db, cache);
  }
  let prepared = cache.get(sql);
  if (prepared === undefined) {
    prepared = db.prepare(sql);
    cache.set(sql, prepared);
  }
  return prepared;
}

/** `'a', 'b'`: a fixed list of status names for an SQL `IN (...)`, from the constants that name them. */
export function sqlStrings(values: readonly string[]): string {
  return values.map((v) => `'${v.replaceAll("'", "''")}'`).join(', ');
}
