/**
 * `cryo-server db copy --from PATH.db --to postgres://...`: moves an existing SQLite catalogue
 * into PostgreSQL. Both are brought to the current schema first; then every table is copied in
 * primary-key order, in batches, each row inserted unless the target has it already (so running
 * the copy again is harmless and finishes an interrupted one). Afterwards every source row's key
 * is counted in the target: the copy fails unless all are there. Leases and the migration record
 * are not copied (each database keeps its own).
 *
 * Stop the server that uses the SQLite file first: a catalogue that changes during the copy is
 * copied as it was when each batch was read.
 */
import { existsSync } from 'node:fs';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import { Database } from './database';
import type { Tables } from './schema';
import { parseDatabaseTarget, redactDatabaseUrl } from './target';

/** Tables in an order that satisfies their foreign keys, with their primary key. */
const COPIED: ReadonlyArray<{ table: CopiedTable; key: CopyKey }> = [
  { table: 'namespaces', key: 'name' },
  { table: 'executors', key: 'id' },
  { table: 'sandboxes', key: 'id' },
  { table: 'snapshots', key: 'id' },
  { table: 'operations', key: 'id' },
  { table: 'reaper_records', key: 'seq' },
  { table: 'pending_launches', key: 'sandbox_id' },
];
type CopyKey = 'name' | 'id' | 'seq' | 'sandbox_id';
type CopiedTable = Exclude<keyof Tables, 'schema_migrations' | 'leases'>;

export interface CopiedCount {
  table: string;
  /** Rows in the SQLite file. */
  source: number;
  /** Rows this run inserted (0 for a table copied before). */
  inserted: number;
  /** Source rows found in the target afterwards (must equal `source`). */
  verified: number;
}

export class CopyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CopyError';
  }
}

/** Copies the catalogue; throws CopyError when an argument is wrong or a count does not match. */
export async function copyDatabase(
  from: string,
  to: string,
  options: { logger?: Logger; batchSize?: number } = {},
): Promise<CopiedCount[]> {
  const source = parseDatabaseTarget(from);
  if (source.kind !== 'sqlite') throw new CopyError(`--from must be a SQLite file, not ${redactDatabaseUrl(from)}`);
  if (!existsSync(source.path)) throw new CopyError(`--from ${source.path}: no such file`);
  const target = parseDatabaseTarget(to);
  if (target.kind !== 'postgres') throw new CopyError(`--to must be a postgres:// URL, not ${to}`);
  const batchSize = options.batchSize ?? 500;
  const loggerOption = options.logger === undefined ? {} : { logger: options.logger };

  const src = await Database.open(source, loggerOption);
  let dst: Database;
  try {
    dst = await Database.open(target, loggerOption);
  } catch (err) {
    await src.close();
    throw err;
  }
  try {
    const counts: CopiedCount[] = [];
    for (const { table, key } of COPIED) {
      counts.push(await copyTable(src, dst, table, key, batchSize));
      options.logger?.info(counts.at(-1), `copied ${table}`);
    }
    // reaper_records.seq is a serial: later inserts must continue after the copied rows.
    await sql`SELECT setval(pg_get_serial_sequence('reaper_records', 'seq'), COALESCE((SELECT MAX(seq) FROM reaper_records), 0) + 1, false)`
      .execute(dst.kysely);
    const short = counts.filter((c) => c.verified !== c.source);
    if (short.length > 0) {
      throw new CopyError(
        `copy incomplete: ${short.map((c) => `${c.table} has ${c.verified} of ${c.source} rows in the target`).join('; ')}`,
      );
    }
    return counts;
  } finally {
    await src.close();
    await dst.close();
  }
}

async function copyTable(src: Database, dst: Database, table: CopiedTable, key: CopyKey, batchSize: number): Promise<CopiedCount> {
  // Untyped on purpose: one loop for every table whose rows go across as they are.
  const from = src.kysely as unknown as Kysely<Record<string, Record<string, string | number | null>>>;
  const into = dst.kysely as unknown as typeof from;
  const count: CopiedCount = { table, source: 0, inserted: 0, verified: 0 };
  let after: string | number | null = null;
  for (;;) {
    let query = from.selectFrom(table).selectAll().orderBy(key).limit(batchSize);
    if (after !== null) query = query.where(key, '>', after);
    const rows = await query.execute();
    if (rows.length === 0) break;
    count.source += rows.length;
    const keys = rows.map((r) => r[key] ?? null).filter((k): k is string | number => k !== null);
    after = keys.at(-1) ?? null;
    const result = await into.insertInto(table).values(rows).onConflict((oc) => oc.column(key).doNothing()).executeTakeFirst();
    count.inserted += Number(result.numInsertedOrUpdatedRows ?? 0n);
    const present = await into.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).where(key, 'in', keys).executeTakeFirst();
    count.verified += Number(present?.n ?? 0);
    if (rows.length < batchSize) break;
  }
  return count;
}
