import { describe, expect, it } from 'vitest';
import { ManifestFormatError, parseImageConfig, parseManifestDocument, selectPlatform, type ImageIndex } from './manifest';
import { MediaType } from './media-types';

const d = (n: number): string => `sha256:${String(n).repeat(64).slice(0, 64)}`;

// The shape `docker commit` + `docker push` produce (dockerd 20.10): nulls for empty fields.
const DOCKER_CONFIG = JSON.stringify({
  architecture: 'amd64',
  config: {
    Hostname: '',
    User: '',
    Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    Cmd: ['sh'],
    Entrypoint: null,
    WorkingDir: '',
    Labels: { 'cryo.snapshot_id': 'snap-1', 'cryo.sandbox_id': 'sb-1' },
    Volumes: null,
    OnBuild: null,
  },
  container_config: { Cmd: null },
  created: '2026-11-23T09:00:00.000000000Z',
  docker_version: '20.10.24+dfsg1',
  history: [{ created: '2026-11-23T08:00:00Z', created_by: 'Imported from -' }, { created: '2026-11-23T09:00:00Z', created_by: 'sh' }],
  os: 'linux',
  rootfs: { type: 'layers', diff_ids: [d(1), d(2)] },
});

describe('parseImageConfig', () => {
  it('reads a Docker-committed config with null fields', () => {
    const config = parseImageConfig(DOCKER_CONFIG);
    expect(config.config?.Env).toEqual(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
    expect(config.config?.Cmd).toEqual(['sh']);
    expect(config.config?.Entrypoint).toBeNull();
    expect(config.config?.Labels?.['cryo.snapshot_id']).toBe('snap-1');
    expect(config.rootfs.diff_ids).toEqual([d(1), d(2)]);
    // unknown fields are kept, not dropped
    expect((config as Record<string, unknown>).docker_version).toBe('20.10.24+dfsg1');
  });

  it('names what is wrong', () => {
    expect(() => parseImageConfig('{"os":"linux","architecture":"amd64"}')).toThrow(ManifestFormatError);
    expect(() => parseImageConfig('{"os":"linux","architecture":"amd64"}')).toThrow('invalid image config: rootfs:');
    expect(() => parseImageConfig('not json')).toThrow('image config is not JSON');
  });
});

describe('parseManifestDocument', () => {
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.DockerManifest,
    config: { mediaType: MediaType.DockerConfig, size: 1469, digest: d(3) },
    layers: [{ mediaType: MediaType.DockerLayerGzip, size: 1024, digest: d(4) }],
  };

  it('tells manifests from indexes by media type, declared type or shape', () => {
    expect(parseManifestDocument(JSON.stringify(manifest), MediaType.DockerManifest).kind).toBe('manifest');
    expect(parseManifestDocument(JSON.stringify(manifest), 'application/json').kind).toBe('manifest');
    const index = { schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, digest: d(5), size: 10 }] };
    expect(parseManifestDocument(JSON.stringify(index)).kind).toBe('index');
    expect(parseManifestDocument(JSON.stringify(index), MediaType.OciIndex).kind).toBe('index');
  });

  it('rejects a manifest without layers', () => {
    expect(() => parseManifestDocument(JSON.stringify({ ...manifest, layers: undefined }), MediaType.DockerManifest)).toThrow('layers');
  });
});

describe('selectPlatform', () => {
  const entry = (n: number, platform: { os: string; architecture: string; variant?: string }, annotations?: Record<string, string>) => ({
    mediaType: MediaType.OciManifest,
    digest: d(n),
    size: 100,
    platform,
    ...(annotations ? { annotations } : {}),
  });
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [
      entry(1, { os: 'unknown', architecture: 'unknown' }, { 'vnd.docker.reference.type': 'attestation-manifest' }),
      entry(2, { os: 'linux', architecture: 'arm', variant: 'v6' }),
      entry(3, { os: 'linux', architecture: 'arm', variant: 'v7' }),
      entry(4, { os: 'linux', architecture: 'arm64', variant: 'v8' }),
      entry(5, { os: 'linux', architecture: 'amd64' }),
      entry(6, { os: 'windows', architecture: 'amd64' }),
    ],
  };

  it('picks by os and architecture, with default variants and aliases', () => {
    expect(selectPlatform(index, { os: 'linux', architecture: 'amd64' })?.digest).toBe(d(5));
    expect(selectPlatform(index, { os: 'linux', architecture: 'x86_64' })?.digest).toBe(d(5));
    expect(selectPlatform(index, { os: 'linux', architecture: 'arm64' })?.digest).toBe(d(4));
    expect(selectPlatform(index, { os: 'linux', architecture: 'aarch64' })?.digest).toBe(d(4));
    expect(selectPlatform(index, { os: 'linux', architecture: 'arm' })?.digest).toBe(d(3));
    expect(selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v6' })?.digest).toBe(d(2));
    expect(selectPlatform(index, { os: 'windows', architecture: 'amd64' })?.digest).toBe(d(6));
  });

  it('finds nothing for a missing platform and never picks attestations', () => {
    expect(selectPlatform(index, { os: 'linux', architecture: 's390x' })).toBeUndefined();
    expect(selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v5' })).toBeUndefined();
    expect(selectPlatform(index, { os: 'unknown', architecture: 'unknown' })).toBeUndefined();
  });
});
