import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RegistryAccessSettingsSchema, hostName, isLoopbackHost, registryAccess } from './access';

const dir = mkdtempSync(join(tmpdir(), 'cryo-access-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('isLoopbackHost', () => {
  it('takes bare hosts, host:port, [v6]:port and bare IPv6 alike', () => {
    for (const host of ['localhost', 'LOCALHOST:5000', '127.0.0.1', '127.0.0.1:5001', '127.200.3.4:80', '::1', '[::1]', '[::1]:5000']) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
    for (const host of ['registry.example.com', 'registry.example.com:5000', '10.0.0.1:5000', '128.0.0.1', '::2', '[fe80::1]:5000', '127.0.0.1.example.com', '0.0.0.0']) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });

  it('hostName drops the port and the brackets, never a part of an IPv6 address', () => {
    expect([hostName('h:5000'), hostName('[::1]:5000'), hostName('::1'), hostName('fe80::1')]).toEqual(['h', '::1', '::1', 'fe80::1']);
  });
});

describe('registryAccess', () => {
  const dockerConfig = join(dir, 'config.json');
  writeFileSync(dockerConfig, JSON.stringify({
    auths: {
      'other.example.com': { auth: Buffer.from('otheruser:otherpass').toString('base64') },
      'own.example.com:5000': { auth: Buffer.from('dockeruser:dockerpass').toString('base64') },
    },
  }));
  const settings = RegistryAccessSettingsSchema.parse({
    snapshot_registry: { url: 'own.example.com:5000', repository: 'cryo/snapshots', username: 'me', password: 'mine', insecure: true },
    docker_config: dockerConfig,
  });

  it("answers the snapshot registry's own host from its block: its user and its insecure setting", async () => {
    expect(await registryAccess('own.example.com:5000', settings)).toEqual({ credentials: { username: 'me', password: 'mine' }, insecure: true });
  });

  it("answers any other host from Docker's config, https unless it is loopback", async () => {
    expect(await registryAccess('other.example.com', settings)).toEqual({ credentials: { username: 'otheruser', password: 'otherpass' }, insecure: false });
    expect(await registryAccess('127.0.0.1:5999', settings)).toEqual({ credentials: undefined, insecure: true });
    expect(await registryAccess('nobody.example.com', settings)).toEqual({ credentials: undefined, insecure: false });
  });

  it('reads the Docker config again on every call (a rotated secret is picked up)', async () => {
    const rotating = join(dir, 'rotating.json');
    const write = (pass: string): void => writeFileSync(rotating, JSON.stringify({ auths: { 'r.example.com': { auth: Buffer.from(`u:${pass}`).toString('base64') } } }));
    write('first');
    expect((await registryAccess('r.example.com', { docker_config: rotating })).credentials).toEqual({ username: 'u', password: 'first' });
    write('second');
    expect((await registryAccess('r.example.com', { docker_config: rotating })).credentials).toEqual({ username: 'u', password: 'second' });
  });

  it('is plain data that survives JSON (how a mount process receives it)', () => {
    expect(RegistryAccessSettingsSchema.parse(JSON.parse(JSON.stringify(settings)))).toEqual(settings);
    expect(() => RegistryAccessSettingsSchema.parse({ server_url: 'http://x', token: 't' })).toThrow(/server_url/);
  });
});
