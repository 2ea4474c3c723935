import { describe, expect, it } from 'vitest';
import { expandEnv } from './env';
import { ConfigError } from './errors';

describe('expandEnv', () => {
  const env = { REGISTRY_PASSWORD: 's3cret', HOST: 'reg.local', PORT: '5000', EMPTY: '' };

  it('replaces ${VAR} in every string of a nested tree, keys untouched', () => {
    const tree = {
      snapshot_registry: { url: '${HOST}:${PORT}', password: '${REGISTRY_PASSWORD}', insecure: true },
      list: ['a-${HOST}', 7, null, { deep: 'x${EMPTY}y' }],
      '${HOST}': 'key is not expanded',
    };
    expect(expandEnv(tree, env)).toEqual({
      snapshot_registry: { url: 'reg.local:5000', password: 's3cret', insecure: true },
      list: ['a-reg.local', 7, null, { deep: 'xy' }],
      '${HOST}': 'key is not expanded',
    });
  });

  it('does not mutate its input', () => {
    const tree = { a: '${HOST}' };
    expandEnv(tree, env);
    expect(tree.a).toBe('${HOST}');
  });

  it('treats $${ as a literal ${ and leaves other $ alone', () => {
    expect(expandEnv('pa$$word $${HOST} $HOST $ ${HOST}', env)).toBe('pa$$word ${HOST} $HOST $ reg.local');
    expect(expandEnv('$${NOT_SET}', env)).toBe('${NOT_SET}');
  });

  it('names the key path and variable when a variable is missing', () => {
    const tree = { snapshot_registry: { url: 'r', password: '${REGISTRY_PASSWORD}' } };
    let caught: unknown;
    try {
      expandEnv(tree, {});
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const error = caught as ConfigError;
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.message).toBe('snapshot_registry.password: environment variable REGISTRY_PASSWORD is not set');
  });

  it('reports every missing variable, with array indices in the path', () => {
    expect(() => expandEnv({ auth: { api_keys: ['ok', '${KEY_ONE}'] }, token: '${TOK}' }, {})).toThrow(
      'auth.api_keys[1]: environment variable KEY_ONE is not set\ntoken: environment variable TOK is not set',
    );
  });

  it('prefixes a caller-given path and rejects malformed references', () => {
    expect(() => expandEnv('${}', {}, ['a', 'b'])).toThrow('a.b: invalid environment variable reference ${}');
    expect(() => expandEnv('${1X}', {})).toThrow('invalid environment variable reference ${1X}');
    expect(() => expandEnv({ k: 'abc ${OPEN' }, {})).toThrow('k: unterminated ${');
  });
});
