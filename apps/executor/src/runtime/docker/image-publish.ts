/**
 * The image a pre-copy snapshot makes, without `docker commit`: the config `docker commit` would
 * write (the container's config, the base's rootfs and history plus the new layer), and the
 * local engine's copy of it, loaded while the layer is being pushed.
 *
 * The local copy goes in with `docker load` of a docker-save archive that holds only the new
 * layer: moby's loader (image/tarexport/load.go) skips every layer whose chain already exists,
 * and the base layers exist (the container runs on them). The archive is streamed in the
 * order load needs nothing else for: the layer first (its size is known before its first byte),
 * then the config and manifest.json, which need its diff_id.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import type Docker from 'dockerode';
import { END_OF_ARCHIVE, encodeHeader, padding, type TarHeader } from '@cryo/clip';
import { CryoError } from '@cryo/snapshot';
import { dockerFailure } from '../../errors';

export interface CommitConfigInput {
  /** the new layers on top of the base's, each with its history entry */
  layers: Array<{ diffId: string; createdBy?: string; comment: string }>;
  /** labels added to the container's (the snapshot labels) */
  labels: Record<string, string>;
  now?: Date;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `docker commit`'s config (moby daemon/commit.go): the container's own config (the image's,
 * with what the container was created with) and labels, the base's architecture, os, rootfs
 * and history, and a diff_id and history entry per new layer (`created_by` defaults to the
 * container's command, as a commit writes it).
 */
export function commitConfig(base: Record<string, unknown>, container: Docker.ContainerInspectInfo, input: CommitConfigInput): Buffer {
  const created = (input.now ?? new Date()).toISOString();
  const rootfs = isRecord(base.rootfs) ? base.rootfs : {};
  const diffIds = Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids : [];
  const history = Array.isArray(base.history) ? base.history : [];
  const own = container.Config;
  const config = { ...own, Labels: { ...(own.Labels ?? {}), ...input.labels } };
  const image: Record<string, unknown> = {
    architecture: base.architecture,
    ...(base.variant === undefined ? {} : { variant: base.variant }),
    os: base.os,
    config,
    container: container.Id,
    container_config: config,
    created,
    history: [...history, ...input.layers.map((l) => ({ created, created_by: l.createdBy ?? (own.Cmd ?? []).join(' '), comment: l.comment }))],
    rootfs: { type: 'layers', diff_ids: [...diffIds, ...input.layers.map((l) => l.diffId)] },
  };
  return Buffer.from(JSON.stringify(image));
}

function fileHeader(name: string, size: number): Buffer {
  const header: TarHeader = {
    name, type: 'file', mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', size,
    mtime: { sec: Math.floor(Date.now() / 1000), nsec: 0 }, linkname: '', devmajor: 0, devminor: 0, xattrs: new Map(),
  };
  return encodeHeader(header);
}

/** The local engine's `docker load` of one new layer on top of layers it has. */
export class LocalLoad {
  private readonly body = new PassThrough({ highWaterMark: 4 * 1024 * 1024 });
  private readonly response: Promise<NodeJS.ReadableStream>;
  private written = 0;

  constructor(docker: Docker, private readonly layerSize: number) {
    this.response = docker.loadImage(this.body, { quiet: true });
    this.response.catch(() => undefined); // awaited in finish(); an abort must not leave it unhandled
    this.body.write(fileHeader('layer.tar', layerSize));
  }

  /** Part of the layer tar, in order (waits while the engine is behind). */
  async write(chunk: Buffer): Promise<void> {
    this.written += chunk.length;
    if (this.body.write(chunk)) return;
    await Promise.race([once(this.body, 'drain'), this.response.then(() => new Promise<never>(() => undefined))]);
  }

  /**
   * The whole layer tar from `source`, in order; returns its diff_id (`sha256:<hex>` of the
   * uncompressed tar). A failing source aborts the load and rethrows.
   */
  async writeLayer(source: AsyncIterable<Buffer>): Promise<string> {
    const hash = createHash('sha256');
    try {
      for await (const chunk of source) {
        hash.update(chunk);
        await this.write(chunk);
      }
    } catch (err) {
      this.abort();
      throw err;
    }
    return `sha256:${hash.digest('hex')}`;
  }

  /** The config and manifest.json after the layer; resolves when the engine has the image, tagged. */
  async finish(config: Buffer, baseLayers: number, repoTags: string[]): Promise<void> {
    if (this.written !== this.layerSize) throw new CryoError('INTERNAL', `the local load got ${this.written} layer bytes, ${this.layerSize} were announced`);
    const manifest = Buffer.from(JSON.stringify([{
      Config: 'config.json',
      RepoTags: repoTags,
      // Paths of the base layers are never opened: their chains exist in the engine.
      Layers: [...Array.from({ length: baseLayers }, (_, i) => `base-${i}/layer.tar`), 'layer.tar'],
    }]));
    this.body.write(padding(this.layerSize));
    for (const [name, bytes] of [['config.json', config], ['manifest.json', manifest]] as const) {
      this.body.write(fileHeader(name, bytes.length));
      this.body.write(bytes);
      this.body.write(padding(bytes.length));
    }
    this.body.end(END_OF_ARCHIVE);
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.response;
    } catch (err) {
      throw dockerFailure(err, 'load the snapshot image into the local engine');
    }
    let text = '';
    for await (const part of stream) text += Buffer.isBuffer(part) ? part.toString('utf8') : String(part);
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let message: { error?: string; errorDetail?: { message?: string } };
      try {
        message = JSON.parse(line) as typeof message;
      } catch {
        continue;
      }
      const error = message.errorDetail?.message ?? message.error;
      if (error !== undefined) throw dockerFailure(error, 'load the snapshot image into the local engine');
    }
  }

  /** Give up: the engine discards what it got. */
  abort(): void {
    this.body.destroy();
  }
}
