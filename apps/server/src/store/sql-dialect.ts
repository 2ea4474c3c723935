/**
 * The few SQL expressions SQLite and PostgreSQL spell differently: reading and changing JSON held
 * in TEXT columns. Everything else the stores write is the same for both.
 */
import { sql, type RawBuilder } from 'kysely';
import type { Dialect } from '../db/migrations';

/** The text value of `key` in the JSON object held by `column` (null when absent). */
export function jsonText(dialect: Dialect, column: string, key: string): RawBuilder<string | null> {
  return dialect === 'postgres'
    ? sql<string | null>`(${sql.ref(column)}::jsonb ->> ${key})`
    : sql<string | null>`json_extract(${sql.ref(column)}, ${`$."${key}"`})`;
}

/** SUM of the numeric `key` in the JSON objects of `column`, 0 when there are none. */
export function jsonNumberSum(dialect: Dialect, column: string, key: string): RawBuilder<number> {
  return dialect === 'postgres'
    ? sql<number>`COALESCE(SUM((${sql.ref(column)}::jsonb ->> ${key})::float8), 0)`
    : sql<number>`COALESCE(SUM(json_extract(${sql.ref(column)}, ${`$.${key}`})), 0)`;
}

/** The JSON object in `column` (or `{}` when null) with `key` set to `value`. */
export function jsonSetKey(dialect: Dialect, column: string, key: string, value: unknown): RawBuilder<string> {
  const json = JSON.stringify(value);
  return dialect === 'postgres'
    ? sql<string>`jsonb_set(COALESCE(${sql.ref(column)}, '{}')::jsonb, ${`{${key}}`}::text[], ${json}::jsonb)::text`
    : sql<string>`json_set(COALESCE(${sql.ref(column)}, '{}'), ${`$.${key}`}, json(${json}))`;
}

/**
 * A constant written into the SQL text instead of bound as a parameter. SQLite uses a partial
 * index (`... WHERE status = 'deleting'`) only when the query states the index's condition with
 * the same literal; with `status = ?` it scans the table. Only for the fixed state names.
 */
export function lit<T extends string>(value: T): RawBuilder<T> {
  return sql.lit(value);
}

/** `lit` for each value of an `IN` list. */
export function lits<T extends string>(values: readonly T[]): Array<RawBuilder<T>> {
  return values.map((v) => sql.lit(v));
}
