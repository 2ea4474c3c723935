/**
 * clip on images made and pushed by a real Docker engine (Go's gzip, Docker
 * schema2): a Debian root filesystem with python3 from debootstrap, and a
 * busybox image with a committed diff layer full of whiteouts. Every file read
 * lazily through the reader must match `docker export` of the same image.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipIndex, ClipReader, RegistryLayerSource, S_IFMT, S_IFREG, TarParser, buildIndex, registryClient, type TarEntry } from '@cryo/clip';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCKER_BIN, startDockerd, type TestDockerd } from './support/dockerd';
import { debianRootfsTar } from '../libs/clip/src/testing/debian';
import { importBusybox } from './support/images';
import { startRegistry, type TestRegistry } from './support/registry';

const USER = 'dockeruser';
const PASS = 'docker-secret-pass';
const work = mkdtempSync(join(tmpdir(), 'clip-docker-'));
const dockerConfig = join(work, 'docker-config');
let registry: TestRegistry;
let engine: TestDockerd;

function docker(args: string[], input?: string): string {
  return execFileSync(DOCKER_BIN, ['-H', engine.host, '--config', dockerConfig, ...args], {
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
    maxBuffer: 1 << 26,
    ...(input !== undefined ? { input } : {}),
  }).trim();
}

/** docker export of a container made from `image`, parsed */
function exportImage(image: string): { tar: Buffer; entries: TarEntry[] } {
  const name = `clip-export-${Date.now()}`;
  docker(['create', '--name', name, image, '/bin/true']);
  const file = join(work, `${name}.tar`);
  docker(['export', name, '-o', file]);
  docker(['rm', name]);
  const tar = readFileSync(file);
  rmSync(file);
  const entries: TarEntry[] = [];
  const p = new TarParser((e) => entries.push(e));
  p.push(tar);
  p.end();
  return { tar, entries };
}

// created by `docker create` in every container, not part of the image
const CONTAINER_ONLY = /^(\.dockerenv|etc\/(hostname|hosts|resolv\.conf|mtab)|dev(\/.*)?|proc|sys)$/;

async function compareWithExport(reader: ClipReader, image: string): Promise<{ files: number; bytes: number }> {
  const { tar, entries } = exportImage(image);
  let files = 0;
  let bytes = 0;
  for (const e of entries) {
    const rel = e.name.replace(/^\.?\//, '').replace(/\/$/, '');
    if (rel === '' || rel === '.' || CONTAINER_ONLY.test(rel)) continue;
    const path = `/${rel}`;
    const st = await reader.stat(path);
    expect([st.uid, st.gid], path).toEqual([e.uid, e.gid]);
    switch (e.type) {
      case 'file': {
        expect(st.mode, path).toBe(S_IFREG | e.mode);
        expect(st.mtime.sec, path).toBe(e.mtime.sec);
        const data = await reader.readFile(path);
        expect(data.equals(tar.subarray(e.dataOffset, e.dataOffset + e.size)), path).toBe(true);
        files++;
        bytes += data.length;
        break;
      }
      case 'hardlink':
        expect(st.ino, path).toBe((await reader.stat(`/${e.linkname}`)).ino);
        expect(st.nlink, path).toBeGreaterThan(1);
        break;
      case 'symlink':
        expect(await reader.readlink(path), path).toBe(e.linkname);
        break;
      default:
        expect(st.mode & 0o7777, path).toBe(e.mode);
        expect(st.mode & S_IFMT, path).not.toBe(S_IFREG);
    }
  }
  return { files, bytes };
}

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: { username: USER, password: PASS } });
  engine = await startDockerd('clip-docker');
  docker(['login', '-u', USER, '--password-stdin', registry.host], PASS);
});

afterAll(async () => {
  await engine?.stop();
  await registry?.destroy();
  rmSync(work, { recursive: true, force: true });
});

const access = () => ({ credentials: { username: USER, password: PASS }, insecure: true });

describe('clip on images pushed by docker', () => {
  it('busybox + a committed diff layer with whiteouts, setuid, hard links: matches docker export', async () => {
    const base = `${registry.host}/clip/busybox:base`;
    importBusybox(engine.host, base);
    docker([
      'run', '--name', 'clip-diff', '--network', 'none', base, 'sh', '-c',
      [
        'rm /etc/group',
        'rm -rf /root',
        'mkdir -p /data/x /tmp/keep',
        'echo hello > /data/x/f',
        'chmod 4755 /data/x/f',
        'ln /data/x/f /data/x/f-hard',
        'ln -s /data/x/f /data/x/f-sym',
        'dd if=/dev/urandom of=/data/rand bs=1M count=3 2>/dev/null',
      ].join(' && '),
    ]);
    const image = `${registry.host}/clip/busybox:diff`;
    docker(['commit', 'clip-diff', image]);
    docker(['rm', 'clip-diff']);
    docker(['push', image]);

    const built = await buildIndex(image, access());
    expect(built.image.manifestMediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    const index = ClipIndex.fromBuffer(built.index);
    expect(index.layers).toHaveLength(2);
    const source = new RegistryLayerSource(registryClient(registry.host, access()), 'clip/busybox');
    const reader = new ClipReader(index, { source });
    await expect(reader.stat('/etc/group')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(reader.stat('/root')).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await reader.stat('/data/x/f')).nlink).toBe(2);
    expect((await reader.stat('/tmp')).mode & 0o7777).toBe(0o1777);
    const { files } = await compareWithExport(reader, image);
    expect(files).toBeGreaterThan(3);
    await source.close();
  });

  it('a Debian root filesystem with python3: every file matches docker export; a small cat fetches one span', async () => {
    const image = `${registry.host}/clip/debian:py3`;
    execFileSync(DOCKER_BIN, ['-H', engine.host, 'import', '-c', 'ENV PATH=/usr/local/bin:/usr/bin:/bin', '-c', 'CMD ["python3"]', debianRootfsTar(), image], {
      stdio: 'ignore',
    });
    docker(['push', image]);
    const built = await buildIndex(image, access());
    const index = ClipIndex.fromBuffer(built.index);
    writeFileSync(join(work, 'debian.clip'), built.index);
    expect(built.image.config.cmd).toEqual(['python3']);
    const layer = index.layers[0];
    if (!layer) throw new Error('no layer');

    // a cold cat of a small file: one request, a tiny part of the layer
    const coldSource = new RegistryLayerSource(registryClient(registry.host, access()), 'clip/debian');
    const cold = new ClipReader(index, { source: coldSource });
    expect((await cold.readFile('/etc/os-release')).toString()).toMatch(/bookworm/);
    expect(cold.stats.requests).toBe(1);
    expect(cold.stats.bytes).toBeLessThan(layer.size / 20);
    await coldSource.close();

    const source = new RegistryLayerSource(registryClient(registry.host, access()), 'clip/debian');
    const reader = new ClipReader(index, { source, cacheDir: join(work, 'cache') });
    const { files, bytes } = await compareWithExport(reader, image);
    expect(files).toBeGreaterThan(3000);
    expect(bytes).toBeGreaterThan(50_000_000);
    expect((await reader.stat('/usr/bin/passwd')).mode & 0o7777).toBe(0o4755);
    expect(await reader.readlink('/bin')).toBe('usr/bin');
    expect((await reader.stat('/tmp')).mode & 0o7777).toBe(0o1777);
    // python3 itself (through the /usr/bin/python3 symlink) is byte-identical to the export
    expect((await reader.readFile('/usr/bin/python3')).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    const pct = (100 * built.index.length) / built.compressedSize;
    console.log(`debian+python3: ${index.inodeCount} inodes, index ${built.index.length} B = ${pct.toFixed(2)} % of ${built.compressedSize} B`);
    await source.close();
  });
});
