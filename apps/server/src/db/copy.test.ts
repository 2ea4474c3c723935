import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dropTestSchema, newTestSchema, TEST_DATABASE, testPostgresUrl } from '../testing/harness';
import { copyDatabase, CopyError } from './copy';
import { Database } from './database';
import type { Tables } from './schema';

// `cryo-server db copy` needs a PostgreSQL: it runs in the unit-pg project.
let dir: string;
let schema: string;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cryo-copy-'));
  schema = newTestSchema();
  if (TEST_DATABASE !== 'postgres') return;
  const client = new pg.Client({ connectionString: testPostgresUrl() });
  await client.connect();
  await client.query(`CREATE SCHEMA ${schema}`);
  await client.end();
});
afterEach(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (TEST_DATABASE === 'postgres') await dropTestSchema(schema);
});

/** The target URL, working in this test's own schema (libpq's `options` parameter). */
function targetUrl(): string {
  return `${testPostgresUrl()}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
}

const TABLES = [['namespaces', 'name'], ['executors', 'id'], ['sandboxes', 'id'], ['snapshots', 'id'], ['operations', 'id'], ['reaper_records', 'seq'],
  ['pending_launches', 'sandbox_id']] as const;

async function dump(db: Database): Promise<Record<string, unknown[]>> {
  const out: Record<string, unknown[]> = {};
  for (const [table, key] of TABLES) {
    out[table] = await db.kysely.selectFrom(table as keyof Tables).selectAll().orderBy(key as never).execute();
  }
  return out;
}

/** A SQLite catalogue with rows in every table, written by the stores as the server would. */
async function sqliteCatalogue(path: string): Promise<Database> {
  const db = await Database.open(path);
  const now = Date.parse('2030-01-01T00:00:00Z');
  await db.transaction(async (tx) => {
    await tx.executors.recordHeartbeat('exec-a', {
      host: 'a.local', version: '1', labels: { zone: 'x' }, capacity: { cpus: 4, memory_mb: 8192, max_sandboxes: 10 },
      capabilities: { lazy: false, lazy_unavailable_reason: 'none' }, registry: { url: '127.0.0.1:5001', repository: 'cryo/snapshots' },
      sandboxes: [], images: [],
    }, now);
    for (let i = 0; i < 7; i += 1) {
      const ns = `ns-${i % 3}`;
      await tx.namespaces.ensure(ns, now);
      await tx.sandboxes.insert({
        id: `sbx-${i}`, namespace: ns, image: 'busybox', baseImage: 'busybox', command: ['sh', '-c', `echo ${i} ünïcode`],
        labels: { n: String(i) }, resources: { cpus: 0.5 }, timeoutSecs: 0, executorId: 'exec-a', pinned: i === 0,
        pendingReason: 'waiting', restoredFromSnapshot: null, restoreMode: null, now: now + i,
      });
      await tx.snapshots.insert({
        id: `snap-${i}`, namespace: ns, sandboxId: `sbx-${i}`, executorId: 'exec-a', tag: `t${i}`, userTag: false,
        labels: {}, plannedRef: `127.0.0.1:5001/cryo/snapshots:t${i}`, baseImage: 'busybox', ttlSecs: 3600, now: now + i,
      });
      await tx.operations.insert(`op-${i}`, 'delete_sandbox', 'exec-a', { sandbox_id: `sbx-${i}` }, { sandboxId: `sbx-${i}` }, now);
      await tx.records.insert({
        snapshotId: `snap-${i}`, namespace: ns, action: 'expired', imageRef: null, digest: null, registryResult: 'none',
        localRemoved: ['a', 'b'], bytesReclaimed: 5_000_000_000 + i, attempts: 1, at: now,
      });
    }
    await tx.launches.insert({
      sandboxId: 'sbx-1', snapshotId: 'snap-0', mode: 'eager',
      payload: { sandbox_id: 'sbx-1', namespace: 'ns-1', image: 'busybox', command: null, env: { A: '1' }, labels: {}, resources: {} },
    }, now);
  });
  return db;
}

describe.skipIf(TEST_DATABASE !== 'postgres')('cryo-server db copy', () => {
  it('copies every row, verifies the counts, and copies nothing twice when run again', async () => {
    const path = join(dir, 'server.db');
    const source = await sqliteCatalogue(path);
    const before = await dump(source);
    await source.close();

    const first = await copyDatabase(path, targetUrl());
    expect(first).toEqual([
      { table: 'namespaces', source: 3, inserted: 3, verified: 3 },
      { table: 'executors', source: 1, inserted: 1, verified: 1 },
      { table: 'sandboxes', source: 7, inserted: 7, verified: 7 },
      { table: 'snapshots', source: 7, inserted: 7, verified: 7 },
      { table: 'operations', source: 7, inserted: 7, verified: 7 },
      { table: 'reaper_records', source: 7, inserted: 7, verified: 7 },
      { table: 'pending_launches', source: 1, inserted: 1, verified: 1 },
    ]);
    const again = await copyDatabase(path, targetUrl(), { batchSize: 2 }); // idempotent, in small batches
    expect(again.map((c) => [c.inserted, c.verified === c.source])).toEqual(first.map(() => [0, true]));

    const target = await Database.open(targetUrl());
    try {
      expect(await dump(target)).toEqual(before); // value for value, bigints and JSON text included
      // New reaper records continue after the copied ones.
      await target.stores.records.insert({
        snapshotId: 'snap-new', namespace: 'ns-0', action: 'deleted', imageRef: null, digest: null, registryResult: 'none',
        localRemoved: [], bytesReclaimed: 0, attempts: 1, at: 1,
      });
      const seqs = (await target.kysely.selectFrom('reaper_records').select('seq').orderBy('seq').execute()).map((r) => r.seq);
      expect(seqs.at(-1)).toBeGreaterThan(Math.max(...seqs.slice(0, -1)));
    } finally {
      await target.close();
    }
  });

  it('refuses a missing source or a target that is not PostgreSQL, naming it', async () => {
    await expect(copyDatabase(join(dir, 'nope.db'), targetUrl())).rejects.toThrow(new CopyError(`--from ${join(dir, 'nope.db')}: no such file`));
    const path = join(dir, 'server.db');
    await (await sqliteCatalogue(path)).close();
    await expect(copyDatabase(path, join(dir, 'other.db'))).rejects.toThrow(/--to must be a postgres:\/\/ URL/);
    await expect(copyDatabase(path, 'mysql://u:pw@h/db')).rejects.toThrow(/unsupported URL scheme "mysql:" in mysql:\/\/u:\*\*\*@h\/db/);
  });

  it('runs as `cryo-server db copy` and prints the verified counts, without the password', async () => {
    const path = join(dir, 'server.db');
    await (await sqliteCatalogue(path)).close();
    const bin = resolve(import.meta.dirname, '..', '..', 'bin', 'cryo-server.js');
    const result = spawnSync(process.execPath, [bin, 'db', 'copy', '--from', path, '--to', targetUrl()], { encoding: 'utf8', timeout: 60_000 });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('sandboxes            7         7         7');
    expect(result.stdout).toContain('copy complete');
    const password = new URL(testPostgresUrl()).password;
    const wrong = spawnSync(process.execPath, [bin, 'db', 'copy', '--from', path, '--to', targetUrl().replace(password, 'Wr0ng')], { encoding: 'utf8', timeout: 60_000 });
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toMatch(/db copy failed: cannot open PostgreSQL postgres:\/\/cryo:\*\*\*@/);
    expect(wrong.stderr).not.toContain('Wr0ng');
  });
});
