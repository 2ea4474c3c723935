/**
 * Docker's image archive, the tar `docker save` writes and `docker load` reads: a `manifest.json`
 * (`[{Config, RepoTags, Layers}]`) naming the config file and each layer's tar, bottom first.
 * Docker 20.10 writes `<id>/layer.tar` per layer and, for a layer whose diff it has written
 * already, a symlink to the first copy; Docker 25 writes an OCI layout (`blobs/sha256/<hex>`)
 * with the same manifest.json. Both are read here; the archive written for `docker load` has one
 * layer (the flattened one) as a plain tar.
 * Source: moby image/tarexport (save.go, load.go).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { posix } from 'node:path';
import { ClipError, FileRegionLayer, END_OF_ARCHIVE, TarParser, encodeHeader, padding, type ByteSource, type TarEntry, type TarHeader } from '@cryo/clip';
import { CryoError } from '@cryo/snapshot';

/** An image read from `docker save`: its config and its layers, readable from the spool file. */
export interface SavedImage {
  config: Record<string, unknown>;
  layers: FileRegionLayer[];
  /** bytes of the archive as `docker save` wrote it */
  archiveBytes: number;
}

const ManifestError = (what: string): CryoError => new CryoError('UNPROCESSABLE', `docker save wrote an archive cryo cannot read: ${what}`);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function readAll(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function archivePath(name: string): string {
  return posix.normalize(name).replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}

/** The tar inside one file entry of the archive, parsed and hashed while the archive streams by. */
class EntryScan {
  private parser: TarParser | undefined;
  private readonly hash = createHash('sha256');
  readonly entries: TarEntry[] = [];
  problem: string | undefined;

  constructor(readonly entry: TarEntry) {
    this.parser = new TarParser((e) => this.entries.push(e));
  }

  push(bytes: Buffer): void {
    this.hash.update(bytes);
    if (this.parser === undefined) return;
    try {
      this.parser.push(bytes);
    } catch (err) {
      // Not every file is a tar (configs, manifests): it matters only if the manifest names it as a layer.
      this.parser = undefined;
      this.problem = err instanceof Error ? err.message : String(err);
    }
  }

  private result: { entries: TarEntry[]; diffId: string } | undefined;

  /** The layer's entries and diff_id, once its bytes are all in; throws if they are not a tar. */
  finish(name: string): { entries: TarEntry[]; diffId: string } {
    if (this.result !== undefined) return this.result;
    if (this.parser !== undefined) {
      try {
        this.parser.end();
      } catch (err) {
        this.problem = err instanceof Error ? err.message : String(err);
      }
    }
    if (this.problem !== undefined) throw ManifestError(`layer ${name} is not a tar: ${this.problem}`);
    this.result = { entries: this.entries, diffId: `sha256:${this.hash.digest('hex')}` };
    return this.result;
  }
}

/**
 * Spool `docker save`'s stream to `path` and read it, in one pass: the archive's entries, and the
 * tar inside each of its files parsed and hashed on the way, so that no layer is read twice. The
 * manifest's layers are checked against the config's diff_ids. The spool file holds the whole
 * image uncompressed; the layers read from it until closed.
 */
export async function readSavedImage(archive: ByteSource, path: string): Promise<SavedImage> {
  const entries: TarEntry[] = [];
  const scans: EntryScan[] = [];
  const outer = new TarParser((e) => {
    entries.push(e);
    if (e.type === 'file' && e.size > 0) scans.push(new EntryScan(e));
  });
  const out = createWriteStream(path);
  const failed = new Promise<never>((_, reject) => out.once('error', reject));
  failed.catch(() => undefined);
  let pos = 0;
  let first = 0;
  try {
    for await (const chunk of archive) {
      outer.push(chunk);
      const end = pos + chunk.length;
      // Hand each file entry the part of this chunk that holds its data (entries come in order).
      for (let i = first; i < scans.length; i++) {
        const scan = scans[i];
        if (scan === undefined) break;
        const from = Math.max(scan.entry.dataOffset, pos);
        const to = Math.min(scan.entry.dataOffset + scan.entry.size, end);
        if (from >= end) break;
        if (to > from) scan.push(chunk.subarray(from - pos, to - pos));
        if (scan.entry.dataOffset + scan.entry.size <= end) first = i + 1;
      }
      pos = end;
      if (!out.write(chunk)) await Promise.race([once(out, 'drain'), failed]);
    }
    outer.end();
    out.end();
    await Promise.race([once(out, 'finish'), failed]);
  } finally {
    out.destroy();
  }
  const file = new FileRegionLayer(path, 0, pos, []);
  try {
    return await readManifest(file, entries, new Map(scans.map((scan) => [scan.entry, scan])), path, pos);
  } finally {
    await file.close();
  }
}

async function readManifest(file: FileRegionLayer, entries: TarEntry[], scans: Map<TarEntry, EntryScan>, path: string, archiveBytes: number): Promise<SavedImage> {
  const byName = new Map<string, TarEntry>();
  for (const e of entries) byName.set(archivePath(e.name), e);
  const resolve = (name: string, depth = 0): TarEntry => {
    const entry = byName.get(archivePath(name));
    if (entry === undefined) throw ManifestError(`${name} is not in it`);
    if (depth > 8) throw ManifestError(`${name} is a loop of links`);
    if (entry.type === 'symlink') return resolve(posix.join(posix.dirname(archivePath(name)), entry.linkname), depth + 1);
    if (entry.type === 'hardlink') return resolve(entry.linkname, depth + 1);
    if (entry.type !== 'file') throw ManifestError(`${name} is not a file`);
    return entry;
  };
  const json = async (name: string): Promise<unknown> => {
    const entry = resolve(name);
    try {
      return JSON.parse((await readAll(file.read(entry.dataOffset, entry.size))).toString('utf8'));
    } catch (err) {
      throw ManifestError(`${name} is not JSON (${err instanceof Error ? err.message : String(err)})`);
    }
  };
  const manifest = await json('manifest.json');
  const first: unknown = Array.isArray(manifest) ? manifest[0] : undefined;
  if (!isRecord(first) || typeof first.Config !== 'string' || !Array.isArray(first.Layers)) throw ManifestError('manifest.json has no Config and Layers');
  const config = await json(first.Config);
  if (!isRecord(config)) throw ManifestError(`${first.Config} is not an object`);
  const rootfs = isRecord(config.rootfs) ? config.rootfs : {};
  const diffIds = Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids : [];
  if (diffIds.length !== first.Layers.length) throw ManifestError(`the config lists ${diffIds.length} diff_ids for ${first.Layers.length} layers`);
  const layers = first.Layers.map((name: unknown, i: number) => {
    if (typeof name !== 'string') throw ManifestError(`layer ${i} has no path`);
    const entry = resolve(name);
    // An empty file is no tar: no scan was made for it.
    const scan = scans.get(entry);
    if (scan === undefined) throw ManifestError(`layer ${name} is empty`);
    const layer = scan.finish(name);
    const diffId = diffIds[i];
    if (layer.diffId !== diffId) {
      throw new ClipError('DIGEST_MISMATCH', `layer ${name} of the saved image has digest ${layer.diffId}, its config says ${String(diffId)}`);
    }
    return new FileRegionLayer(path, entry.dataOffset, entry.size, layer.entries);
  });
  return { config, layers, archiveBytes };
}

function fileHeader(name: string, size: number): TarHeader {
  return {
    name, type: 'file', mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', size,
    mtime: { sec: 0, nsec: 0 }, linkname: '', devmajor: 0, devminor: 0, xattrs: new Map(),
  };
}

/** What `oneLayerArchive` wrote, once it has ended. */
export interface WrittenArchive {
  diffId: string;
  /** sha256 of the config without the prefix: the image id */
  configHex: string;
}

/**
 * The archive `docker load` takes for a one-layer image, streamed: the layer's plain tar first
 * (`layerSize` bytes, hashed on the way), then the config that `config(diffId)` makes for it,
 * then manifest.json tagging it `repoTags` (Docker unpacks the whole archive before it reads
 * the manifest, so the order is free). `written` is filled in at the end.
 */
export async function* oneLayerArchive(
  input: { layer: ByteSource; layerSize: number; config: (diffId: string) => Buffer; repoTags: string[] },
  written: Partial<WrittenArchive> = {},
): AsyncGenerator<Buffer> {
  const layerName = 'layer/layer.tar';
  yield encodeHeader({ ...fileHeader('layer', 0), type: 'directory', mode: 0o755 });
  yield encodeHeader(fileHeader(layerName, input.layerSize));
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of input.layer) {
    hash.update(chunk);
    size += chunk.length;
    if (size > input.layerSize) break;
    yield chunk;
  }
  if (size !== input.layerSize) throw new CryoError('INTERNAL', `the flattened layer has ${size} bytes, ${input.layerSize} were announced`);
  yield padding(size);
  const diffId = `sha256:${hash.digest('hex')}`;
  const config = input.config(diffId);
  const configHex = createHash('sha256').update(config).digest('hex');
  const manifest = Buffer.from(JSON.stringify([{ Config: `${configHex}.json`, RepoTags: input.repoTags, Layers: [layerName] }]));
  for (const [name, data] of [[`${configHex}.json`, config], ['manifest.json', manifest]] as const) {
    yield encodeHeader(fileHeader(name, data.length));
    yield data;
    yield padding(data.length);
  }
  yield END_OF_ARCHIVE;
  written.diffId = diffId;
  written.configHex = configHex;
}
