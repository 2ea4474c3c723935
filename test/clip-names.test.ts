/**
 * Names are bytes, end to end (issue 8 item 3). The smallest input: one layer holding
 * `names/caf\xe9.txt` (1 byte), `names/caf\xe8.txt` (2 bytes) and a PAX entry `names2/\xff\xfe.bin`
 * (Latin-1 bytes: not UTF-8), made by GNU tar, on top of busybox, pushed to a real registry.
 * Docker's own view of that image (`docker run ls`, `docker export`) is the reference, compared
 * as bytes with: clip's reader, a real FUSE mount of the index, and a lazy (runc) sandbox; then a
 * lazy sandbox writes such names and its snapshot (made without Docker) keeps them — in Docker's
 * view of the snapshot and in a lazy restore of it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipIndex, ClipReader, RegistryLayerSource, TarParser, buildIndex, registryClient, type TarEntry } from '@cryo/clip';
import { mountClip, mountsUnder } from '@cryo/clip/fuse';
import { MediaType, RegistryClient } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { RuncLazyDriver } from '../apps/executor/src/runtime/runc-lazy';
import { lazyCapabilities } from '../apps/executor/src/runtime/lazy/capabilities';
import { DOCKER_BIN, startDockerd, type TestDockerd } from './support/dockerd';
import { ClipArtifacts, lazyRestoreOf } from './support/lazy';
import { busyboxRootfsTar } from './support/images';
import { startRegistry, type TestRegistry } from './support/registry';

const USER = 'namesuser';
const PASS = 'names-secret-pass';
const REPO = 'base/names';
const SNAP_REPO = 'cryo/snapshots';
const work = mkdtempSync('/var/tmp/cryo-clip-names-');
const dockerConfig = join(work, 'docker-config');
const log = pino({ level: process.env.CRYO_TEST_LOG ?? 'silent' });
const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
/** what `ls -1` prints for the two dirs, as a byte string (one char per byte) */
const LISTING = 'names/caf\xe8.txt\nnames/caf\xe9.txt\nnames2/\xff\xfe.bin\n';
const LIST_SCRIPT = 'cd / && for f in names/* names2/*; do echo "$f"; done';
const CAT_SCRIPT = 'cat "/names/$(printf \'caf\\351.txt\')" "/names/$(printf \'caf\\350.txt\')" "/names2/$(printf \'\\377\\376.bin\')"';

let registry: TestRegistry;
let engine: TestDockerd;
let imageRef: string;

/** Docker CLI output as a byte string: no UTF-8 decoding on the way. */
function dockerBytes(args: string[]): string {
  return execFileSync(DOCKER_BIN, ['-H', engine.host, '--config', dockerConfig, ...args], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 }).toString('latin1');
}

/** The names layer, made by GNU tar from a real directory (C locale: names go in as bytes). */
function namesLayerTar(): Buffer {
  const src = join(work, 'names-src');
  const at = (rel: string): Buffer => Buffer.from(`${src}/${rel}`, 'latin1');
  mkdirSync(at('names'), { recursive: true });
  mkdirSync(at('names2'));
  writeFileSync(at('names/caf\xe9.txt'), 'a');
  writeFileSync(at('names/caf\xe8.txt'), 'bb');
  writeFileSync(at('names2/\xff\xfe.bin'), 'ccc');
  return execFileSync('tar', ['-C', src, '--format=pax', '--numeric-owner', '-cf', '-', 'names', 'names2'], { env: { ...process.env, LC_ALL: 'C' } });
}

async function pushImage(): Promise<void> {
  const client = new RegistryClient({ host: registry.host, insecure: true, credentials: { username: USER, password: PASS } });
  try {
    const tars = [readFileSync(busyboxRootfsTar()), namesLayerTar()];
    const layers = [];
    for (const tar of tars) {
      const gz = gzipSync(tar);
      await client.uploadBlob(REPO, gz, digestOf(gz), gz.length);
      layers.push({ mediaType: MediaType.DockerLayerGzip, size: gz.length, digest: digestOf(gz) });
    }
    const config = Buffer.from(JSON.stringify({
      architecture: 'amd64', os: 'linux', created: '2024-01-01T00:00:00Z',
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: tars.map(digestOf) },
    }));
    await client.uploadBlob(REPO, config, digestOf(config), config.length);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.DockerManifest, config: { mediaType: MediaType.DockerConfig, size: config.length, digest: digestOf(config) }, layers,
    }));
    await client.putManifest(REPO, 'v1', manifest, MediaType.DockerManifest);
  } finally {
    await client.close();
  }
  imageRef = `${registry.host}/${REPO}:v1`;
}

/** `docker export` of a container of `ref`: entries whose names start with names/ or names2/, and the tar. */
function dockerExport(ref: string): { entries: TarEntry[]; tar: Buffer } {
  const name = `names-export-${Date.now()}`;
  dockerBytes(['create', '--name', name, ref, '/bin/true']);
  const file = join(work, `${name}.tar`);
  dockerBytes(['export', name, '-o', file]);
  dockerBytes(['rm', name]);
  const tar = readFileSync(file);
  const entries: TarEntry[] = [];
  const parser = new TarParser((e) => entries.push(e));
  parser.push(tar);
  parser.end();
  return { entries: entries.filter((e) => /^names2?\//.test(e.name)), tar };
}

const credentials = { username: USER, password: PASS };
const caps = await lazyCapabilities();

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: credentials });
  engine = await startDockerd('clip-names');
  execFileSync(DOCKER_BIN, ['-H', engine.host, '--config', dockerConfig, 'login', '-u', USER, '--password-stdin', registry.host], { input: PASS, stdio: 'pipe' });
  await pushImage();
  dockerBytes(['pull', imageRef]);
});

afterAll(async () => {
  const left = mountsUnder(work).map((m) => m.mountpoint);
  await engine?.stop();
  await registry?.destroy();
  if (left.length === 0) rmSync(work, { recursive: true, force: true });
  expect(left).toEqual([]);
});

describe('names that are not UTF-8, against Docker', () => {
  let index: ClipIndex;

  it('Docker shows all three names byte for byte (the reference)', () => {
    expect(dockerBytes(['run', '--rm', '--network', 'none', imageRef, 'sh', '-c', LIST_SCRIPT])).toBe(LISTING);
    expect(dockerBytes(['run', '--rm', '--network', 'none', imageRef, 'sh', '-c', CAT_SCRIPT])).toBe('abbccc');
  });

  it("clip's reader matches docker export: same names (bytes), same contents", async () => {
    const built = await buildIndex(imageRef, { credentials });
    writeFileSync(join(work, 'names.clip'), built.index);
    index = ClipIndex.fromBuffer(built.index);
    const source = new RegistryLayerSource(registryClient(registry.host, { credentials }), REPO);
    try {
      const reader = new ClipReader(index, { source });
      const { entries, tar } = dockerExport(imageRef);
      const files = entries.filter((e) => e.type === 'file');
      expect(files.map((e) => e.name).sort()).toEqual(['names/caf\xe8.txt', 'names/caf\xe9.txt', 'names2/\xff\xfe.bin']);
      for (const e of files) {
        expect((await reader.readFile(`/${e.name}`)).equals(tar.subarray(e.dataOffset, e.dataOffset + e.size)), e.name).toBe(true);
      }
      expect(await reader.readdir('/names')).toEqual(['caf\xe8.txt', 'caf\xe9.txt']);
      expect(await reader.readdir('/names2')).toEqual(['\xff\xfe.bin']);
    } finally {
      await source.close();
    }
  });

  it.skipIf(!caps.lazy)('a FUSE mount of the index lists and reads them as Docker does', async () => {
    const mnt = join(work, 'mnt');
    const mount = await mountClip(join(work, 'names.clip'), mnt, {
      registry: { snapshot_registry: { url: registry.host, repository: REPO, ...credentials, insecure: true } },
    });
    try {
      const listing = [];
      for (const dir of ['names', 'names2']) {
        for (const name of await readdir(join(mnt, dir), { encoding: 'buffer' })) listing.push(`${dir}/${name.toString('latin1')}`);
      }
      expect(`${listing.sort().join('\n')}\n`).toBe(LISTING);
      const cat = await Promise.all(['names/caf\xe9.txt', 'names/caf\xe8.txt', 'names2/\xff\xfe.bin'].map((n) => readFile(Buffer.from(`${mnt}/${n}`, 'latin1'))));
      expect(Buffer.concat(cat).toString()).toBe('abbccc');
    } finally {
      await mount.unmount();
    }
  });
});

describe.skipIf(!caps.lazy)('names that are not UTF-8 through a lazy sandbox and its snapshot', () => {
  let driver: RuncLazyDriver;
  const created: string[] = [];

  let clip: ClipArtifacts;
  const access = (): RegistryAccessSettings => ({ snapshot_registry: { url: registry.host, repository: SNAP_REPO, ...credentials, insecure: true } });

  beforeAll(() => {
    clip = new ClipArtifacts(access(), join(work, 'clip'));
    driver = new RuncLazyDriver({ stateDir: join(work, 'state'), executorId: 'exec-names-test', log, access: access(), clipIndexes: clip });
  });

  afterAll(async () => {
    for (const id of created) await driver?.remove(id).catch(() => undefined);
    await driver?.close();
  });

  async function lazySandbox(sandboxId: string, ref: string): Promise<void> {
    const restore = await lazyRestoreOf(clip, access(), ref, `snap-of-${sandboxId}`);
    created.push(sandboxId);
    await driver.create({ sandboxId, namespace: 'test', image: ref, command: ['sh'], env: {}, labels: {}, resources: {}, restore }, () => undefined);
  }

  async function shBytes(sandboxId: string, script: string): Promise<string> {
    const result = await driver.exec(sandboxId, ['sh', '-c', script], 60);
    expect(result.exit_code, `${script}: ${result.stderr}`).toBe(0);
    return result.stdout;
  }

  it('a lazy sandbox shows the image names as Docker does; names it writes survive its snapshot', async () => {
    await lazySandbox('names-a', imageRef);
    // exec output crosses the executor as text: compare through hex, byte for byte
    const hex = (script: string): string => `(${script}) | busybox od -An -tx1 | busybox tr -d ' \\n'`;
    const docker = (script: string): string => dockerBytes(['run', '--rm', '--network', 'none', imageRef, 'sh', '-c', script]);
    expect(await shBytes('names-a', hex(LIST_SCRIPT))).toBe(docker(hex(LIST_SCRIPT)));
    expect(Buffer.from(await shBytes('names-a', hex(LIST_SCRIPT)), 'hex').toString('latin1')).toBe(LISTING);
    expect(await shBytes('names-a', CAT_SCRIPT)).toBe('abbccc');

    // the sandbox writes names of its own: Latin-1, a lone continuation byte, and UTF-8
    await shBytes('names-a', [
      'mkdir /written',
      'printf 1 > "/written/$(printf \'w\\351\')"',
      'printf 22 > "/written/$(printf \'w\\350\')"',
      'printf 333 > "/written/$(printf \'\\200\\377\')"',
      'printf 4444 > "/written/$(printf \'w\\303\\251\')"',
      'rm "/names/$(printf \'caf\\350.txt\')"',
    ].join(' && '));
    // (the shell's glob order is its own: compare sorted)
    const sorted = (out: string): string[] => out.split('\n').filter((l) => l !== '').sort();
    const after = 'cd / && for f in names/* names2/* written/*; do echo "$f"; done';
    const sums = 'cd /written && for f in *; do echo "$f=$(cat "$f")"; done';
    const expected = ['names/caf\xe9.txt', 'names2/\xff\xfe.bin', 'written/\x80\xff', 'written/w\xc3\xa9', 'written/w\xe8', 'written/w\xe9'].sort();
    const expectedSums = ['\x80\xff=333', 'w\xc3\xa9=4444', 'w\xe8=22', 'w\xe9=1'].sort();
    expect(sorted(Buffer.from(await shBytes('names-a', hex(after)), 'hex').toString('latin1'))).toEqual(expected);

    const outcome = await driver.snapshot({
      opId: 'op-names', sandboxId: 'names-a', snapshotId: 'snapnames', namespace: 'test', tag: 'sb-names-a-snap', baseImage: imageRef,
    }, () => undefined);

    // Docker's view of the snapshot: the same bytes
    dockerBytes(['pull', outcome.imageRef]);
    expect(sorted(dockerBytes(['run', '--rm', '--network', 'none', outcome.imageRef, 'sh', '-c', after]))).toEqual(expected);
    expect(sorted(dockerBytes(['run', '--rm', '--network', 'none', outcome.imageRef, 'sh', '-c', sums]))).toEqual(expectedSums);

    // and a lazy restore of the snapshot
    await lazySandbox('names-b', outcome.imageRef);
    expect(sorted(Buffer.from(await shBytes('names-b', hex(after)), 'hex').toString('latin1'))).toEqual(expected);
    expect(sorted(Buffer.from(await shBytes('names-b', hex(sums)), 'hex').toString('latin1'))).toEqual(expectedSums);
  });
});
