/**
 * Issue 10 item 3 end to end, through the real server and executors: the first lazy start of a
 * snapshot records what its program read (mount start through the first exec) and pushes it as
 * `<tag>.access`, with its pack (the bytes it names); a later lazy restore on a cold host fetches
 * it with the index and streams the pack from before the command's first read, so the command's
 * files cost no demand request at all; a snapshot of that lazy sandbox carries the record and pack
 * to its new image, whose lazy restore uses them too; deleting the snapshot deletes its record; a
 * pack whose bytes fail their check leaves the reads to the spans, and the command reads the
 * right bytes.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipIndex, decodeAccessRecord, encodeAccessRecord, spanAt } from '@cryo/clip';
import { readMountStatus, requestAccessRecord, type MountAccessOut } from '@cryo/clip/fuse';
import { MediaType, RegistryClient, parseImageReference } from '@cryo/oci';
import { startCluster, type Cluster } from './support/cluster';
import { DOCKER_BIN } from './support/dockerd';
import { importBusybox } from './support/images';
import { killAll, waitFor } from './support/processes';
import { execIn, obj, waitSandbox, waitSnapshot } from './support/api';

const NS = '/v1/namespaces/prefetch';
/** What the command reads: 60 files of 40 kB of random bytes, written on A. */
const READ_APP = 'cat /app/* | wc -c';
const APP_BYTES = 60 * 40_000;
let cluster: Cluster;
let registry: RegistryClient;

beforeAll(async () => {
  cluster = await startCluster({ hosts: [{ name: 'A' }, { name: 'B' }], heartbeatTimeoutSecs: 20 });
  const engineA = cluster.engines.get('A');
  const host = cluster.registryHost;
  if (engineA === undefined || host === undefined) throw new Error('cluster incomplete');
  const base = `${host}/base/busybox:prefetch`;
  importBusybox(engineA.host, base);
  const dockerConfig = mkdtempSync(join(cluster.dir, 'docker-config-'));
  execFileSync(DOCKER_BIN, ['-H', engineA.host, '--config', dockerConfig, 'login', '-u', cluster.registryUser, '--password-stdin', host],
    { input: cluster.registryPassword, stdio: ['pipe', 'pipe', 'pipe'] });
  execFileSync(DOCKER_BIN, ['-H', engineA.host, '--config', dockerConfig, 'push', base], { stdio: 'pipe' });
  registry = new RegistryClient({ host, insecure: true, credentials: { username: cluster.registryUser, password: cluster.registryPassword } });
}, 600_000);

afterAll(async () => {
  await registry?.close();
  await cluster?.stop();
  await killAll();
});

/** The manifest digest of `ref`, or undefined when the registry has none. */
async function manifestOf(ref: string): Promise<string | undefined> {
  const parsed = parseImageReference(ref);
  return (await registry.headManifest(parsed.repository, parsed.tag ?? 'latest'))?.digest;
}

/** The access record blob behind `<image ref>.access`. */
async function accessRecordOf(imageRef: string): Promise<Buffer> {
  const parsed = parseImageReference(`${imageRef}.access`);
  const manifest = await registry.getManifest(parsed.repository, parsed.tag ?? '');
  const layer = (manifest.json as { layers: Array<{ digest: string }> }).layers[0];
  const { stream } = await registry.getBlob(parsed.repository, layer?.digest ?? '', { verify: true });
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

async function restoreLazily(snapshotId: string): Promise<string> {
  const restore = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: 'B', mode: 'lazy', command: ['sleep', '3600'] });
  expect(restore.status, JSON.stringify(restore.body)).toBe(202);
  const id = String(obj(restore.body).sandbox_id);
  expect((await waitSandbox(cluster, NS, id, ['running'])).restore_mode).toBe('lazy');
  return id;
}

async function remove(sandboxId: string): Promise<void> {
  await cluster.api('DELETE', `${NS}/sandboxes/${sandboxId}`);
  await waitSandbox(cluster, NS, sandboxId, ['terminated']);
  await waitFor('mounts gone', async () => (readFileSync('/proc/mounts', 'utf8').includes(sandboxId) ? undefined : true), 60_000);
}

/** B's span cache emptied: the next restore reads everything from the registry again. */
function coldCacheB(): void {
  const cache = join(cluster.stateDir('B'), 'clip-cache');
  if (existsSync(cache)) for (const entry of readdirSync(cache)) rmSync(join(cache, entry), { recursive: true, force: true });
}

/** What B's mount of `sandboxId` served and fetched, asked of its mount process. */
async function mountAccess(sandboxId: string): Promise<MountAccessOut> {
  const dir = join(cluster.stateDir('B'), 'lazy', sandboxId);
  const status = readMountStatus(join(dir, 'mount.json'));
  if (status === undefined) throw new Error(`no mount status for ${sandboxId}`);
  const out = await requestAccessRecord(status, join(dir, 'mount-access.json'));
  if (out?.record === null || out?.record === undefined) throw new Error(`the mount of ${sandboxId} gave no access record`);
  return out;
}

describe('access records through the server', () => {
  let snapshotId: string;
  let imageRef: string;
  let recorded: Buffer;
  /** `cat /app/* | sha256sum` on A, where the files were written */
  let appSha256: string;

  it('the first lazy start records what its program read and pushes it beside the index', async () => {
    const created = await cluster.api('POST', `${NS}/sandboxes`, { image: `${cluster.registryHost}/base/busybox:prefetch`, command: ['sh'], executor_id: 'A' });
    const sandboxA = String(obj(created.body).sandbox_id);
    await waitSandbox(cluster, NS, sandboxA, ['running']);
    const write = await execIn(cluster, NS, sandboxA, ['sh', '-c', 'mkdir /app && for i in $(seq 1 60); do head -c 40000 /dev/urandom > /app/m$i.bin; done']);
    expect(write.exit_code, String(write.stderr)).toBe(0);
    appSha256 = String((await execIn(cluster, NS, sandboxA, ['sh', '-c', 'cat /app/* | sha256sum'])).stdout);
    expect(appSha256).toMatch(/^[0-9a-f]{64} /);
    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxA}/snapshots`, {});
    snapshotId = String(obj(snap.body).snapshot_id);
    const indexed = await waitSnapshot(cluster, NS, snapshotId, (s) => s.clip_index_ref !== null || s.clip_error !== null || s.status === 'failed', 'indexed');
    expect(indexed.clip_error).toBeNull();
    imageRef = String(indexed.image_ref);
    expect(await manifestOf(`${imageRef}.access`)).toBeUndefined();

    const first = await restoreLazily(snapshotId);
    const out = await execIn(cluster, NS, first, ['sh', '-c', READ_APP]);
    expect(out.stdout).toBe(`${APP_BYTES}\n`);
    await waitFor('the access record pushed', async () => manifestOf(`${imageRef}.access`), 60_000);
    recorded = await accessRecordOf(imageRef);
    const record = decodeAccessRecord(recorded);
    const paths = record.files.map((f) => f.path);
    for (let i = 1; i <= 60; i++) expect(paths).toContain(`/app/m${i}.bin`);
    expect(paths).toContain('/bin/busybox');
    expect(record.files.find((f) => f.path === '/app/m1.bin')?.ranges).toEqual([[0, 40_000]]);
    // A second exec does not record again.
    const pushed = await manifestOf(`${imageRef}.access`);
    await execIn(cluster, NS, first, ['sh', '-c', 'cat /etc/passwd']);
    await remove(first);
    expect(await manifestOf(`${imageRef}.access`)).toBe(pushed);
    expect(cluster.logs()).toContain('access record pushed');
  });

  let second: string;

  it('a later lazy restore prefetches it: requests before the first read, none on demand for the command\'s files', async () => {
    coldCacheB();
    second = await restoreLazily(snapshotId);
    const out = await execIn(cluster, NS, second, ['sh', '-c', READ_APP]);
    expect(out.stdout).toBe(`${APP_BYTES}\n`);
    const access = await mountAccess(second);
    const requests = access.requests;
    // The record came with its pack (the bytes it names, gzip'd in first-read order): the mount
    // streamed that from before anything was read through it, let alone the command's files,
    // and served the reads from it.
    const dir = join(cluster.stateDir('B'), 'lazy', second);
    const firstRead = (access.recording_started_at ?? NaN) + Math.min(...(access.record?.files ?? []).map((f) => f.first_ms));
    const pack = await waitFor('pack stats', async () => {
      const p = readMountStatus(join(dir, 'mount.json'))?.pack;
      return p !== undefined && p.reads > 0 ? p : undefined;
    }, 10_000);
    expect(pack).toMatchObject({ state: 'done', misses: 0 });
    expect(pack.started_at).toBeLessThan(firstRead);
    expect(decodeAccessRecord(recorded).pack?.entries.length).toBeGreaterThan(0);
    // No span of the command's files was fetched on demand.
    const index = await ClipIndex.load(String((JSON.parse(readFileSync(join(dir, 'sandbox.json'), 'utf8')) as { index_path: string }).index_path));
    const appSpans = new Set<string>();
    for (let i = 1; i <= 60; i++) {
      const data = index.fileData(index.resolve(`/app/m${i}.bin`, true));
      const layer = data === undefined ? undefined : index.layers[data.layer];
      if (data === undefined || layer === undefined) throw new Error(`/app/m${i}.bin is not a file in the index`);
      for (let s = spanAt(layer, data.offset); s <= spanAt(layer, data.offset + data.size - 1); s++) appSpans.add(`${data.layer}#${s}`);
    }
    const onDemand = requests.filter((q) => q.reason === 'demand' && Array.from({ length: q.last - q.first + 1 }, (_, k) => `${q.layer}#${q.first + k}`).some((k) => appSpans.has(k)));
    expect(onDemand).toEqual([]);
    // It prefetched rather than recorded: the image's record is the first one still.
    expect(await accessRecordOf(imageRef)).toEqual(recorded);
    expect(readFileSync(join(dir, 'mount.log'), 'utf8')).toContain('"msg":"prefetch done"');
  });

  it('a snapshot of the lazy sandbox carries the record to its image, whose lazy restore prefetches it; deleting the snapshot deletes it', async () => {
    const snap = await cluster.api('POST', `${NS}/sandboxes/${second}/snapshots`, {});
    expect(snap.status, JSON.stringify(snap.body)).toBe(202);
    const snap2 = String(obj(snap.body).snapshot_id);
    const indexed = await waitSnapshot(cluster, NS, snap2, (s) => s.clip_index_ref !== null || s.clip_error !== null || s.status === 'failed', 'indexed');
    expect(indexed.clip_error).toBeNull();
    const image2 = String(indexed.image_ref);
    expect(decodeAccessRecord(await accessRecordOf(image2))).toEqual(decodeAccessRecord(recorded));
    await remove(second);

    coldCacheB();
    const third = await restoreLazily(snap2);
    expect((await execIn(cluster, NS, third, ['sh', '-c', READ_APP])).stdout).toBe(`${APP_BYTES}\n`);
    // The carried record brought its pack along: the new image's restore streams it too.
    await mountAccess(third);
    const pack = await waitFor('pack stats', async () => {
      const p = readMountStatus(join(cluster.stateDir('B'), 'lazy', third, 'mount.json'))?.pack;
      return p !== undefined && p.reads > 0 ? p : undefined;
    }, 10_000);
    expect(pack.state).toBe('done');
    await remove(third);

    expect(await manifestOf(`${image2}.access`)).toBeDefined();
    const deleted = await cluster.api('DELETE', `${NS}/snapshots/${snap2}`);
    expect(deleted.status, JSON.stringify(deleted.body)).toBeLessThan(300);
    await waitFor('the carried access record deleted with its snapshot', async () => ((await manifestOf(`${image2}.access`)) === undefined ? true : undefined), 120_000);
  });
  it('a pack that fails its check (wrong bytes in the registry) leaves the restore\'s reads to the spans: the command reads the right bytes', async () => {
    // The image's record artifact, its pack replaced by one with a flipped byte (a registry
    // serving bad bytes): the record names the new blob, whose entries no longer match.
    const parsed = parseImageReference(`${imageRef}.access`);
    const manifest = (await registry.getManifest(parsed.repository, parsed.tag ?? '')).json as { config: unknown; layers: Array<{ mediaType: string; digest: string; size: number }>; annotations?: unknown };
    const record = decodeAccessRecord(recorded);
    const packLayer = manifest.layers.find((l) => l.digest === record.pack?.digest);
    if (record.pack === undefined || packLayer === undefined) throw new Error('the recorded artifact has no pack layer');
    const { stream } = await registry.getBlob(parsed.repository, packLayer.digest, { verify: true });
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
    const raw = gunzipSync(Buffer.concat(chunks));
    raw[Math.floor(raw.length / 3)] = (raw[Math.floor(raw.length / 3)] ?? 0) ^ 0x01;
    const bad = gzipSync(raw);
    const badDigest = `sha256:${createHash('sha256').update(bad).digest('hex')}`;
    await registry.uploadBlob(parsed.repository, bad, badDigest, bad.length);
    const recordBytes = encodeAccessRecord({ ...record, pack: { ...record.pack, digest: badDigest, size: bad.length } });
    const recordDigest = `sha256:${createHash('sha256').update(recordBytes).digest('hex')}`;
    await registry.uploadBlob(parsed.repository, recordBytes, recordDigest, recordBytes.length);
    await registry.putManifest(parsed.repository, parsed.tag ?? '', Buffer.from(JSON.stringify({
      ...manifest,
      layers: manifest.layers.map((l) => (l.digest === packLayer.digest ? { ...l, digest: badDigest, size: bad.length } : { ...l, digest: recordDigest, size: recordBytes.length })),
    })), MediaType.OciManifest);

    coldCacheB();
    const sandbox = await restoreLazily(snapshotId);
    expect((await execIn(cluster, NS, sandbox, ['sh', '-c', 'cat /app/* | sha256sum'])).stdout).toBe(appSha256);
    const dir = join(cluster.stateDir('B'), 'lazy', sandbox);
    const pack = await waitFor('pack stats', async () => {
      const p = readMountStatus(join(dir, 'mount.json'))?.pack;
      return p !== undefined && p.state !== 'streaming' ? p : undefined;
    }, 10_000);
    expect(pack.state).toBe('failed');
    expect(pack.error).toMatch(/does not match its sha256/);
    expect((await mountAccess(sandbox)).requests.length).toBeGreaterThan(0);
    expect(readFileSync(join(dir, 'mount.log'), 'utf8')).toContain('access pack failed; reads go to the spans');
    await remove(sandbox);
  });
});
