import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { SnapshotRegistrySchema, loadConfigFile } from './config';
import { ConfigError } from './errors';

const dir = mkdtempSync(join(tmpdir(), 'cryo-config-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ServerConfig = z.object({
  listen: z.string().default('127.0.0.1:8080'),
  snapshot_registry: SnapshotRegistrySchema.optional(),
});

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

function loadError(file: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    loadConfigFile(file, ServerConfig, env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfigFile', () => {
  it('reads YAML, expands ${VAR} and applies defaults', () => {
    const file = write(
      'ok.yaml',
      [
        'snapshot_registry:',
        '  url: "127.0.0.1:5001"',
        '  repository: "cryo/snapshots"',
        '  username: "myuser"',
        '  password: "${REGISTRY_PASSWORD}"',
        '',
      ].join('\n'),
    );
    expect(loadConfigFile(file, ServerConfig, { REGISTRY_PASSWORD: 'pw' })).toEqual({
      listen: '127.0.0.1:8080',
      snapshot_registry: {
        url: '127.0.0.1:5001',
        repository: 'cryo/snapshots',
        username: 'myuser',
        password: 'pw',
        insecure: false,
      },
    });
  });

  it('accepts insecure as a string from the environment', () => {
    const file = write('insecure.yaml', 'snapshot_registry: {url: "r:5000", repository: "a/b", insecure: "${INSECURE}"}\n');
    expect(loadConfigFile(file, ServerConfig, { INSECURE: 'true' }).snapshot_registry?.insecure).toBe(true);
  });

  it('names the file and every missing key', () => {
    const file = write('missing.yaml', 'snapshot_registry:\n  username: u\n');
    const error = loadError(file);
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.issues).toEqual([
      { path: 'snapshot_registry.url', message: 'Required' },
      { path: 'snapshot_registry.repository', message: 'Required' },
    ]);
    expect(error.message).toBe(`${file}: snapshot_registry.url: Required\n${file}: snapshot_registry.repository: Required`);
  });

  it('rejects a url with a scheme, with a message that says what to do', () => {
    const file = write('scheme.yaml', 'snapshot_registry: {url: "https://reg.example.com", repository: "cryo/snapshots"}\n');
    const error = loadError(file);
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.path).toBe('snapshot_registry.url');
    expect(error.message).toContain('snapshot_registry.url: must be host[:port] without a scheme (got "https://reg.example.com")');
    expect(error.message).toContain('insecure: true');
  });

  it('rejects a path in url, a bad repository, unknown keys and a password without user', () => {
    const file = write(
      'bad.yaml',
      'snapshot_registry: {url: "reg/x", repository: "Cryo/Snapshots", pasword: "x", password: "y"}\n',
    );
    const paths = loadError(file).issues.map((issue) => issue.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'snapshot_registry.url',
        'snapshot_registry.repository',
        'snapshot_registry.pasword',
      ]),
    );
    const unknown = loadError(file).issues.find((issue) => issue.path === 'snapshot_registry.pasword');
    expect(unknown?.message).toBe('unknown key');
    const good = write('nouser.yaml', 'snapshot_registry: {url: "reg:1", repository: "a/b", password: "y"}\n');
    expect(loadError(good).message).toBe(`${good}: snapshot_registry.username: is required when password is set`);
  });

  it('names the key path and variable of a missing environment variable', () => {
    const file = write('env.yaml', 'snapshot_registry: {url: "r:1", repository: "a/b", username: u, password: "${REGISTRY_PASSWORD}"}\n');
    expect(loadError(file).message).toBe(
      `${file}: snapshot_registry.password: environment variable REGISTRY_PASSWORD is not set`,
    );
  });

  it('names a YAML syntax error with its position', () => {
    const file = write('syntax.yaml', 'snapshot_registry:\n  url: "unterminated\n  repository: x\n');
    const error = loadError(file);
    expect(error.message).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: YAML syntax error at line \\d+, column \\d+: `));
  });

  it('names an unreadable file', () => {
    const file = join(dir, 'does-not-exist.yaml');
    expect(loadError(file).message).toBe(`${file}: cannot read configuration file (ENOENT)`);
  });

  it('reports wrong types by key path', () => {
    const file = write('types.yaml', 'listen: 8080\nsnapshot_registry: {url: "r:1", repository: "a/b", insecure: "maybe"}\n');
    const paths = loadError(file).issues.map((issue) => issue.path);
    expect(paths).toEqual(['listen', 'snapshot_registry.insecure']);
  });
});
