/**
 * The server's database: SQLite (one file, the embedded default) or PostgreSQL (shared by several
 * server replicas), behind one query builder (Kysely) and one set of stores. Opening it brings the
 * schema up to date under a lock. Transactions give the work a `Stores` bound to the transaction;
 * what must happen after commit (waking a long poll, on this replica or, through PostgreSQL's
 * NOTIFY, on every other one) is registered on it and runs only once the commit succeeded.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, sql, SqliteDialect } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { Stores, type DatabaseEvent, type TxHooks } from '../store/stores';
import { MIGRATIONS, type Dialect, type Migration } from './migrations';
import { PgListener } from './pg-listener';
import type { Tables } from './schema';
import { cachingSqlite } from './sqlite-statements';
import {
  databasePassword,
  describeTarget,
  parseDatabaseTarget,
  scrubSecret,
  type DatabaseTarget,
} from './target';

export type { Dialect } from './migrations';

export interface DatabaseOptions {
  migrations?: readonly Migration[];
  /** PostgreSQL: the schema to work in (tests give each server its own); default `public`. */
  pgSchema?: string;
  /** PostgreSQL: connections in the pool (default 10). */
  poolSize?: number;
  logger?: Logger;
}

const RETRYABLE_PG_CODES = new Set(['40001', '40P01']); // serialization failure, deadlock detected
const MAX_TX_ATTEMPTS = 5;
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export class Database {
  /** Stores outside any transaction (each statement commits on its own). */
  readonly stores: Stores;
  /** Names this process among replicas: in leases and to skip its own notifications. */
  readonly replicaId = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private readonly handlers = new Map<DatabaseEvent, Set<(value: string) => void>>();
  private listener: PgListener | null = null;
  private closed = false;

  private constructor(
    readonly kysely: Kysely<Tables>,
    readonly dialect: Dialect,
    readonly target: DatabaseTarget,
    private readonly channel: string,
    private readonly logger: Logger | undefined,
  ) {
    this.stores = new Stores({ db: kysely, dialect }, this.rootHooks());
  }

  /**
   * Opens the database named by `setting` (a path or a postgres:// URL) and applies pending
   * migrations. Errors name the database with its password redacted.
   */
  static async open(setting: string | DatabaseTarget, options: DatabaseOptions = {}): Promise<Database> {
    const target = typeof setting === 'string' ? parseDatabaseTarget(setting) : setting;
    const migrations = options.migrations ?? MIGRATIONS;
    if (target.kind === 'sqlite') {
      if (target.path !== ':memory:') mkdirSync(dirname(target.path), { recursive: true });
      const raw = new BetterSqlite3(target.path);
      raw.pragma('journal_mode = WAL');
      raw.pragma('synchronous = NORMAL');
      raw.pragma('busy_timeout = 5000');
      raw.pragma('foreign_keys = ON');
      const kysely = new Kysely<Tables>({ dialect: new SqliteDialect({ database: cachingSqlite(raw) }) });
      const db = new Database(kysely, 'sqlite', target, 'cryo_events', options.logger);
      try {
        await db.migrate(migrations);
      } catch (err) {
        await kysely.destroy();
        throw err;
      }
      return db;
    }

    const schema = options.pgSchema;
    if (schema !== undefined && !SCHEMA_NAME.test(schema)) throw new Error(`invalid PostgreSQL schema name ${schema}`);
    const password = databasePassword(target.url);
    const clientConfig: pg.ClientConfig = {
      connectionString: target.url,
      // BIGINT (timestamps, counts) and NUMERIC (sums) come back as numbers, as from SQLite.
      types: { getTypeParser: numericTypeParser },
      ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    };
    const pool = new pg.Pool({ ...clientConfig, max: options.poolSize ?? 10 });
    pool.on('error', (err) => {
      options.logger?.warn({ error: scrubSecret(err.message, password) }, 'idle PostgreSQL connection failed');
    });
    const kysely = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
    const db = new Database(kysely, 'postgres', target, `cryo_events${schema === undefined ? '' : `_${schema}`}`, options.logger);
    try {
      // Two opens at once both pass IF NOT EXISTS; a lock makes the second wait and find it.
      if (schema !== undefined) {
        await kysely.transaction().execute(async (trx) => {
          await sql`SELECT pg_advisory_xact_lock(hashtext(${`cryo.schema.${schema}`}))`.execute(trx);
          await sql.raw(`CREATE SCHEMA IF NOT EXISTS ${schema}`).execute(trx);
        });
      }
      await db.migrate(migrations);
      db.listener = new PgListener(clientConfig, db.channel, password, {
        notification: (payload) => db.onNotification(payload),
        reconnected: () => db.emitLocal('resync', ''),
        logger: options.logger,
      });
      await db.listener.start();
    } catch (err) {
      await db.listener?.close();
      await kysely.destroy();
      const message = scrubSecret(err instanceof Error ? err.message : String(err), password);
      throw new Error(`cannot open ${describeTarget(target)}: ${message}`);
    }
    return db;
  }

  /**
   * Runs `work` in a transaction. PostgreSQL serialization failures and deadlocks are retried
   * (the work runs again from the start). After-commit hooks run once the commit succeeded.
   */
  async transaction<T>(work: (tx: Stores) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      const after: Array<() => void> = [];
      try {
        const result = await this.kysely.transaction().execute((trx) =>
          work(new Stores({ db: trx, dialect: this.dialect }, this.txHooks(after))),
        );
        for (const hook of after) this.runHook(hook);
        return result;
      } catch (err) {
        if (attempt < MAX_TX_ATTEMPTS && isRetryable(err)) continue;
        throw err;
      }
    }
  }

  /** Subscribes to an event from this replica's or (PostgreSQL) any replica's transactions. */
  on(event: DatabaseEvent, handler: (value: string) => void): () => void {
    let set = this.handlers.get(event);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(event, set);
    }
    const own = set;
    own.add(handler);
    return () => {
      own.delete(handler);
    };
  }

  async schemaVersion(): Promise<number> {
    const row = await this.kysely
      .selectFrom('schema_migrations')
      .select((eb) => eb.fn.max('version').as('version'))
      .executeTakeFirst();
    return row?.version ?? 0;
  }

  /** A cheap round trip: the database answers. */
  async ping(): Promise<void> {
    await sql`SELECT 1`.execute(this.kysely);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.listener?.close();
    await this.kysely.destroy();
  }

  private async migrate(migrations: readonly Migration[]): Promise<void> {
    const sorted = [...migrations].sort((a, b) => a.version - b.version);
    const known = Math.max(0, ...sorted.map((m) => m.version));
    const apply = async (db: Kysely<Tables>): Promise<void> => {
      await sql`CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at BIGINT NOT NULL
      )`.execute(db);
      const row = await db.selectFrom('schema_migrations').select((eb) => eb.fn.max('version').as('version')).executeTakeFirst();
      const current = row?.version ?? 0;
      if (current > known) {
        throw new Error(
          `database schema version ${current} is newer than this server understands (${known}); upgrade cryo-server`,
        );
      }
      for (const migration of sorted) {
        if (migration.version <= current) continue;
        await migration.up(db as unknown as Kysely<unknown>, this.dialect);
        await db.insertInto('schema_migrations')
          .values({ version: migration.version, name: migration.name, applied_at: Date.now() })
          .execute();
        this.logger?.info({ version: migration.version, name: migration.name }, 'database migration applied');
      }
    };
    if (this.dialect === 'postgres') {
      // One transaction under an advisory lock: a replica starting at the same moment waits,
      // then finds the migrations recorded. DDL is transactional in PostgreSQL.
      await this.kysely.transaction().execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(hashtext('cryo.migrations.' || current_schema()))`.execute(trx);
        await apply(trx);
      });
      return;
    }
    // SQLite: an immediate transaction takes the write lock before reading the version.
    await this.kysely.connection().execute(async (conn) => {
      await sql`BEGIN IMMEDIATE`.execute(conn);
      try {
        await apply(conn);
        await sql`COMMIT`.execute(conn);
      } catch (err) {
        await sql`ROLLBACK`.execute(conn);
        throw err;
      }
    });
  }

  private rootHooks(): TxHooks {
    return {
      afterCommit: (hook) => queueMicrotask(() => this.runHook(hook)),
      publish: async (db, event, value) => {
        await this.publishRemote(db, event, value);
        queueMicrotask(() => this.emitLocal(event, value));
      },
    };
  }

  private txHooks(after: Array<() => void>): TxHooks {
    return {
      afterCommit: (hook) => after.push(hook),
      publish: async (db, event, value) => {
        await this.publishRemote(db, event, value); // PostgreSQL delivers it at commit
        after.push(() => this.emitLocal(event, value));
      },
    };
  }

  private async publishRemote(db: Kysely<Tables>, event: DatabaseEvent, value: string): Promise<void> {
    if (this.dialect !== 'postgres') return;
    await sql`SELECT pg_notify(${this.channel}, ${`${this.replicaId}|${event}|${value}`})`.execute(db);
  }

  private onNotification(payload: string): void {
    const [origin, event, ...rest] = payload.split('|');
    if (origin === this.replicaId || event === undefined) return; // delivered locally already
    if (event === 'work' || event === 'op_end' || event === 'wake') this.emitLocal(event, rest.join('|'));
  }

  private emitLocal(event: DatabaseEvent, value: string): void {
    for (const handler of this.handlers.get(event) ?? []) this.runHook(() => handler(value));
  }

  private runHook(hook: () => void): void {
    try {
      hook();
    } catch (err) {
      this.logger?.error({ err }, 'after-commit hook failed');
    }
  }
}

function isRetryable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && RETRYABLE_PG_CODES.has(String(err.code));
}

const INT8_OID = 20;
const NUMERIC_OID = 1700;

function numericTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
  if (oid === INT8_OID || oid === NUMERIC_OID) return (value: string) => Number(value);
  return pg.types.getTypeParser(oid, format ?? 'text') as (value: string) => unknown;
}
