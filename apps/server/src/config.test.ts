import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
