import { describe, expect, it } from 'vitest';
import { familiarName, formatImageReference, parseImageReference } from './reference';

const DIGEST = `sha256:${'a'.repeat(64)}`;

describe('parseImageReference', () => {
  it('reads host:port, nested repository, tag and digest', () => {
    expect(parseImageReference(`127.0.0.1:5001/cryo/snapshots:sb-1-snap-2@${DIGEST}`)).toEqual({
      host: '127.0.0.1:5001',
      repository: 'cryo/snapshots',
      tag: 'sb-1-snap-2',
      digest: DIGEST,
    });
    expect(parseImageReference('registry.example.com/a/b/c')).toEqual({ host: 'registry.example.com', repository: 'a/b/c' });
    expect(parseImageReference(`localhost/app@${DIGEST}`)).toEqual({ host: 'localhost', repository: 'app', digest: DIGEST });
    expect(parseImageReference('localhost:5000/app:1.0')).toEqual({ host: 'localhost:5000', repository: 'app', tag: '1.0' });
  });

  it('defaults to Docker Hub the way Docker does', () => {
    expect(parseImageReference('busybox')).toEqual({ host: 'docker.io', repository: 'library/busybox' });
    expect(parseImageReference('busybox:1.36')).toEqual({ host: 'docker.io', repository: 'library/busybox', tag: '1.36' });
    expect(parseImageReference('myorg/app:v1')).toEqual({ host: 'docker.io', repository: 'myorg/app', tag: 'v1' });
  });

  it('rejects what Docker rejects, saying why', () => {
    expect(() => parseImageReference('')).toThrow('invalid image reference "": empty');
    expect(() => parseImageReference('reg:5000/App')).toThrow('bad repository component "App"');
    expect(() => parseImageReference('reg:5000/app:bad/tag')).toThrow();
    expect(() => parseImageReference('reg:5000/app@sha256:xyz')).toThrow('bad digest');
    expect(() => parseImageReference('reg:5000/')).toThrow('no repository');
  });

  it('follows the distribution grammar exactly: no trimming, host components, name length', () => {
    for (const bad of [' ', ' busybox', 'busybox ', 'a\nb', 'UPPER-Case', '../../etc/passwd', 'a..b/app', 'a.-b/app', '-a.b/app', 'a_b.com/app']) {
      expect(() => parseImageReference(bad), JSON.stringify(bad)).toThrow('invalid image reference');
    }
    expect(parseImageReference('my-registry.example.com:5000/a__b/c--d:v1').host).toBe('my-registry.example.com:5000');
    const host = 'registry.example.com/';
    const longest = `${host}${'a'.repeat(255 - host.length)}`;
    expect(parseImageReference(`${longest}:v1`).repository).toHaveLength(255 - host.length);
    expect(() => parseImageReference(`${longest}a`)).toThrow('at most 255');
  });

  it('round-trips through formatImageReference', () => {
    const text = `127.0.0.1:5001/cryo/snapshots:t@${DIGEST}`;
    expect(formatImageReference(parseImageReference(text))).toBe(text);
  });

  it('gives the name Docker shows, without tag or digest (familiarName)', () => {
    const names = ['busybox:1.36', 'cryo-snapshots:sb-x-snap-y', 'myorg/app:v1', 'docker.io/library/a/b', '127.0.0.1:5001/cryo/snapshots:t', `localhost/x@${DIGEST}`];
    expect(names.map((n) => familiarName(parseImageReference(n)))).toEqual([
      'busybox', 'cryo-snapshots', 'myorg/app', 'library/a/b', '127.0.0.1:5001/cryo/snapshots', 'localhost/x',
    ]);
  });
});
