/**
 * What every store works through: the query builder over the database or one transaction, and
 * which SQL dialect it speaks. Stores import this file, never stores.ts (which imports them).
 */
import type { Kysely } from 'kysely';
import type { Dialect } from '../db/migrations';
import type { Tables } from '../db/schema';

export interface SqlContext {
  /** The database, or the transaction the work runs in. */
  readonly db: Kysely<Tables>;
  readonly dialect: Dialect;
}

/** Rows a write changed, from Kysely's result (bigint) as a number. */
export function changedRows(result: { numUpdatedRows?: bigint; numDeletedRows?: bigint } | undefined): number {
  return Number(result?.numUpdatedRows ?? result?.numDeletedRows ?? 0n);
}
