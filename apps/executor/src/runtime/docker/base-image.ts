/**
 * The base of a snapshot pushed without dockerd: the layers of the image the container runs on
 * must be in the target repository, and its config (exact bytes) is the start of the new one.
 * Found, cheapest first:
 * 1. a record kept on this host from an earlier snapshot of the same image (its layers' digests
 *    and where they live): a HEAD per layer, a cross-repository mount if one is missing;
 * 2. the image's RepoDigests (it was pulled from a registry): manifest and config from there,
 *    the config checked against the image id, the layers mounted (same registry) or copied;
 * 3. `docker save` (an image built or imported on this host, never pushed): its layers are
 *    compressed on every core and uploaded, and indexed for clip on the way, once; later
 *    snapshots find them by 1.
 * A snapshot this executor pushed is recorded too (rememberImage), so a sandbox restored from it
 * on this host snapshots again by 1, without RepoDigests.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createReadStream, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type Docker from 'dockerode';
import type { IndexedLayer } from '@cryo/clip';
import { MediaType, parseImageReference, type Descriptor, type RegistryClient } from '@cryo/oci';
import { CryoError } from '@cryo/snapshot';
import type { GzipPool } from './gzip-pool';
import { compressLayer } from './push-pipeline';

export interface TargetRepository {
  client: RegistryClient;
  host: string;
  repository: string;
}

export interface BaseContext {
  docker: Docker;
  /** where the layers must be; none: only the config is wanted (snapshots kept on this host) */
  target: TargetRepository;
  /** a client for another registry host (the executor's credentials for it); the caller closes them */
  client: (host: string) => Promise<RegistryClient>;
  /** records of images whose layers are known (base-images/) */
  recordDir: string;
  /** scratch space for `docker save` */
  workDir: string;
  pool: GzipPool;
}

export interface BaseImage {
  /** the image id: sha256 of `config` */
  imageId: string;
  config: Record<string, unknown>;
  /** the base layers, now all in the target repository */
  layers: Descriptor[];
  /** layers compressed here (docker save), indexed on the way, by digest */
  indexed: IndexedLayer[];
  /** how the layers got there */
  layersPresent: number;
  layersMounted: number;
  layersCopied: number;
  layersUploaded: number;
  /** compressed bytes uploaded or copied for the base (0 when every layer was there or mounted) */
  uploadedBytes: number;
  /** where they came from: `record`, `registry <host/repo>` or `docker save` */
  source: string;
}

interface ImageRecord {
  image_id: string;
  /** the config, base64 (its exact bytes) */
  config: string;
  layers: Descriptor[];
  /** registry repositories known to hold every layer: `host/repository` */
  holders: string[];
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function recordPath(dir: string, imageId: string): string {
  return join(dir, `${imageId.replace(':', '_')}.json`);
}

function readRecord(dir: string, imageId: string): ImageRecord | undefined {
  try {
    const record = JSON.parse(readFileSync(recordPath(dir, imageId), 'utf8')) as ImageRecord;
    return record.image_id === imageId ? record : undefined;
  } catch {
    return undefined;
  }
}

/** Remember that an image (its config, its layers) is in `holder` (`host/repository`). */
export function rememberImage(dir: string, config: Buffer, layers: Descriptor[], holder: string): void {
  mkdirSync(dir, { recursive: true });
  const imageId = sha256(config);
  const old = readRecord(dir, imageId);
  const record: ImageRecord = {
    image_id: imageId,
    config: config.toString('base64'),
    layers,
    holders: [...new Set([holder, ...(old?.holders ?? [])])].slice(0, 8),
  };
  const path = recordPath(dir, imageId);
  writeFileSync(`${path}.tmp`, JSON.stringify(record));
  renameSync(`${path}.tmp`, path);
}

function parseConfig(bytes: Buffer, what: string): Record<string, unknown> {
  const value: unknown = JSON.parse(bytes.toString('utf8'));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CryoError('UNPROCESSABLE', `the config of ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

type Placement = 'present' | 'mounted' | 'copied';

/** Make every layer present in the target repository, from one of `holders`; undefined when one cannot be found. */
async function placeLayers(ctx: BaseContext, layers: Descriptor[], holders: string[]): Promise<Placement[] | undefined> {
  const placed: Placement[] = [];
  for (const layer of layers) {
    if (await ctx.target.client.headBlob(ctx.target.repository, layer.digest)) {
      placed.push('present');
      continue;
    }
    let done: Placement | undefined;
    for (const holder of holders) {
      const slash = holder.indexOf('/');
      if (slash < 0) continue;
      const host = holder.slice(0, slash);
      const repository = holder.slice(slash + 1);
      if (host === ctx.target.host) {
        if (repository !== ctx.target.repository && await ctx.target.client.mountBlob(ctx.target.repository, layer.digest, repository)) done = 'mounted';
      } else {
        const source = await ctx.client(host);
        if (await source.headBlob(repository, layer.digest)) {
          const { stream } = await source.getBlob(repository, layer.digest, { verify: true });
          await ctx.target.client.uploadBlob(ctx.target.repository, stream, layer.digest, layer.size);
          done = 'copied';
        }
      }
      if (done !== undefined) break;
    }
    if (done === undefined) return undefined;
    placed.push(done);
  }
  return placed;
}

function result(imageId: string, config: Record<string, unknown>, layers: Descriptor[], placed: Placement[], source: string): BaseImage {
  const count = (p: Placement): number => placed.filter((x) => x === p).length;
  return {
    imageId, config, layers, indexed: [], source,
    layersPresent: count('present'), layersMounted: count('mounted'), layersCopied: count('copied'), layersUploaded: 0,
    uploadedBytes: layers.reduce((n, l, i) => n + (placed[i] === 'copied' ? l.size : 0), 0),
  };
}

/**
 * The base's config only (a snapshot kept on this host, no registry): from this host's record,
 * else from `docker save` (once per image; the record keeps it).
 */
export async function baseConfigHere(ctx: Pick<BaseContext, 'docker' | 'recordDir' | 'workDir'>, imageId: string): Promise<BaseImage> {
  const record = readRecord(ctx.recordDir, imageId);
  const bytes = record === undefined ? undefined : Buffer.from(record.config, 'base64');
  if (bytes !== undefined && sha256(bytes) === imageId) return result(imageId, parseConfig(bytes, imageId), [], [], 'record');
  const dir = await mkdtemp(join(ctx.workDir, 'save-'));
  try {
    await untar(await ctx.docker.getImage(imageId).get(), dir);
    const { configBytes } = savedConfig(dir, imageId);
    rememberImage(ctx.recordDir, configBytes, [], 'local');
    return result(imageId, parseConfig(configBytes, imageId), [], [], 'docker save');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function savedConfig(dir: string, imageId: string): { entry: SaveManifestEntry; configBytes: Buffer } {
  const [entry] = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as SaveManifestEntry[];
  if (entry === undefined) throw new CryoError('INTERNAL', `docker save of ${imageId} has no manifest entry`);
  const configBytes = readFileSync(join(dir, entry.Config));
  if (sha256(configBytes) !== imageId) throw new CryoError('INTERNAL', `docker save of ${imageId} holds config ${sha256(configBytes)}`);
  return { entry, configBytes };
}

/** The base image `imageId` of the engine, its layers in the target repository. */
export async function baseInTarget(ctx: BaseContext, imageId: string): Promise<BaseImage> {
  const record = readRecord(ctx.recordDir, imageId);
  if (record !== undefined) {
    const placed = await placeLayers(ctx, record.layers, record.holders);
    const config = Buffer.from(record.config, 'base64');
    if (placed !== undefined && sha256(config) === imageId) return result(imageId, parseConfig(config, imageId), record.layers, placed, 'record');
  }
  const inspect = await ctx.docker.getImage(imageId).inspect();
  for (const repoDigest of inspect.RepoDigests ?? []) {
    const found = await fromRegistry(ctx, imageId, repoDigest).catch(() => undefined);
    if (found !== undefined) return found;
  }
  return fromDockerSave(ctx, imageId);
}

async function fromRegistry(ctx: BaseContext, imageId: string, repoDigest: string): Promise<BaseImage | undefined> {
  const ref = parseImageReference(repoDigest);
  if (ref.digest === undefined) return undefined;
  const client = ref.host === ctx.target.host ? ctx.target.client : await ctx.client(ref.host);
  {
    const manifest = await client.getImageManifest(ref.repository, ref.digest);
    const { stream } = await client.getBlob(ref.repository, manifest.json.config.digest, { verify: true });
    const parts: Buffer[] = [];
    for await (const part of stream) parts.push(Buffer.isBuffer(part) ? part : Buffer.from(part as Uint8Array));
    const config = Buffer.concat(parts);
    if (sha256(config) !== imageId) return undefined; // the tag moved on: not this image
    const holder = `${ref.host}/${ref.repository}`;
    const placed = await placeLayers(ctx, manifest.json.layers, [holder]);
    if (placed === undefined) return undefined;
    rememberImage(ctx.recordDir, config, manifest.json.layers, holder);
    return result(imageId, parseConfig(config, imageId), manifest.json.layers, placed, `registry ${holder}`);
  }
}

function untar(stream: NodeJS.ReadableStream, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const tar = spawn('tar', ['-x', '-C', dir], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    tar.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    tar.on('error', reject);
    tar.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar -x of docker save failed: ${stderr.trim() || code}`))));
    stream.on('error', (err) => { tar.kill(); reject(err); });
    stream.pipe(tar.stdin);
  });
}

interface SaveManifestEntry {
  Config: string;
  Layers: string[];
}

async function fromDockerSave(ctx: BaseContext, imageId: string): Promise<BaseImage> {
  const dir = await mkdtemp(join(ctx.workDir, 'save-'));
  try {
    await untar(await ctx.docker.getImage(imageId).get(), dir);
    const { entry, configBytes } = savedConfig(dir, imageId);
    const config = parseConfig(configBytes, imageId);
    const diffIds = ((config.rootfs as { diff_ids?: unknown } | undefined)?.diff_ids ?? []) as string[];
    const layers: Descriptor[] = [];
    const indexed: IndexedLayer[] = [];
    for (const [i, file] of entry.Layers.entries()) {
      const session = await ctx.target.client.startBlobUpload(ctx.target.repository);
      const upload = session.openStream();
      try {
        const layer = await compressLayer(createReadStream(join(dir, file), { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>, ctx.pool, { upload });
        if (layer.diffId !== diffIds[i]) throw new CryoError('INTERNAL', `layer ${i} of ${imageId} from docker save has diff_id ${layer.diffId}, its config says ${diffIds[i]}`);
        await upload.end();
        await session.commit(layer.digest);
        layers.push({ mediaType: MediaType.DockerLayerGzip, size: layer.size, digest: layer.digest });
        indexed.push(layer.indexed);
      } catch (err) {
        upload.abort();
        await session.cancel();
        throw err;
      }
    }
    rememberImage(ctx.recordDir, configBytes, layers, `${ctx.target.host}/${ctx.target.repository}`);
    return {
      imageId, config, layers, indexed, source: 'docker save',
      layersPresent: 0, layersMounted: 0, layersCopied: 0, layersUploaded: layers.length, uploadedBytes: layers.reduce((n, l) => n + l.size, 0),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
