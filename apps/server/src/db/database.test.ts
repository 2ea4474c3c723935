import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dropTestSchema, newTestSchema, TEST_DATABASE, testPostgresUrl } from '../testing/harness';
import { Database, type DatabaseOptions } from './database';
import { MIGRATIONS, type Migration } from './migrations';
import { databasePassword } from './target';

// Runs against SQLite in the `unit` project and against PostgreSQL in `unit-pg`.
let dir: string;
let schema: string;
const opened: Database[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cryo-db-'));
  schema = newTestSchema();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.close()));
  rmSync(dir, { recursive: true, force: true });
  if (TEST_DATABASE === 'postgres') await dropTestSchema(schema);
});

async function open(options: DatabaseOptions = {}): Promise<Database> {
  const db = TEST_DATABASE === 'postgres'
    ? await Database.open(testPostgresUrl(), { pgSchema: schema, ...options })
    : await Database.open(join(dir, 'nested', 'server.db'), options);
  opened.push(db);
  return db;
}

async function close(db: Database): Promise<void> {
  opened.splice(opened.indexOf(db), 1);
  await db.close();
}

describe(`database (${TEST_DATABASE})`, () => {
  it('creates the schema, applies the migrations once and records them; data survives a reopen', async () => {
    const db = await open();
    expect(db.dialect).toBe(TEST_DATABASE);
    if (TEST_DATABASE === 'sqlite') {
      const mode = await sql<{ journal_mode: string }>`PRAGMA journal_mode`.execute(db.kysely);
      expect(mode.rows[0]?.journal_mode).toBe('wal');
      expect(readdirSync(join(dir, 'nested'))).toContain('server.db');
    }
    expect(await db.schemaVersion()).toBe(MIGRATIONS.at(-1)?.version);
    await db.stores.namespaces.ensure('kept', 1);
    await close(db);
    const again = await open();
    const recorded = await again.kysely.selectFrom('schema_migrations').select('version').orderBy('version').execute();
    expect(recorded.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    expect(await again.kysely.selectFrom('namespaces').select('name').execute()).toEqual([{ name: 'kept' }]);
  });

  it('applies a new migration on top and refuses a database newer than the code', async () => {
    await close(await open());
    const next: Migration[] = [...MIGRATIONS, {
      version: 99,
      name: 'test column',
      up: async (db) => {
        await db.schema.alterTable('namespaces').addColumn('note', 'text').execute();
      },
    }];
    const upgraded = await open({ migrations: next });
    expect(await upgraded.schemaVersion()).toBe(99);
    await sql`UPDATE namespaces SET note = 'x'`.execute(upgraded.kysely);
    await close(upgraded);
    await expect(open()).rejects.toThrow(/schema version 99 is newer than this server understands/);
  });

  // Replicas share PostgreSQL; one SQLite file is one server (better-sqlite3 waits synchronously for
  // a lock, so two in one process would block each other).
  it.runIf(TEST_DATABASE === 'postgres')('applies each migration once when two servers open an empty database at the same moment', async () => {
    const applied: string[] = [];
    const logger = { info: (fields: { version?: number }) => applied.push(String(fields.version)), warn: () => undefined, error: () => undefined };
    const options = { logger: logger as unknown as DatabaseOptions['logger'] };
    const [a, b] = await Promise.all([open(options), open(options)]);
    expect(await a.schemaVersion()).toBe(MIGRATIONS.at(-1)?.version);
    expect(await b.schemaVersion()).toBe(MIGRATIONS.at(-1)?.version);
    expect(applied.sort()).toEqual(MIGRATIONS.map((m) => String(m.version)).sort());
    const rows = await a.kysely.selectFrom('schema_migrations').select('version').execute();
    expect(rows).toHaveLength(MIGRATIONS.length);
  });

  it('runs after-commit hooks and delivers events only when the transaction commits', async () => {
    const db = await open();
    const seen: string[] = [];
    db.on('work', (value) => seen.push(value));
    await expect(db.transaction(async (tx) => {
      await tx.namespaces.ensure('rolled-back', 1);
      await tx.publish('work', 'exec-never');
      throw new Error('abort');
    })).rejects.toThrow('abort');
    await db.transaction(async (tx) => {
      await tx.namespaces.ensure('committed', 1);
      await tx.publish('work', 'exec-a');
      expect(seen).toEqual([]); // not before the commit
    });
    expect(seen).toEqual(['exec-a']);
    expect((await db.kysely.selectFrom('namespaces').select('name').execute()).map((r) => r.name)).toEqual(['committed']);
  });

  it.runIf(TEST_DATABASE === 'postgres')('delivers one replica\'s events to another through NOTIFY, once each', async () => {
    const a = await open();
    const b = await open();
    const atA: string[] = [];
    const atB: string[] = [];
    a.on('work', (v) => atA.push(v));
    b.on('work', (v) => atB.push(v));
    const arrived = new Promise<void>((resolve) => b.on('op_end', () => resolve()));
    await a.transaction(async (tx) => {
      await tx.publish('work', 'exec-1');
      await tx.publish('op_end', 'op-1');
    });
    await arrived;
    expect(atA).toEqual(['exec-1']);
    expect(atB).toEqual(['exec-1']);
  });

  it.runIf(TEST_DATABASE === 'postgres')('names the server without its password when the password is wrong', async () => {
    const good = testPostgresUrl();
    const password = databasePassword(good) ?? '';
    const bad = good.replace(`:${password}@`, ':Wr0ng-s3cret@');
    const error = await Database.open(bad, { pgSchema: schema }).then(() => null, (err: unknown) => err as Error);
    expect(error?.message).toMatch(/^cannot open PostgreSQL postgres:\/\/cryo:\*\*\*@127\.0\.0\.1:\d+\/cryo: .*password authentication failed/);
    expect(error?.message).not.toContain('Wr0ng-s3cret');
  });
});
