import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRegistryUser, resolveCredentials } from './credentials';
import { ConfigError, CredentialHelperError } from './errors';

const dir = mkdtempSync(join(tmpdir(), 'cryo-creds-test-'));
const bin = join(dir, 'bin');
const seenFile = join(dir, 'helper-stdin.log');
let env: NodeJS.ProcessEnv;

beforeAll(() => {
  mkdirSync(bin);
  // A fake credential helper speaking Docker's protocol: server address on stdin, JSON out.
  const script = `#!/bin/sh
[ "$1" = get ] || { echo "unsupported $1" >&2; exit 2; }
read -r server
echo "$server" >> '${seenFile}'
case "$server" in
  helper.example.com) echo '{"ServerURL":"helper.example.com","Username":"helperuser","Secret":"helperpass"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hubuser","Secret":"hubpass"}' ;;
  token.example.com) echo '{"ServerURL":"token.example.com","Username":"<token>","Secret":"refresh-abc"}' ;;
  store.example.com:5000) echo '{"ServerURL":"store.example.com:5000","Username":"storeuser","Secret":"storepass"}' ;;
  broken.example.com) echo "keychain locked" >&2; exit 3 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`;
  writeFileSync(join(bin, 'docker-credential-x'), script);
  chmodSync(join(bin, 'docker-credential-x'), 0o755);
  env = { PATH: `${bin}:/usr/bin:/bin`, HOME: dir };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function dockerConfig(name: string, config: unknown): string {
  const file = join(dir, name, 'config.json');
  mkdirSync(join(dir, name), { recursive: true });
  writeFileSync(file, JSON.stringify(config));
  return file;
}

const b64 = (text: string): string => Buffer.from(text).toString('base64');

describe('resolveCredentials', () => {
  it('prefers explicit credentials over config.json', async () => {
    const file = dockerConfig('explicit', { auths: { 'reg:5000': { auth: b64('other:pw') } } });
    await expect(
      resolveCredentials('reg:5000', { explicit: { username: 'me', password: 'pw' }, dockerConfigPath: file, env }),
    ).resolves.toEqual({ username: 'me', password: 'pw' });
  });

  it('reads auths entries by host, with or without scheme and path', async () => {
    const file = dockerConfig('auths', {
      auths: {
        'https://reg.example.com/v1/': { auth: b64('alice:pa:ss') },
        'http://plain.example.com:5000': { username: 'bob', password: 'bobpw' },
        'idt.example.com': { auth: b64('x:y'), identitytoken: 'idtoken' },
        'https://index.docker.io/v1/': { auth: b64('hub:hubpw') },
      },
    });
    const opts = { dockerConfigPath: file, env };
    await expect(resolveCredentials('reg.example.com', opts)).resolves.toEqual({ username: 'alice', password: 'pa:ss' });
    await expect(resolveCredentials('plain.example.com:5000', opts)).resolves.toEqual({ username: 'bob', password: 'bobpw' });
    await expect(resolveCredentials('idt.example.com', opts)).resolves.toEqual({ identityToken: 'idtoken' });
    await expect(resolveCredentials('docker.io', opts)).resolves.toEqual({ username: 'hub', password: 'hubpw' });
    await expect(resolveCredentials('registry-1.docker.io', opts)).resolves.toEqual({ username: 'hub', password: 'hubpw' });
    await expect(resolveCredentials('reg.example.com:5000', opts)).resolves.toBeUndefined();
  });

  it('uses a username-only explicit config with the matching config.json entry, else says what is missing', async () => {
    const file = dockerConfig('partial', { auths: { 'reg:5000': { auth: b64('me:fromfile') } } });
    await expect(resolveCredentials('reg:5000', { explicit: { username: 'me' }, dockerConfigPath: file, env })).resolves.toEqual({
      username: 'me',
      password: 'fromfile',
    });
    const error = await resolveCredentials('reg:5000', { explicit: { username: 'you' }, dockerConfigPath: file, env }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toContain('no password for user you on reg:5000');
  });

  it('asks credHelpers[host] first, then credsStore, passing the server address on stdin', async () => {
    rmSync(seenFile, { force: true });
    const file = dockerConfig('helpers', {
      credsStore: 'x',
      credHelpers: { 'helper.example.com': 'x' },
      auths: { 'helper.example.com': { auth: b64('inline:ignored') }, 'fallback.example.com': { auth: b64('inl:pw') } },
    });
    const opts = { dockerConfigPath: file, env };
    await expect(resolveCredentials('helper.example.com', opts)).resolves.toEqual({
      username: 'helperuser',
      password: 'helperpass',
    });
    await expect(resolveCredentials('store.example.com:5000', opts)).resolves.toEqual({
      username: 'storeuser',
      password: 'storepass',
    });
    await expect(resolveCredentials('token.example.com', opts)).resolves.toEqual({ identityToken: 'refresh-abc' });
    await expect(resolveCredentials('index.docker.io', opts)).resolves.toEqual({ username: 'hubuser', password: 'hubpass' });
    // The store knows nothing: an inline auths entry still counts, else anonymous.
    await expect(resolveCredentials('fallback.example.com', opts)).resolves.toEqual({ username: 'inl', password: 'pw' });
    await expect(resolveCredentials('nothing.example.com', opts)).resolves.toBeUndefined();
    expect(readFileSync(seenFile, 'utf8').trim().split('\n')).toEqual([
      'helper.example.com',
      'store.example.com:5000',
      'token.example.com',
      'https://index.docker.io/v1/',
      'fallback.example.com',
      'nothing.example.com',
    ]);
  });

  it('reports a failing helper with its output, never a secret', async () => {
    const file = dockerConfig('broken', { credsStore: 'x' });
    const error = await resolveCredentials('broken.example.com', { dockerConfigPath: file, env }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CredentialHelperError);
    expect(String(error)).toContain('docker-credential-x failed for broken.example.com');
    expect(String(error)).toContain('exit code 3: keychain locked');
  });

  it('reports a missing helper binary clearly', async () => {
    const file = dockerConfig('missing-helper', { credHelpers: { 'reg.example.com': 'nope' } });
    const error = await resolveCredentials('reg.example.com', { dockerConfigPath: file, env }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CredentialHelperError);
    expect((error as CredentialHelperError).code).toBe('CREDENTIAL_HELPER_FAILED');
    expect((error as Error).message).toBe(
      `docker credential helper docker-credential-nope was not found on PATH (configured by credHelpers["reg.example.com"] in ${file})`,
    );
  });

  it('finds config.json through DOCKER_CONFIG and HOME, and treats a missing file as anonymous', async () => {
    dockerConfig('via-env', { auths: { 'reg:1': { auth: b64('envuser:pw') } } });
    await expect(resolveCredentials('reg:1', { env: { ...env, DOCKER_CONFIG: join(dir, 'via-env') } })).resolves.toEqual({
      username: 'envuser',
      password: 'pw',
    });
    dockerConfig('.docker', { auths: { 'reg:2': { auth: b64('homeuser:pw') } } });
    await expect(resolveCredentials('reg:2', { env })).resolves.toEqual({ username: 'homeuser', password: 'pw' });
    await expect(resolveCredentials('reg:2', { dockerConfigPath: join(dir, 'nope', 'config.json'), env })).resolves.toBeUndefined();
  });

  it('names a malformed config.json', async () => {
    const file = join(dir, 'malformed.json');
    writeFileSync(file, '{"auths": ');
    const error = await resolveCredentials('reg', { dockerConfigPath: file, env }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toContain(`${file}: not valid JSON`);
  });
});

describe('describeRegistryUser', () => {
  it('names the user, never the secret', () => {
    expect(describeRegistryUser({ username: 'myuser', password: 'hunter2' })).toBe('user myuser');
    expect(describeRegistryUser({ identityToken: 'tok' })).toBe('an identity token');
    expect(describeRegistryUser(undefined)).toBe('anonymous');
  });
});
