import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { END_OF_ARCHIVE, encodeHeader, padding, readTarEntries, type TarHeader } from '@cryo/clip';
import { oneLayerArchive, readSavedImage, type WrittenArchive } from './docker-archive';
import { CryoError } from '@cryo/snapshot';
import { DEFAULT_MAX_LAYERS, flattenFailure, flattenedConfig, needsFlatten } from './flatten-image';

const work = mkdtempSync(join(tmpdir(), 'flatten-image-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const header = (name: string, type: TarHeader['type'], size = 0, linkname = ''): TarHeader => ({
  name, type, size, linkname, mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', mtime: { sec: 0, nsec: 0 }, devmajor: 0, devminor: 0, xattrs: new Map(),
});
const file = (name: string, data: Buffer): Buffer[] => [encodeHeader(header(name, 'file', data.length)), data, padding(data.length)];

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of gen) chunks.push(c);
  return Buffer.concat(chunks);
}

describe('flattenedConfig', () => {
  it('keeps the config but rootfs and history: one diff_id, one history entry saying what happened', () => {
    const config = {
      architecture: 'amd64', os: 'linux', config: { Env: ['A=1'], Cmd: ['sh'], Labels: { 'dev.cryo.snapshot-id': 's1' } },
      rootfs: { type: 'layers', diff_ids: ['sha256:a', 'sha256:b'] }, history: [{ created_by: 'x' }, { created_by: 'y' }], 'x-unknown': 7,
    };
    const flat = flattenedConfig(config, 'sha256:flat', 2, new Date('2030-01-01T00:00:00Z'));
    expect(flat).toEqual({
      ...config, created: '2030-01-01T00:00:00.000Z', rootfs: { type: 'layers', diff_ids: ['sha256:flat'] },
      history: [{ created: '2030-01-01T00:00:00.000Z', created_by: 'cryo flatten', comment: 'cryo: 2 layers flattened into one (executor setting snapshots.max_layers)' }],
    });
  });
});

describe('needsFlatten', () => {
  it('flattens above max_layers, and refuses a limit Docker cannot honour', () => {
    expect(needsFlatten(DEFAULT_MAX_LAYERS, DEFAULT_MAX_LAYERS)).toBe(false);
    expect(needsFlatten(DEFAULT_MAX_LAYERS + 1, DEFAULT_MAX_LAYERS)).toBe(true);
    expect(() => needsFlatten(3, 125)).toThrow(/1\.\.124/);
    expect(() => needsFlatten(3, 0)).toThrow(/1\.\.124/);
  });
});

describe('flattenFailure', () => {
  it('says what was flattened and why, that the sandbox runs on, then the cause as the error boundary maps it', () => {
    const full = Object.assign(new Error("ENOSPC: no space left on device, write '/state/flatten/layer-3.tar'"), { code: 'ENOSPC' });
    const err = flattenFailure(full, 121, 100);
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toBe('flattening the snapshot image (121 layers, more than snapshots.max_layers 100) failed (the sandbox keeps running; '
      + "no snapshot was made): the executor's disk is full (ENOSPC: no space left on device, write '/state/flatten/layer-3.tar'): free space under its state_dir");
    // A CryoError keeps its code and gets the same context.
    const engine = flattenFailure(new CryoError('UNAVAILABLE', 'export image sha256:x to flatten it (docker save): connection refused'), 101, 100);
    expect(engine.code).toBe('UNAVAILABLE');
    expect(engine.message).toMatch(/^flattening the snapshot image \(101 layers.*: export image sha256:x to flatten it/);
  });
});

describe('Docker image archives', () => {
  it('reads a docker save archive whose second layer is a symlink to the first (as Docker 20.10 writes a repeated diff)', async () => {
    const layer = await collect((async function* () {
      yield* file('etc/x', Buffer.from('x'));
      yield END_OF_ARCHIVE;
    })());
    const diffId = sha(layer);
    const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [diffId, diffId] }, config: { Env: ['A=1'] } }));
    const manifest = Buffer.from(JSON.stringify([{ Config: 'c.json', RepoTags: null, Layers: ['one/layer.tar', 'two/layer.tar'] }]));
    const archive = Buffer.concat([
      encodeHeader(header('one', 'directory')), ...file('one/layer.tar', layer),
      encodeHeader(header('two', 'directory')), encodeHeader(header('two/layer.tar', 'symlink', 0, '../one/layer.tar')),
      ...file('c.json', config), ...file('manifest.json', manifest), END_OF_ARCHIVE,
    ]);
    const saved = await readSavedImage([archive], join(work, 'saved.tar'));
    expect(saved.config).toMatchObject({ config: { Env: ['A=1'] } });
    expect(saved.layers.map((l) => l.entries.map((e) => e.name))).toEqual([['etc/x'], ['etc/x']]);
    await Promise.all(saved.layers.map((l) => l.close()));

    const bad = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [diffId, `sha256:${'0'.repeat(64)}`] } }));
    const corrupt = Buffer.concat([
      ...file('one/layer.tar', layer), encodeHeader(header('two/layer.tar', 'symlink', 0, '../one/layer.tar')),
      ...file('c.json', bad), ...file('manifest.json', manifest), END_OF_ARCHIVE,
    ]);
    await expect(readSavedImage([corrupt], join(work, 'corrupt.tar'))).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    await expect(readSavedImage([Buffer.concat([...file('manifest.json', Buffer.from('[]')), END_OF_ARCHIVE])], join(work, 'empty.tar')))
      .rejects.toThrow(/docker save wrote an archive cryo cannot read: manifest.json has no Config and Layers/);
  });

  it('streams the one-layer archive docker load takes (layer first, then config and manifest), and reads it back', async () => {
    const layer = Buffer.concat([...file('a', Buffer.from('flat')), END_OF_ARCHIVE]);
    const written: Partial<WrittenArchive> = {};
    const archive = await collect(oneLayerArchive({
      layer: (async function* () { yield layer; })(), layerSize: layer.length,
      config: (diffId) => Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [diffId] } })), repoTags: ['cryo-snapshots:t'],
    }, written));
    expect(written.diffId).toBe(sha(layer));
    expect((await readTarEntries([archive])).map((e) => e.name)).toEqual(['layer/', 'layer/layer.tar', `${written.configHex}.json`, 'manifest.json']);
    const saved = await readSavedImage([archive], join(work, 'again.tar'));
    expect(saved.layers).toHaveLength(1);
    expect(saved.layers[0]?.entries.map((e) => e.name)).toEqual(['a']);
    await Promise.all(saved.layers.map((l) => l.close()));
    // A layer that is not the size announced in its header fails the archive.
    await expect(collect(oneLayerArchive({ layer: [layer], layerSize: layer.length + 512, config: () => Buffer.from('{}'), repoTags: [] })))
      .rejects.toThrow(/announced/);
  });
});
