import { describe, expect, it } from 'vitest';
import { parseWwwAuthenticate } from './challenge';

describe('parseWwwAuthenticate', () => {
  it('parses a Basic challenge', () => {
    expect(parseWwwAuthenticate('Basic realm="Registry Realm"')).toEqual([
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
    ]);
  });

  it('parses a Bearer challenge with commas inside quoted values', () => {
    const header =
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"';
    expect(parseWwwAuthenticate(header)).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:samalba/my-app:pull,push',
        },
      },
    ]);
  });

  it('handles spaces, escapes, unquoted values and case', () => {
    const header = 'BEARER Realm = "https://a/t" , service=reg.example.com, error="insufficient_scope", x="a\\"b\\\\c"';
    expect(parseWwwAuthenticate(header)).toEqual([
      {
        scheme: 'bearer',
        params: { realm: 'https://a/t', service: 'reg.example.com', error: 'insufficient_scope', x: 'a"b\\c' },
      },
    ]);
  });

  it('splits several challenges in one header', () => {
    expect(parseWwwAuthenticate('Basic realm="a, b", Bearer realm="https://t/x",scope="repository:r:pull"')).toEqual([
      { scheme: 'basic', params: { realm: 'a, b' } },
      { scheme: 'bearer', params: { realm: 'https://t/x', scope: 'repository:r:pull' } },
    ]);
  });

  it('survives junk without looping', () => {
    expect(parseWwwAuthenticate('')).toEqual([]);
    expect(parseWwwAuthenticate('Bearer')).toEqual([{ scheme: 'bearer', params: {} }]);
    expect(parseWwwAuthenticate('Bearer realm="unterminated')).toEqual([{ scheme: 'bearer', params: { realm: 'unterminated' } }]);
    expect(parseWwwAuthenticate('"=,=').length).toBe(0);
  });
});
