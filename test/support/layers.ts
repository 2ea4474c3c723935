/**
 * Layers as tests compare them: every entry of a layer tar with what `docker commit` is expected
 * to agree on (type, permission bits, owner, xattrs, link target, device numbers, mtime,
 * sha256 of the content), from a registry blob or from `docker save`.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { TarParser, displayName, type TarEntry } from '@cryo/clip';
import { connectRegistry, parseImageReference, MediaType } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';
import { DOCKER_BIN } from './dockerd';

export interface EntryView {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  mtime: number;
  /** link target (symlinks, hard links) */
  link?: string;
  device?: string;
  xattrs: string[];
  sha256?: string;
}

/** Entries by name (directories without their trailing '/'), names shown as text. */
export function layerView(tar: Buffer): Map<string, EntryView> {
  const entries: TarEntry[] = [];
  const parser = new TarParser((e) => entries.push(e));
  parser.push(tar);
  parser.end();
  const view = new Map<string, EntryView>();
  for (const e of entries) {
    const v: EntryView = {
      type: e.type,
      mode: (e.mode & 0o7777).toString(8),
      uid: e.uid,
      gid: e.gid,
      mtime: e.mtime.sec,
      xattrs: [...e.xattrs].map(([k, val]) => `${k}=${val.toString('hex')}`).sort(),
    };
    if (e.type === 'symlink' || e.type === 'hardlink') v.link = displayName(e.linkname);
    if (e.type === 'chardev' || e.type === 'blockdev') v.device = `${e.devmajor}:${e.devminor}`;
    if (e.type === 'file') v.sha256 = createHash('sha256').update(tar.subarray(e.dataOffset, e.dataOffset + e.size)).digest('hex');
    view.set(displayName(e.name.replace(/\/$/, '')), v);
  }
  return view;
}

/**
 * The last layer of `ref` in its registry, uncompressed (`tar`), with its size as stored
 * (`size`, bytes) and the stored size of the layers under it (`baseSize`, bytes).
 */
export async function lastLayerFromRegistry(ref: string, access: RegistryAccessSettings): Promise<{ tar: Buffer; mediaType: string; layers: number; size: number; baseSize: number }> {
  const parsed = parseImageReference(ref);
  const client = await connectRegistry(parsed.host, access);
  try {
    const manifest = await client.getImageManifest(parsed.repository, parsed.digest ?? parsed.tag ?? 'latest');
    const last = manifest.json.layers[manifest.json.layers.length - 1];
    if (last === undefined) throw new Error(`${ref} has no layers`);
    const { stream } = await client.getBlob(parsed.repository, last.digest, { verify: true });
    const parts: Buffer[] = [];
    for await (const p of stream) parts.push(p as Buffer);
    const blob = Buffer.concat(parts);
    const gzip = last.mediaType === MediaType.DockerLayerGzip || last.mediaType === MediaType.OciLayerGzip;
    const baseSize = manifest.json.layers.slice(0, -1).reduce((n, l) => n + l.size, 0);
    return { tar: gzip ? gunzipSync(blob) : blob, mediaType: last.mediaType, layers: manifest.json.layers.length, size: last.size, baseSize };
  } finally {
    await client.close();
  }
}

/** The last layer of a local image, through `docker save`. */
export function lastLayerFromEngine(dockerHost: string, ref: string): Buffer {
  const dir = mkdtempSync('/var/tmp/cryo-save-');
  try {
    execFileSync('sh', ['-c', `"${DOCKER_BIN}" -H "${dockerHost}" save "${ref}" | tar -x -C "${dir}"`]);
    const [entry] = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
    const last = entry?.Layers[entry.Layers.length - 1];
    if (last === undefined) throw new Error(`docker save of ${ref} has no layers`);
    return readFileSync(join(dir, last));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
