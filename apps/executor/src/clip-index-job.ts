/**
 * Building a clip index, as run on the index worker thread (clip-index-worker.ts): inflating a
 * gzip layer and placing its checkpoints keeps a core busy for seconds per 100 MB, which must never
 * happen on the executor's event loop (heartbeats, long polls).
 *
 * Layers are indexed once per host: every layer read from the registry is kept in a cache by its
 * compressed digest, so the next snapshot of the same base (or of a sandbox restored from a
 * snapshot) reads only what is new. Layers the snapshot pipeline compressed itself come indexed.
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import { threadId } from 'node:worker_threads';
import { buildIndex, type IndexedLayer } from '@cryo/clip';
import { connectRegistry, parseImageReference } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';

export interface IndexJob {
  /** `host/repository@digest`: the pushed image, pinned */
  ref: string;
  access: RegistryAccessSettings;
  /** layers indexed already (the new layer of a snapshot) */
  indexed: IndexedLayer[];
  /** where indexed layers are kept, by digest */
  layerCacheDir: string;
}

export interface IndexJobResult {
  index: Buffer;
  files: number;
  spans: number;
  uncompressedSize: number;
  compressedSize: number;
  /** layers read from the registry for this index (the others were given or cached) */
  layersRead: number;
  /** the thread it ran on (not the event loop's, 0) */
  threadId: number;
}

const asBuffer = (b: Uint8Array): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** An IndexedLayer after structured cloning (postMessage, v8.deserialize): Buffers come back as Uint8Arrays. */
export function reviveIndexedLayer(layer: IndexedLayer): IndexedLayer {
  for (const span of layer.spans) {
    span.window = asBuffer(span.window);
    if (span.windowDeflated !== undefined) span.windowDeflated = asBuffer(span.windowDeflated);
    span.sha256 = asBuffer(span.sha256);
  }
  for (const entry of layer.entries) {
    entry.xattrs = new Map([...entry.xattrs].map(([k, v]) => [k, asBuffer(v)]));
  }
  return layer;
}

function cachePath(dir: string, digest: string): string {
  return join(dir, `${digest.replace(':', '_')}.v8`);
}

/** The cache keeps the most recently used layers up to this many bytes. */
export const LAYER_CACHE_BYTES = 1024 * 1024 * 1024;

function cached(dir: string, digest: string): IndexedLayer | undefined {
  const path = cachePath(dir, digest);
  try {
    const layer = reviveIndexedLayer(deserialize(readFileSync(path)) as IndexedLayer);
    const now = new Date();
    utimesSync(path, now, now); // recently used
    return layer;
  } catch {
    return undefined; // absent or unreadable: read the layer again
  }
}

function keep(dir: string, digest: string, layer: IndexedLayer): void {
  mkdirSync(dir, { recursive: true });
  const path = cachePath(dir, digest);
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(tmp, serialize(layer));
  renameSync(tmp, path);
  trim(dir, LAYER_CACHE_BYTES);
}

/** Least recently used first, until the cache fits. */
function trim(dir: string, budget: number): void {
  const files = readdirSync(dir).filter((f) => f.endsWith('.v8')).map((f) => {
    const st = statSync(join(dir, f));
    return { path: join(dir, f), size: st.size, used: st.mtimeMs };
  });
  let total = files.reduce((n, f) => n + f.size, 0);
  for (const f of files.sort((a, b) => a.used - b.used)) {
    if (total <= budget) break;
    rmSync(f.path, { force: true });
    total -= f.size;
  }
}

export async function runIndexJob(job: IndexJob): Promise<IndexJobResult> {
  const given = new Map(job.indexed.map((l) => [l.digest, reviveIndexedLayer(l)]));
  const ref = parseImageReference(job.ref);
  const client = await connectRegistry(ref.host, job.access, { userAgent: 'cryo-executor' });
  let layersRead = 0;
  try {
    const built = await buildIndex(job.ref, {
      client,
      indexed: (digest) => given.get(digest) ?? cached(job.layerCacheDir, digest),
      onLayerIndexed: (digest, layer, streamed) => {
        if (!streamed) return;
        layersRead++;
        keep(job.layerCacheDir, digest, layer);
      },
    });
    for (const [digest, layer] of given) keep(job.layerCacheDir, digest, layer);
    return { index: built.index, files: built.files, spans: built.spans, uncompressedSize: built.uncompressedSize, compressedSize: built.compressedSize, layersRead, threadId };
  } finally {
    await client.close();
  }
}
