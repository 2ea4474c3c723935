import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { REDACTED, REDACT_PATHS, redactSecrets, redactUrl } from './redact';

function capture(): { stream: Writable; lines: () => string[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString('utf8'));
      callback();
    },
  });
  return { stream, lines: () => chunks.join('').trim().split('\n') };
}

describe('REDACT_PATHS', () => {
  it('is accepted by pino and hides secrets at their usual places', () => {
    const out = capture();
    const logger = pino({ redact: { paths: [...REDACT_PATHS] } }, out.stream);
    logger.info(
      {
        password: 'p1',
        token: 't1',
        snapshot_registry: { url: 'r:1', username: 'myuser', password: 'p2' },
        auth: { api_keys: ['k1'], executor_token: 'e1' },
        req: { headers: { authorization: 'Bearer t2', host: 'x' } },
        headers: { authorization: 'Basic abc' },
        credentials: { username: 'u', password: 'p3' },
        upstream: { token: 't3' },
      },
      'hello',
    );
    const line = out.lines()[0] ?? '';
    for (const secret of ['p1', 'p2', 'p3', 't1', 't2', 't3', 'k1', 'e1', 'Basic abc']) expect(line).not.toContain(`"${secret}"`);
    const parsed = JSON.parse(line) as { snapshot_registry: { username: string; password: string }; req: { headers: { host: string } } };
    expect(parsed.snapshot_registry.username).toBe('myuser');
    expect(parsed.snapshot_registry.password).toBe('[Redacted]');
    expect(parsed.req.headers.host).toBe('x');
  });
});

describe('redactSecrets', () => {
  it('replaces secret-keyed values at any depth and keeps the rest', () => {
    const input = {
      snapshot_registry: { url: 'r', username: 'me', password: 'pw' },
      auth: { api_keys: ['a', 'b'], executor_token: 'x', enabled: true },
      auths: { 'reg:1': { auth: 'dXNlcjpwYXNz', identitytoken: 'idt' } },
      list: [{ Authorization: 'Bearer z' }],
      nothing: null,
    };
    expect(redactSecrets(input)).toEqual({
      snapshot_registry: { url: 'r', username: 'me', password: REDACTED },
      auth: { api_keys: REDACTED, executor_token: REDACTED, enabled: true },
      auths: { 'reg:1': { auth: REDACTED, identitytoken: REDACTED } },
      list: [{ Authorization: REDACTED }],
      nothing: null,
    });
    expect(input.snapshot_registry.password).toBe('pw');
  });

  it('strips userinfo from URLs', () => {
    expect(redactUrl('https://user:pw@reg.example.com/v2/')).toBe('https://reg.example.com/v2/');
    expect(redactUrl('http://127.0.0.1:5001/v2/')).toBe('http://127.0.0.1:5001/v2/');
  });
});
