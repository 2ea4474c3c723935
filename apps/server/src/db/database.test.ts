import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, schemaVersion } from './database';
import { MIGRATIONS } from './migrations';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cryo-db-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('database', () => {
  it('creates the file in WAL mode, applies migrations once and records them', () => {
    const path = join(dir, 'nested', 'server.db');
    const db = openDatabase(path);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(schemaVersion(db)).toBe(MIGRATIONS.at(-1)?.version);
    db.prepare('INSERT INTO namespaces (name, created_at) VALUES (?, ?)').run('kept', 1);
    db.close();
    const again = openDatabase(path);
    expect(again.prepare('SELECT COUNT(*) AS n FROM schema_migrations').get()).toEqual({ n: MIGRATIONS.length });
    expect(again.prepare('SELECT name FROM namespaces').all()).toEqual([{ name: 'kept' }]);
    again.close();
  });

  it('applies a new migration on top and refuses a database newer than the code', () => {
    const path = join(dir, 'server.db');
    openDatabase(path).close();
    const next = [...MIGRATIONS, { version: 99, name: 'test column', sql: 'ALTER TABLE namespaces ADD COLUMN note TEXT' }];
    const upgraded = openDatabase(path, next);
    expect(schemaVersion(upgraded)).toBe(99);
    upgraded.close();
    expect(() => openDatabase(path)).toThrow(/schema version 99 is newer than this server understands/);
  });
});
