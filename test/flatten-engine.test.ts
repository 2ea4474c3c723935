/**
 * Issue 8 item 2, the docker driver's side against Docker itself:
 * - an image of layers made by `docker commit` (files created, deleted, replaced by directories
 *   and back, an opaque directory, hard links, a setuid change, a name that is not UTF-8, and the
 *   same diff twice, which `docker save` writes as a link to the first) is flattened through the
 *   engine (`docker save` -> merge -> `docker load`) and a container of the flat image must
 *   export exactly what a container of the original exports: Docker's own merge is the oracle;
 * - for both snapshot methods (commit, pre-copy): a chain without a registry (local snapshots)
 *   with snapshots.max_layers 3 goes on through repeated flattening, each restore showing what
 *   the chain wrote; a flatten that fails (its work dir cannot be made) says so, leaves the
 *   sandbox running with its data, and leaves no snapshot image behind.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { TarParser, type TarEntry } from '@cryo/clip';
import { localSnapshotRef } from '@cryo/snapshot';
import { ClipArtifacts } from '../apps/executor/src/clip-artifacts';
import { DockerDriver, dockerFromHost } from '../apps/executor/src/runtime/docker';
import { RegistryCredentialSource } from '../apps/executor/src/registry-credentials';
import { PauseJournal } from '../apps/executor/src/state/pause-journal';
import { flattenEngineImage } from '../apps/executor/src/snapshot/flatten-image';
import { DOCKER_BIN, startDockerd, type TestDockerd } from './support/dockerd';
import { docker, importBusybox } from './support/images';

let engine: TestDockerd;
let work: string;
const log = pino({ level: 'silent' });

beforeAll(async () => {
  engine = await startDockerd('flatten');
  work = mkdtempSync(join(tmpdir(), 'flatten-engine-'));
  importBusybox(engine.host, 'busybox:flat');
}, 600_000);

afterAll(async () => {
  await engine?.stop();
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

/** What Docker's init layer puts in every container, dated when the container was created. */
const INIT_LAYER = new Set(['.dockerenv', 'dev/', 'dev/console', 'dev/pts/', 'dev/shm/', 'etc/', 'etc/hostname', 'etc/hosts', 'etc/mtab', 'etc/resolv.conf', 'proc/', 'sys/']);

/**
 * Every entry of `docker export` of a container of `image`: name, type, mode, owner, mtime (but
 * for the init layer's), link, content digest.
 */
function exported(image: string): string[] {
  const name = `export-${createHash('sha256').update(image).digest('hex').slice(0, 8)}`;
  docker(engine.host, ['create', '--name', name, image, 'true']);
  try {
    const tar = execFileSync(DOCKER_BIN, ['-H', engine.host, 'export', name], { maxBuffer: 1 << 28 });
    const entries: TarEntry[] = [];
    const parser = new TarParser((e) => entries.push(e));
    parser.push(tar);
    parser.end();
    return entries.map((e) => {
      const data = e.type === 'file' ? createHash('sha256').update(tar.subarray(e.dataOffset, e.dataOffset + e.size)).digest('hex').slice(0, 16) : '';
      const mtime = INIT_LAYER.has(e.name) ? '-' : e.mtime.sec;
      return [e.name, e.type, e.mode.toString(8), `${e.uid}:${e.gid}`, mtime, e.linkname, e.size, data].join(' ');
    }).sort();
  } finally {
    docker(engine.host, ['rm', '-f', name]);
  }
}

function layersOf(image: string): number {
  return Number(docker(engine.host, ['image', 'inspect', '-f', '{{len .RootFS.Layers}}', image]));
}

describe('flattening through the Docker engine', () => {
  it('a container of the flat image exports exactly what one of the Docker-made original exports', async () => {
    const steps = [
      'mkdir -p /w/d/sub /w/opq /w/tobefile && echo a > /w/a && echo b > /w/d/sub/b && echo o > /w/opq/o1 && ln /w/a /w/a-link'
        + ' && printf x > "/w/$(printf \'caf\\351\')" && echo t > /w/tobefile/t && echo f > /w/tobedir',
      'rm /w/a && rm -rf /w/opq && mkdir /w/opq && echo n > /w/opq/new && rm -rf /w/tobefile && echo nowfile > /w/tobefile'
        + ' && rm /w/tobedir && mkdir /w/tobedir && echo in > /w/tobedir/in && rm /bin/ls',
      // The same diff twice (same bytes, same times): docker save writes the second as a link to the first.
      'echo same > /w/same && touch -d "2023-01-01 00:00:00" /w/same /w',
      'echo same > /w/same && touch -d "2023-01-01 00:00:00" /w/same /w',
      'chmod 4755 /w/a-link && echo more >> /w/d/sub/b',
    ];
    let image = 'busybox:flat';
    for (const [i, step] of steps.entries()) {
      const name = `step-${i}`;
      docker(engine.host, ['run', '--name', name, '--network', 'none', image, 'sh', '-c', step]);
      image = `steps:${i}`;
      docker(engine.host, ['commit', name, image]);
      docker(engine.host, ['rm', name]);
    }
    expect(layersOf(image)).toBe(steps.length + 1);
    // Two layers with the same diff: docker save writes the second as a symlink.
    const saved = execFileSync(DOCKER_BIN, ['-H', engine.host, 'save', image], { maxBuffer: 1 << 28 });
    const savedEntries: TarEntry[] = [];
    const parser = new TarParser((e) => savedEntries.push(e));
    parser.push(saved);
    expect(savedEntries.some((e) => e.type === 'symlink' && e.name.endsWith('layer.tar'))).toBe(true);

    const before = exported(image);
    const imageId = docker(engine.host, ['image', 'inspect', '-f', '{{.Id}}', image]);
    const flat = await flattenEngineImage({ docker: dockerFromHost(engine.host), imageId, tag: 'flat:test', workDir: join(work, 'engine'), log });
    expect(flat.report.squashedLayers).toBe(steps.length + 1);
    expect(layersOf('flat:test')).toBe(1);
    expect(docker(engine.host, ['image', 'inspect', '-f', '{{.Id}}', 'flat:test'])).toBe(flat.imageId);
    expect(exported('flat:test')).toEqual(before);
    // What the user sees: the change of every layer.
    const out = docker(engine.host, ['run', '--rm', '--network', 'none', 'flat:test', 'sh', '-c',
      'cat /w/a-link /w/d/sub/b /w/opq/new /w/tobefile /w/tobedir/in /w/same; ls /w/opq; test ! -e /w/a && test ! -e /bin/ls && stat -c %a /w/a-link']);
    expect(out).toBe('a\nb\nmore\nn\nnowfile\nin\nsame\nnew\n4755');
    // The config keeps the image's Env and Cmd, and says what happened.
    const history = docker(engine.host, ['history', '--no-trunc', '--format', '{{.CreatedBy}}|{{.Comment}}', 'flat:test']);
    expect(history).toBe(`cryo flatten|cryo: ${steps.length + 1} layers flattened into one (executor setting snapshots.max_layers)`);
    expect(docker(engine.host, ['image', 'inspect', '-f', '{{json .Config.Env}}', 'flat:test'])).toBe('["PATH=/bin"]');
  });
});

/** A docker driver of the test engine without a registry (local snapshots), by snapshot method. */
function localDriver(method: 'commit' | 'precopy', maxLayers: number, stateDir: string): { driver: DockerDriver; clip: ClipArtifacts } {
  const clip = new ClipArtifacts({}, join(stateDir, 'clip'));
  const driver = new DockerDriver({
    docker: dockerFromHost(engine.host), executorId: 'flat-test', network: 'none', mounts: [], registry: undefined,
    credentials: new RegistryCredentialSource({}), access: {}, clip, stateDir, pauseJournal: new PauseJournal(stateDir), log,
    snapshots: { method, compressionLevel: 1, maxRunningPasses: 3, settledBytes: 4 << 20, maxLayers },
  });
  return { driver, clip };
}

describe.each(['commit', 'precopy'] as const)('local snapshots by %s', (method) => {
  it('a chain with max_layers 3 goes on through repeated flattening', async () => {
    const { driver, clip } = localDriver(method, 3, join(work, `state-${method}`));
    const spec = (sandboxId: string, restore: { snapshotId: string; imageRef: string } | null) => ({
      sandboxId, namespace: 'test', image: 'busybox:flat', command: ['sh'], env: {}, labels: {}, resources: {},
      restore: restore === null ? null : { ...restore, digest: null, clipIndexRef: null, mode: 'eager' as const },
    });
    const progress = (): void => undefined;
    let sandbox = `${method}-0`;
    await driver.create(spec(sandbox, null), progress);
    const seen: Array<[number, boolean]> = [];
    for (let r = 1; r <= 6; r++) {
      const write = await driver.exec(sandbox, ['sh', '-c', `echo ${r} > /root/r${r} && rm -f /root/r${r - 1} && rm /bin/${['cat', 'wc', 'id', 'env', 'seq', 'sync'][r - 1]}`], 30);
      expect(write.exit_code, write.stderr).toBe(0);
      const snapshotId = `${method}-s${r}`;
      const tag = `${method}-chain-${r}`;
      const outcome = await driver.snapshot({ opId: `op-${method}-${r}`, sandboxId: sandbox, snapshotId, namespace: 'test', tag, baseImage: 'busybox:flat' }, progress);
      expect(outcome.imageRef).toBe(localSnapshotRef(tag));
      seen.push([outcome.layers, outcome.flattened]);
      expect(outcome.timings.flatten_ms === null).toBe(!outcome.flattened);
      expect(outcome.capture?.method).toBe(method);
      const next = `${method}-${r}`;
      await driver.create(spec(next, { snapshotId, imageRef: outcome.imageRef }), progress);
      const look = await driver.exec(next, ['sh', '-c', `ls /root; for a in cat wc id env seq sync; do test -e /bin/$a && echo $a; done`], 30);
      expect(look.stdout, `round ${r}`).toBe(`r${r}\n${['cat', 'wc', 'id', 'env', 'seq', 'sync'].slice(r).join('\n')}${r < 6 ? '\n' : ''}`);
      await driver.remove(sandbox);
      sandbox = next;
    }
    // busybox is one layer: 2, 3, then 4 > 3 is flattened to 1, 2, 3, 1 again.
    expect(seen).toEqual([[2, false], [3, false], [1, true], [2, false], [3, false], [1, true]]);
    await driver.remove(sandbox);
    await clip.close();
    // The flattened images replaced the committed (or loaded) ones: nothing is left dangling.
    expect(docker(engine.host, ['images', '-q', '--filter', 'dangling=true'])).toBe('');
  });

  it('a flatten that fails leaves the sandbox running and no snapshot image behind', async () => {
    const stateDir = join(work, `state-fail-${method}`);
    const snapshotId = `${method}-sf`;
    // A file where the flatten wants its work dir (state_dir/snapshots/<snapshot>/flatten).
    mkdirSync(join(stateDir, 'snapshots', snapshotId), { recursive: true });
    writeFileSync(join(stateDir, 'snapshots', snapshotId, 'flatten'), 'not a directory');
    const { driver, clip } = localDriver(method, 1, stateDir);
    const sandboxId = `${method}-fails`;
    await driver.create({ sandboxId, namespace: 'test', image: 'busybox:flat', command: ['sh'], env: {}, labels: {}, resources: {}, restore: null }, () => undefined);
    expect((await driver.exec(sandboxId, ['sh', '-c', 'echo kept > /root/kept'], 30)).exit_code).toBe(0);
    const tag = `${method}-fails-1`;
    await expect(driver.snapshot({ opId: `op-${method}-fail`, sandboxId, snapshotId, namespace: 'test', tag, baseImage: 'busybox:flat' }, () => undefined))
      .rejects.toThrow(/^flattening the snapshot image \(2 layers, more than snapshots\.max_layers 1\) failed \(the sandbox keeps running; no snapshot was made\): .*sf\/flatten/);
    expect((await driver.exec(sandboxId, ['cat', '/root/kept'], 30)).stdout).toBe('kept\n');
    expect(docker(engine.host, ['images', '-q', localSnapshotRef(tag)])).toBe('');
    await driver.remove(sandboxId);
    await clip.close();
  });
});
