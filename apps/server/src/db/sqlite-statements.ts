/**
 * better-sqlite3 for Kysely, with prepared statements kept per SQL text. Compiling is the most
 * expensive part of a small SQLite query, and the reaper and the list routes run the same few
 * statements thousands of times. Kysely's SQLite driver prepares on every call; this hands it a
 * database whose `prepare` answers from a bounded cache (least recently used out first).
 * Statements are never used concurrently: the driver serializes the one connection.
 */
import type BetterSqlite3 from 'better-sqlite3';
import type { SqliteDatabase, SqliteStatement } from 'kysely';

const MAX_CACHED = 500;

export function cachingSqlite(db: BetterSqlite3.Database, maxCached = MAX_CACHED): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    close: () => db.close(),
    prepare(text: string): SqliteStatement {
      const hit = cache.get(text);
      if (hit !== undefined) {
        cache.delete(text); // re-inserted below: most recently used last
        cache.set(text, hit);
        return hit;
      }
      const statement = db.prepare(text) as unknown as SqliteStatement;
      cache.set(text, statement);
      if (cache.size > maxCached) {
        const oldest = cache.keys().next().value;
        if (oldest !== undefined) cache.delete(oldest);
      }
      return statement;
    },
  };
}
