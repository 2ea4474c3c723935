/**
 * An image with many small layers, made with real tools (GNU tar, gzip) and pushed through the
 * registry API: the busybox root filesystem, then one layer per step, each writing
 * `/layers/f<i>`, and among them every kind of change a layer can make to the ones below:
 * whiteouts of lower files, an opaque directory, a directory replaced by a file, a hard link, a
 * symlink, a name that is not UTF-8. `expectedTree` says what a container of it must show.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaType, RegistryClient, parseImageReference } from '@cryo/oci';
import { busyboxRootfsTar } from './images';

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** What layer `i` (1-based; layer 0 is busybox) writes, as files under a root dir. */
function writeLayer(root: string, i: number): void {
  const put = (path: string, data: string): void => {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), data);
  };
  put(`layers/f${i}`, `layer ${i}\n`);
  if (i % 10 === 0 && i > 5) put(`layers/.wh.f${i - 5}`, ''); // deletes a lower layer's file
  if (i >= 20 && i < 30) put(`opq/old${i}`, `old ${i}\n`);
  if (i === 30) {
    put('opq/.wh..wh..opq', ''); // empties opq/ of what layers 20..29 put there
    put('opq/new', 'after the opaque marker\n');
  }
  if (i === 40) {
    put('links/a', 'linked\n');
    linkSync(join(root, 'links/a'), join(root, 'links/b'));
  }
  if (i === 50) {
    mkdirSync(join(root, 'names'), { recursive: true });
    writeFileSync(Buffer.from(`${root}/names/caf\xe9.txt`, 'latin1'), 'latin-1 name\n');
  }
  if (i === 55) put('swap/d/inner', 'in a dir that becomes a file\n');
  if (i === 60) put('swap/d', 'now a file\n');
  if (i === 70) {
    mkdirSync(join(root, 'links'), { recursive: true });
    symlinkSync('a', join(root, 'links/sym'));
  }
}

/**
 * What `/layers /opq /links /names /swap` hold in a container of an image with `layers` layers
 * (as `listTreeCommand` prints it): path, then `=content nlink`, `/` for a directory or ` -> target`.
 */
export function expectedTree(layers: number): Map<string, string> {
  const tree = new Map<string, string>();
  const dir = (p: string): void => { tree.set(p, '/'); };
  for (let i = 1; i < layers; i++) {
    dir('layers');
    tree.set(`layers/f${i}`, `=layer ${i} 1`);
    if (i % 10 === 0 && i > 5) tree.delete(`layers/f${i - 5}`);
    if (i >= 20 && i < 30) { dir('opq'); tree.set(`opq/old${i}`, `=old ${i} 1`); }
    if (i === 30) {
      for (const k of [...tree.keys()]) if (k.startsWith('opq/')) tree.delete(k);
      tree.set('opq/new', '=after the opaque marker 1');
    }
    if (i === 40) { dir('links'); tree.set('links/a', '=linked 2'); tree.set('links/b', '=linked 2'); }
    if (i === 50) { dir('names'); tree.set('names/caf\xe9.txt', '=latin-1 name 1'); }
    if (i === 55) { dir('swap'); dir('swap/d'); tree.set('swap/d/inner', '=in a dir that becomes a file 1'); }
    if (i === 60) { tree.delete('swap/d/inner'); tree.set('swap/d', '=now a file 1'); }
    if (i === 70) tree.set('links/sym', ' -> a');
  }
  return tree;
}

/**
 * A shell command (busybox) that prints the tree under `dirs` as hex, one line per path
 * (`path=content nlink`, `path/`, `path -> target`), so that names that are not UTF-8 survive
 * the exec API's text. `parseTree` reads it back.
 */
export function listTreeCommand(dirs: string[]): string[] {
  const script = `cd / && busybox find ${dirs.join(' ')} 2>/dev/null | busybox sort | while IFS= read -r f; do `
    + 'if [ -L "$f" ]; then echo "$f -> $(busybox readlink "$f")"; elif [ -d "$f" ]; then echo "$f/"; '
    + 'else echo "$f=$(cat "$f") $(busybox stat -c %h "$f")"; fi; done | busybox od -An -tx1 | busybox tr -d " \\n"';
  return ['sh', '-c', script];
}

/** The lines of `listTreeCommand`'s output as a map path -> what follows it (names as bytes). */
export function parseTree(hex: string): Map<string, string> {
  const tree = new Map<string, string>();
  for (const line of Buffer.from(hex.trim(), 'hex').toString('latin1').split('\n')) {
    if (line === '') continue;
    const m = /^(.*?)(\/|=.*| -> .*)$/s.exec(line);
    if (m === null) throw new Error(`unexpected tree line ${JSON.stringify(line)}`);
    tree.set(m[1] ?? '', m[2] ?? '');
  }
  return tree;
}

export interface PushedImage {
  ref: string;
  digest: string;
  layers: number;
}

export interface LayeredImageOptions {
  credentials?: { username: string; password: string };
  /** the bottom layer (default: the busybox root filesystem) and the image's Env */
  baseTar?: string;
  env?: string[];
}

/**
 * Build an image of `layers` layers (a root filesystem plus `layers - 1` small ones) and push it
 * to `ref` through the registry API (Docker schema 2, gzip layers).
 */
export async function pushLayeredImage(ref: string, layers: number, opts: LayeredImageOptions = {}): Promise<PushedImage> {
  const { credentials } = opts;
  const parsed = parseImageReference(ref);
  const work = mkdtempSync(join(tmpdir(), 'layered-image-'));
  const client = new RegistryClient({ host: parsed.host, insecure: true, ...(credentials === undefined ? {} : { credentials }) });
  try {
    const blobs: Array<{ gz: Buffer; diffId: string }> = [];
    const addTar = (tar: Buffer): void => {
      blobs.push({ gz: execFileSync('gzip', ['-n', '-c'], { input: tar, maxBuffer: 1 << 30 }), diffId: sha256(tar) });
    };
    addTar(readFileSync(opts.baseTar ?? busyboxRootfsTar()));
    for (let i = 1; i < layers; i++) {
      const root = join(work, `l${i}`);
      mkdirSync(root);
      writeLayer(root, i);
      const top = execFileSync('ls', ['-A', root], { encoding: 'utf8' }).trim().split('\n');
      addTar(execFileSync('tar', ['-C', root, '--format=posix', '--numeric-owner', '--sort=name', '-cf', '-', ...top], {
        env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 1 << 26,
      }));
    }
    for (const b of blobs) {
      const digest = sha256(b.gz);
      if (await client.headBlob(parsed.repository, digest) === undefined) await client.uploadBlob(parsed.repository, b.gz, digest, b.gz.length);
    }
    const config = Buffer.from(JSON.stringify({
      architecture: 'amd64', os: 'linux', created: '2025-01-01T00:00:00Z',
      config: { Env: opts.env ?? ['PATH=/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: blobs.map((b) => b.diffId) },
      history: blobs.map((_, i) => ({ created: '2025-01-01T00:00:00Z', created_by: `layer ${i}` })),
    }));
    await client.uploadBlob(parsed.repository, config, sha256(config), config.length);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, size: config.length, digest: sha256(config) },
      layers: blobs.map((b) => ({ mediaType: MediaType.DockerLayerGzip, size: b.gz.length, digest: sha256(b.gz) })),
    }));
    const digest = await client.putManifest(parsed.repository, parsed.tag ?? 'latest', manifest, MediaType.DockerManifest);
    return { ref, digest, layers };
  } finally {
    await client.close();
    rmSync(work, { recursive: true, force: true });
  }
}
