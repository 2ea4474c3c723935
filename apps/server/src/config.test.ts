import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '@cryo/registry-auth';
import { assertSafeListen, loadServerConfig, serverConfig } from './config';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cryo-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(text: string): string {
  const path = join(dir, 'server.yaml');
  writeFileSync(path, text);
  return path;
}

describe('server config', () => {
  it('fills in the documented defaults', () => {
    const config = loadServerConfig(file('auth:\n  executor_token: "${TOKEN}"\n'), { TOKEN: 't0ken' });
    expect(config).toMatchObject({
      listen: { host: '127.0.0.1', port: 8900 },
      database: resolve('./.cryo/server.db'),
      auth: { api_keys: [], executor_token: 't0ken' },
      snapshots: { default_ttl_secs: 86400, reaper_interval_secs: 10, max_per_namespace: 1000, max_ttl_secs: 0, retention_secs: 604800 },
      executors: { heartbeat_timeout_secs: 15 },
      sandboxes: { default_timeout_secs: 0 },
    });
    expect(config.snapshot_registry).toBeUndefined();
  });

  it('names the key path of a bad value, an unknown key and a missing variable', () => {
    const bad = file(['auth:', '  executor_token: x', 'snapshots:', '  max_ttl_secs: -1', '  reaper_intervall_secs: 5', 'snapshot_registry:', '  url: "${NOPE}"', '  repository: r'].join('\n'));
    let error: unknown;
    try {
      loadServerConfig(bad, {});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(String((error as Error).message)).toContain('snapshot_registry.url: environment variable NOPE is not set');
    const invalid = file('auth:\n  executor_token: x\nsnapshots:\n  max_ttl_secs: -1\n  reaper_intervall_secs: 5\n');
    expect(() => loadServerConfig(invalid, {})).toThrow(/snapshots\.max_ttl_secs: .*>=0/);
    expect(() => loadServerConfig(invalid, {})).toThrow(/snapshots\.reaper_intervall_secs: unknown key/);
    expect(() => loadServerConfig(file('listen:\n  port: 8900\n'), {})).toThrow(/auth: Required/);
  });

  it('refuses a default TTL above the maximum', () => {
    expect(() => serverConfig({ auth: { executor_token: 'x' }, snapshots: { default_ttl_secs: 100, max_ttl_secs: 50 } }))
      .toThrow(/snapshots\.default_ttl_secs: must be between 1 and snapshots\.max_ttl_secs \(50\)/);
  });

  it('allows no API keys only on loopback', () => {
    const open = serverConfig({ auth: { executor_token: 'x' }, listen: { host: '0.0.0.0' } });
    expect(() => assertSafeListen(open)).toThrow(/refusing to listen on 0\.0\.0\.0:8900 without API keys/);
    expect(() => assertSafeListen(serverConfig({ auth: { executor_token: 'x' } }))).not.toThrow();
    expect(() => assertSafeListen(serverConfig({ auth: { executor_token: 'x' }, listen: { host: '::1' } }))).not.toThrow();
    expect(() => assertSafeListen(serverConfig({ auth: { executor_token: 'x', api_keys: ['k'] }, listen: { host: '0.0.0.0' } }))).not.toThrow();
  });

  it('loads the shipped configs/server-config.yaml', () => {
    const config = loadServerConfig(resolve(__dirname, '../../../configs/server-config.yaml'), {
      CRYO_EXECUTOR_TOKEN: 'tok', CRYO_REGISTRY_URL: '127.0.0.1:5001',
    });
    expect(config.snapshot_registry).toMatchObject({ url: '127.0.0.1:5001', repository: 'cryo/snapshots', insecure: true });
  });
});

describe('database setting (issue 15 item 12: a URL is never a file name)', () => {
  const base = { auth: { executor_token: 't' } };

  it('keeps a postgres:// URL as it is and resolves a SQLite path', () => {
    const url = 'postgres://cryo:s3cret@db.internal:5432/cryo';
    expect(serverConfig({ ...base, database: url }).database).toBe(url);
    expect(serverConfig({ ...base, database: 'postgresql://cryo@db/cryo' }).database).toBe('postgresql://cryo@db/cryo');
    expect(serverConfig({ ...base, database: 'state/server.db' }).database).toBe(resolve('state/server.db'));
  });

  it('refuses any other URL scheme with a message naming the key, without the password', () => {
    for (const value of ['mysql://root:s3cret@db/cryo', 'sqlite://x:s3cret@host/file.db', 'http://u:s3cret@h/']) {
      let error: unknown;
      try {
        serverConfig({ ...base, database: value });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      const message = (error as ConfigError).message;
      expect(message).toMatch(/database: unsupported URL scheme "[a-z]+:"/);
      expect(message).toContain('postgres:// URL');
      expect(message).not.toContain('s3cret');
    }
  });

  it('takes the password from the environment through ${VAR}', () => {
    const config = loadServerConfig(
      file('database: "postgres://cryo:${DB_PW}@127.0.0.1:5432/cryo"\nauth:\n  executor_token: t\n'),
      { DB_PW: 'from-env' },
    );
    expect(config.database).toBe('postgres://cryo:from-env@127.0.0.1:5432/cryo');
  });
});

describe('cryo-server start-up with a database URL (issue 15 item 12)', () => {
  it('refuses an unsupported scheme and fails to reach PostgreSQL without writing the password anywhere', () => {
    const bin = resolve(import.meta.dirname, '..', 'bin', 'cryo-server.js');
    const cwd = mkdtempSync(join(tmpdir(), 'cryo-cwd-'));
    try {
      const run = (database: string): { status: number | null; stderr: string } => {
        const config = join(dir, 'start.yaml');
        writeFileSync(config, `database: "${database}"\nlisten:\n  port: 0\nauth:\n  executor_token: t\n`);
        const result = spawnSync(process.execPath, [bin, '--config', config], { cwd, encoding: 'utf8', timeout: 60_000 });
        return { status: result.status, stderr: result.stderr };
      };
      const mysql = run('mysql://cryo:Sup3rSecret@db:3306/cryo');
      expect(mysql.status).toBe(1);
      expect(mysql.stderr).toContain('database: unsupported URL scheme "mysql:" in mysql://cryo:***@db:3306/cryo');
      // A port nothing listens on: the connection fails, the message names the server, not the password.
      const postgres = run('postgres://cryo:Sup3rSecret@127.0.0.1:1/cryo');
      expect(postgres.status).toBe(1);
      expect(postgres.stderr).toContain('cannot open PostgreSQL postgres://cryo:***@127.0.0.1:1/cryo');
      for (const output of [mysql.stderr, postgres.stderr]) expect(output).not.toContain('Sup3rSecret');
      expect(readdirSync(cwd)).toEqual([]); // no directory named after the URL, nothing at all
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});
