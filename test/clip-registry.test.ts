/**
 * clip against a real registry (distribution 2.8 with htpasswd auth): images
 * pushed with @cryo/oci from layers made by GNU tar, gzip -1/-9, zstd and
 * uncompressed; OCI and Docker schema2 manifests; image indexes; bad input;
 * corrupt bytes served by the registry; the `cryo clip` CLI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { RegistryClient } from '@cryo/oci';
import {
  ClipIndex,
  ClipReader,
  RegistryLayerSource,
  buildIndex,
  registryClient,
  verifyIndex,
  type BuildProgress,
} from '@cryo/clip';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mixedData } from '../libs/clip/src/testing/data';
import { compress, sha256, type TestCompression } from '../libs/clip/src/testing/fixtures';
import { writeTar } from '../libs/clip/src/testing/tar-writer';
import { startRegistry, type TestRegistry } from './support/registry';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const USER = 'clipuser';
const PASS = 'clip-secret-pass';
const work = mkdtempSync(join(tmpdir(), 'clip-e2e-'));
let registry: TestRegistry;
let client: RegistryClient;

interface LayerSpec {
  tar: Buffer;
  how: TestCompression;
}

async function pushImage(
  repo: string,
  tag: string,
  layers: LayerSpec[],
  opts: { docker?: boolean; arch?: string; cmd?: string[] } = {},
): Promise<{ digest: string; bytes: Buffer; size: number; mediaType: string }> {
  const descriptors = [];
  for (const l of layers) {
    const { blob, mediaType } = compress(l.tar, l.how);
    const digest = sha256(blob);
    await client.uploadBlob(repo, blob, digest, blob.length);
    const mt = opts.docker
      ? l.how === 'none'
        ? 'application/vnd.docker.image.rootfs.diff.tar'
        : 'application/vnd.docker.image.rootfs.diff.tar.gzip'
      : mediaType;
    descriptors.push({ mediaType: mt, digest, size: blob.length });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: opts.arch ?? 'amd64',
      os: 'linux',
      created: '2024-01-02T03:04:05Z',
      config: {
        Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'LANG=C.UTF-8'],
        Cmd: opts.cmd ?? ['/bin/sh', '-c', 'echo hi'],
        Entrypoint: null,
        WorkingDir: '/srv',
        User: '1000:1000',
        Labels: { 'org.example.name': 'clip-test' },
        ExposedPorts: { '8080/tcp': {} },
      },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l.tar)) },
    }),
  );
  const configDigest = sha256(config);
  await client.uploadBlob(repo, config, configDigest, config.length);
  const mediaType = opts.docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: {
        mediaType: opts.docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: descriptors,
    }),
  );
  const digest = await client.putManifest(repo, tag, manifest, mediaType);
  return { digest, bytes: manifest, size: manifest.length, mediaType };
}

function gnuTar(dir: string, format: 'pax' | 'gnu'): Buffer {
  return execFileSync('tar', ['-C', dir, `--format=${format}`, '--xattrs', '--xattrs-include=*', '-cf', '-', '.'], {
    maxBuffer: 1 << 30,
  });
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    out.push(p);
    if (lstatSync(p).isDirectory()) out.push(...walk(p));
  }
  return out;
}

function blobFile(digest: string): string {
  const hex = digest.replace('sha256:', '');
  const found = execFileSync('find', [registry.dir, '-path', `*/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`], { encoding: 'utf8' }).trim();
  if (!found) throw new Error(`blob ${digest} not in registry storage`);
  return found.split('\n')[0] ?? '';
}

const access = () => ({ credentials: { username: USER, password: PASS }, insecure: true });

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: { username: USER, password: PASS } });
  client = new RegistryClient({ host: registry.host, insecure: true, credentials: { username: USER, password: PASS } });
});

afterAll(async () => {
  await client?.close();
  await registry?.destroy();
  rmSync(work, { recursive: true, force: true });
});

describe('clip against a registry', () => {
  const src1 = join(work, 'src1');
  const src2 = join(work, 'src2');
  beforeAll(() => {
    mkdirSync(join(src1, 'usr/bin'), { recursive: true });
    mkdirSync(join(src1, 'tmp'));
    chmodSync(join(src1, 'tmp'), 0o1777);
    writeFileSync(join(src1, 'usr/bin/tool'), mixedData(2_500_000, 11));
    chmodSync(join(src1, 'usr/bin/tool'), 0o4755);
    writeFileSync(join(src1, 'usr/bin/ping'), mixedData(50_000, 12));
    execFileSync('setcap', ['cap_net_raw+ep', join(src1, 'usr/bin/ping')]);
    mkdirSync(join(src1, 'etc'));
    writeFileSync(join(src1, 'etc/os-release'), 'NAME=clip\n');
    writeFileSync(join(src1, 'etc/remove-me'), 'bye');
    symlinkSync('/usr/bin/tool', join(src1, 'usr/bin/tool-link'));
    for (let i = 0; i < 200; i++) writeFileSync(join(src1, 'etc', `f${i}.conf`), mixedData(i * 997, i + 100));
    mkdirSync(join(src2, 'srv/data'), { recursive: true });
    writeFileSync(join(src2, 'srv/data/blob.bin'), mixedData(3_300_000, 13));
    writeFileSync(join(src2, 'etc-new'), 'new');
  });

  const variants: Array<{ name: string; docker: boolean; hows: [TestCompression, TestCompression, TestCompression] }> = [
    { name: 'OCI manifest, gzip -1 / zstd / uncompressed', docker: false, hows: ['gzip-1', 'zstd', 'none'] },
    { name: 'Docker schema2 manifest, gzip -9 / uncompressed / Go-like gzip', docker: true, hows: ['gzip-9', 'none', 'node-gzip'] },
  ];
  for (const v of variants) {
    it(`indexes and reads back every file (${v.name})`, async () => {
      const whiteouts = writeTar([{ name: 'etc/.wh.remove-me' }, { name: 'etc/added', data: 'added', mode: 0o600, uid: 7 }]);
      const pushed = await pushImage('clip/variants', v.docker ? 'docker' : 'oci', [
        { tar: gnuTar(src1, 'pax'), how: v.hows[0] },
        { tar: gnuTar(src2, 'gnu'), how: v.hows[1] },
        { tar: whiteouts, how: v.hows[2] },
      ], { docker: v.docker });
      const progress: BuildProgress[] = [];
      const ref = `${registry.host}/clip/variants:${v.docker ? 'docker' : 'oci'}`;
      const built = await buildIndex(ref, { ...access(), span: 256 * 1024, onProgress: (p) => progress.push(p) });
      expect(built.image.manifestDigest).toBe(pushed.digest);
      expect(built.image.config).toMatchObject({ cmd: ['/bin/sh', '-c', 'echo hi'], workingDir: '/srv', user: '1000:1000', exposedPorts: ['8080/tcp'] });
      expect(built.image.config.labels).toEqual({ 'org.example.name': 'clip-test' });
      expect(progress.at(-1)?.bytesDone).toBe(built.compressedSize);
      const index = ClipIndex.fromBuffer(built.index);
      expect(index.layers.map((l) => l.compression)).toEqual(v.hows.map((h) => (h === 'none' ? 'none' : h === 'zstd' ? 'zstd' : 'gzip')));
      const source = new RegistryLayerSource(registryClient(registry.host, access()), 'clip/variants');
      const reader = new ClipReader(index, { source });
      for (const [dir, root] of [
        [src1, ''],
        [src2, ''],
      ] as const) {
        for (const p of walk(dir)) {
          const rel = `${root}/${relative(dir, p)}`;
          if (rel === '/etc/remove-me') continue;
          const st = lstatSync(p);
          const got = await reader.stat(rel);
          if (!st.isDirectory() || dir === src1) expect(got.mode, rel).toBe(st.mode);
          if (st.isFile()) expect((await reader.readFile(rel)).equals(readFileSync(p)), rel).toBe(true);
        }
      }
      await expect(reader.stat('/etc/remove-me')).rejects.toMatchObject({ code: 'ENOENT' });
      expect((await reader.stat('/etc/added')).uid).toBe(7);
      expect((await reader.getxattr('/usr/bin/ping', 'security.capability')).length).toBeGreaterThan(0);
      expect((await reader.stat('/tmp')).mode & 0o7777).toBe(0o1777);
      expect(await reader.readlink('/usr/bin/tool-link')).toBe('/usr/bin/tool');
      const report = await verifyIndex(index, source);
      expect(report.layers).toHaveLength(3);
      await source.close();
    });
  }

  it('picks the platform from an image index and stays pinned when the tag moves', async () => {
    const amd = await pushImage('clip/multi', 'amd64-only', [{ tar: writeTar([{ name: 'arch', data: 'amd64' }]), how: 'gzip' }]);
    const arm = await pushImage('clip/multi', 'arm64-only', [{ tar: writeTar([{ name: 'arch', data: 'arm64' }]), how: 'gzip' }], {
      arch: 'arm64',
    });
    const indexDoc = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: arm.mediaType, digest: arm.digest, size: arm.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
          { mediaType: amd.mediaType, digest: amd.digest, size: amd.size, platform: { os: 'linux', architecture: 'amd64' } },
        ],
      }),
    );
    await client.putManifest('clip/multi', 'latest', indexDoc, 'application/vnd.oci.image.index.v1+json');
    const ref = `${registry.host}/clip/multi:latest`;
    const amdBuilt = await buildIndex(ref, access());
    expect(amdBuilt.image.manifestDigest).toBe(amd.digest);
    const armBuilt = await buildIndex(ref, { ...access(), platform: { os: 'linux', architecture: 'arm64' } });
    expect(armBuilt.image.manifestDigest).toBe(arm.digest);
    expect(armBuilt.image.architecture).toBe('arm64');
    await expect(buildIndex(ref, { ...access(), platform: { os: 'linux', architecture: 's390x' } })).rejects.toThrow(/s390x/);

    // the tag moves to another image: the index still reads its own layers
    await pushImage('clip/multi', 'latest', [{ tar: writeTar([{ name: 'arch', data: 'moved' }]), how: 'gzip' }]);
    const source = new RegistryLayerSource(registryClient(registry.host, access()), 'clip/multi');
    const reader = new ClipReader(ClipIndex.fromBuffer(amdBuilt.index), { source });
    expect((await reader.readFile('/arch')).toString()).toBe('amd64');
    await source.close();
  });

  it('rejects bad input with clear errors', async () => {
    await expect(buildIndex(`${registry.host}/clip/nope:missing`, access())).rejects.toMatchObject({ code: 'REGISTRY_NOT_FOUND' });
    await expect(buildIndex(`${registry.host}/clip/variants:oci`, { credentials: { username: USER, password: 'wrong' }, insecure: true })).rejects.toMatchObject({
      code: 'REGISTRY_UNAUTHORIZED',
    });
    // an artifact that is not a container image
    const cfg = Buffer.from('{}');
    await client.uploadBlob('clip/artifact', cfg, sha256(cfg), cfg.length);
    const layer = Buffer.from('chart bytes');
    await client.uploadBlob('clip/artifact', layer, sha256(layer), layer.length);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: sha256(cfg), size: cfg.length },
        layers: [{ mediaType: 'application/vnd.cncf.helm.chart.content.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
      }),
    );
    await client.putManifest('clip/artifact', 'v1', manifest, 'application/vnd.oci.image.manifest.v1+json');
    await expect(buildIndex(`${registry.host}/clip/artifact:v1`, access())).rejects.toMatchObject({ code: 'UNSUPPORTED_MANIFEST' });
    await expect(buildIndex('Not A Ref!!', access())).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('detects corrupt bytes served by the registry (lazy read, verify, and index build)', async () => {
    const tar = writeTar([{ name: 'big.bin', data: mixedData(4_000_000, 77) }]);
    const pushed = await pushImage('clip/corrupt', 'v1', [{ tar, how: 'gzip' }]);
    const ref = `${registry.host}/clip/corrupt:v1`;
    const built = await buildIndex(ref, { ...access(), span: 256 * 1024 });
    const index = ClipIndex.fromBuffer(built.index);
    const layer = index.layers[0];
    if (!layer) throw new Error('no layer');
    void pushed;
    // flip bytes in the middle of the stored blob: the registry serves them as they are
    const file = blobFile(layer.digest);
    const blob = readFileSync(file);
    const mid = Math.floor(blob.length / 2);
    for (let i = 0; i < 64; i++) blob[mid + i] = (blob[mid + i] ?? 0) ^ 0x5a;
    writeFileSync(file, blob);
    const source = new RegistryLayerSource(registryClient(registry.host, access()), 'clip/corrupt');
    const reader = new ClipReader(index, { source });
    const fileOffsetOfMid = index.fileData(index.resolve('/big.bin'))?.offset ?? 0;
    const spanIdx = layer.spans.findIndex((s, i) => (layer.spans[i + 1]?.coff ?? Infinity) > mid);
    const span = layer.spans[spanIdx];
    if (!span) throw new Error('no span');
    await expect(reader.read('/big.bin', Math.max(0, span.uoff - fileOffsetOfMid) + 10, 100)).rejects.toMatchObject({
      code: expect.stringMatching(/SPAN_CORRUPT|GZIP_CORRUPT/),
    });
    // spans before the damage still read fine
    expect((await reader.read('/big.bin', 0, 1000)).equals(tar.subarray(512, 1512))).toBe(true);
    await expect(verifyIndex(index, source)).rejects.toMatchObject({ code: expect.stringMatching(/SPAN_CORRUPT|GZIP_CORRUPT|DIGEST_MISMATCH/) });
    await expect(buildIndex(ref, access())).rejects.toMatchObject({ code: expect.stringMatching(/GZIP_CORRUPT|DIGEST_MISMATCH|TAR_CORRUPT/) });
    await source.close();
  });
});

describe('cryo clip CLI', () => {
  const cli = (args: string[], input?: string) =>
    execFileSync('npx', ['tsx', 'apps/cli/src/main.ts', ...args], {
      cwd: REPO,
      env: { ...process.env, CRYO_REGISTRY_PASSWORD: PASS, CRYO_CLIP_CACHE: join(work, 'cli-cache') },
      encoding: 'buffer',
      maxBuffer: 1 << 28,
      ...(input !== undefined ? { input } : {}),
    });

  it('index, info, ls, stat, cat --stats, verify', async () => {
    const data = mixedData(12_000_000, 5);
    await pushImage('clip/cli', 'v1', [
      {
        tar: writeTar([
          { name: 'bin/', type: '5', mode: 0o755 },
          { name: 'bin/sudo', data: 'sudo!', mode: 0o4755 },
          { name: 'big.bin', data },
          { name: 'small.txt', data: 'small file\n' },
          { name: 'lnk', type: '2', linkname: 'small.txt' },
        ]),
        how: 'gzip',
      },
    ]);
    const out = join(work, 'cli.clip');
    cli(['clip', 'index', `${registry.host}/clip/cli:v1`, '-o', out, '--username', USER]);
    expect(statSync(out).size).toBeGreaterThan(100);
    const info = cli(['clip', 'info', out]).toString();
    expect(info).toMatch(/Manifest: +sha256:/);
    expect(info).toMatch(/% of the compressed image/);
    const ls = cli(['clip', 'ls', out, '/bin']).toString();
    expect(ls).toMatch(/^-rwsr-xr-x +1 +0 +0 +5 .* sudo$/m);
    const st = JSON.parse(cli(['--json', 'clip', 'stat', out, '/lnk']).toString()) as { target: string };
    expect(st.target).toBe('small.txt');
    const catRes = spawnSync('npx', ['tsx', 'apps/cli/src/main.ts', 'clip', 'cat', out, '/lnk', '--stats', '--no-cache', '--username', USER], {
      cwd: REPO,
      env: { ...process.env, CRYO_REGISTRY_PASSWORD: PASS },
    });
    expect(catRes.stdout.toString()).toBe('small file\n');
    const stats = JSON.parse(catRes.stderr.toString().trim().split('\n').at(-1) ?? '{}') as { requests: number; bytes: number };
    expect(stats.requests).toBe(1);
    const infoJson = JSON.parse(cli(['--json', 'clip', 'info', out]).toString()) as { image_bytes: number };
    expect(stats.bytes).toBeLessThan(infoJson.image_bytes / 4); // one span, not the layer
    const big = cli(['clip', 'cat', out, '/big.bin', '--username', USER]);
    expect(big.equals(data)).toBe(true);
    expect(cli(['clip', 'verify', out, '--username', USER]).toString()).toMatch(/^ok: 1 layers/);
    // errors: a missing path, a corrupt index
    expect(() => cli(['clip', 'stat', out, '/nope'])).toThrow(/ENOENT/);
    writeFileSync(join(work, 'bad.clip'), readFileSync(out).subarray(0, 200));
    expect(() => cli(['clip', 'info', join(work, 'bad.clip')])).toThrow(/truncated/);
  });

  // Issue 8 item 5: empty layers made by real tools next to a normal one.
  it('index and verify accept empty layers: zero-byte tar, gzip of an empty file, a tar of only end blocks', async () => {
    const normal = writeTar([{ name: 'etc/hello', data: 'hello\n' }]);
    const endBlocks = execFileSync('tar', ['-cf', '-', '-T', '/dev/null']); // GNU tar: 10240 zero bytes
    expect(endBlocks.length).toBe(10240);
    const cases: Array<[string, LayerSpec[]]> = [
      ['zero-byte', [{ tar: normal, how: 'gzip' }, { tar: Buffer.alloc(0), how: 'none' }]],
      ['empty-gzip', [{ tar: normal, how: 'gzip' }, { tar: Buffer.alloc(0), how: 'gzip' }]],
      ['end-blocks', [{ tar: endBlocks, how: 'none' }, { tar: normal, how: 'gzip' }, { tar: endBlocks, how: 'gzip' }]],
    ];
    for (const [tag, layers] of cases) {
      await pushImage('clip/empty', tag, layers);
      const out = join(work, `empty-${tag}.clip`);
      cli(['clip', 'index', `${registry.host}/clip/empty:${tag}`, '-o', out, '--username', USER]);
      const index = await ClipIndex.load(out);
      expect(index.layers.map((l) => l.size), tag).toEqual(layers.map((l) => compress(l.tar, l.how).blob.length));
      if (tag === 'zero-byte') expect(index.layers[1]).toMatchObject({ size: 0, mediaType: 'application/vnd.oci.image.layer.v1.tar' });
      expect(cli(['clip', 'verify', out, '--username', USER]).toString(), tag).toMatch(new RegExp(`^ok: ${layers.length} layers`));
      expect(cli(['clip', 'cat', out, '/etc/hello', '--no-cache', '--username', USER]).toString(), tag).toBe('hello\n');
    }
  });

  it('ls and stat print names that are not UTF-8 as their bytes; JSON shows them escaped', async () => {
    await pushImage('clip/names', 'v1', [{ tar: writeTar([{ name: 'names/caf\xe9.txt', data: 'a' }, { name: 'names/caf\xe8.txt', data: 'bb' }]), how: 'gzip' }]);
    const out = join(work, 'names.clip');
    cli(['clip', 'index', `${registry.host}/clip/names:v1`, '-o', out, '--username', USER]);
    const ls = cli(['clip', 'ls', out, '/names']).toString('latin1');
    expect(ls).toMatch(/ 1 \S+ \S+ caf\xe9\.txt$/m);
    expect(ls).toMatch(/ 2 \S+ \S+ caf\xe8\.txt$/m);
    const json = JSON.parse(cli(['--json', 'clip', 'ls', out, '/names']).toString()) as Array<{ name: string }>;
    expect(json.map((e) => e.name)).toEqual(['caf\\xe8.txt', 'caf\\xe9.txt']);
  });
});
