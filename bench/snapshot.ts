/**
 * Issue 11 benchmark: cryo's pre-copy snapshot against the hand-rolled alternative, `docker
 * commit` + `docker push` of a twin container holding the same data, in the same run, against
 * the same registry (htpasswd, loopback).
 *
 * For each diff size (10 MB, 100 MB, 1 GB by default), with and without a writer running during
 * the snapshot, each round puts a fresh data file (half random bytes, half text-like lines, so
 * no layer is ever "already there" and gzip has real work) into the sandbox's writable layer and
 * the same file into the twin's, then takes
 *   cryo:  POST /snapshots -> status `active` (pushed, clip index pushed, image in the local engine)
 *   plain: docker commit (pauses the container for the commit) + docker push
 * Reported: the pause window, end to end, bytes pushed (compressed layer), medians of the rounds.
 * The writer rewrites 1 MiB in place about 15 times a second (dd conv=notrunc, sleep 0.05), in
 * both containers.
 *
 *   npm run bench -- snapshot                 (or: npx tsx bench/snapshot.ts [rounds] [sizes in MB, comma-separated])
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { connectRegistry, parseImageReference } from '@cryo/oci';
import { startCluster } from '../test/support/cluster';
import { importBusybox } from '../test/support/images';
import { DOCKER_BIN } from '../test/support/dockerd';
import { waitFor, killAll } from '../test/support/processes';
import { printTable, median, writeResult } from './report';

const rounds = Number(process.argv[2] ?? 3);
const sizesMb = (process.argv[3] ?? '10,100,1024').split(',').map(Number);
const NS = '/v1/namespaces/bench';
// A busy sandbox: rewrites 1 MiB in place about 15 times a second.
const WRITER = 'while true; do dd if=/dev/urandom of=/root/writer bs=64k count=16 conv=notrunc 2>/dev/null; sleep 0.05; done';

interface CryoRun { total: number; pause: number; precopy: number; push: number; index: number; bytesPushed: number; layerBytes: number; passes: number }
interface PlainRun { total: number; commit: number; push: number; layerBytes: number }

/** A data file: random and text-like halves, unique per round. */
function dataFile(dir: string, mb: number, round: number): string {
  const path = join(dir, `data-${mb}-${round}.bin`);
  const fd = openSync(path, 'w');
  try {
    const half = Math.floor((mb * 1024 * 1024) / 2);
    for (let done = 0; done < half; done += 1 << 20) writeSync(fd, randomBytes(Math.min(1 << 20, half - done)));
    let text = 0;
    let line = 0;
    while (text < half) {
      const chunk: string[] = [];
      for (let i = 0; i < 10_000; i++, line++) {
        chunk.push(`${round}-${line} GET /api/v1/items/${(line * 7919) % 100_003} 200 ${(line * 13) % 5000}ms user=${line % 977} trace=${(line * 2654435761) % 4294967296}\n`);
      }
      const buf = Buffer.from(chunk.join('')).subarray(0, half - text);
      writeSync(fd, buf);
      text += buf.length;
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

// A busy shared machine can starve the executor's heartbeats for seconds; a lost executor would fail the round.
const cluster = await startCluster({ hosts: [{ name: 'A' }], heartbeatTimeoutSecs: 60, logLevel: 'info' });
const work = mkdtempSync('/var/tmp/cryo-bench-snapshot-');
try {
  const engine = cluster.engines.get('A');
  const registry = cluster.registry;
  if (engine === undefined || registry === undefined) throw new Error('cluster incomplete');
  importBusybox(engine.host, 'busybox:local');
  const dockerConfig = mkdtempSync(join(cluster.dir, 'docker-config-'));
  const cli = (args: string[], input?: string): string => execFileSync(DOCKER_BIN, ['-H', engine.host, '--config', dockerConfig, ...args],
    { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  cli(['login', '-u', cluster.registryUser, '--password-stdin', registry.host], cluster.registryPassword);
  const registryClient = await connectRegistry(registry.host, {
    snapshot_registry: { url: registry.host, repository: 'cryo/snapshots', username: cluster.registryUser, password: cluster.registryPassword, insecure: true },
  });
  const lastLayerBytes = async (ref: string): Promise<number> => {
    const parsed = parseImageReference(ref);
    const manifest = await registryClient.getImageManifest(parsed.repository, parsed.digest ?? parsed.tag ?? 'latest');
    return manifest.json.layers[manifest.json.layers.length - 1]?.size ?? NaN;
  };
  const api = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    try {
      return (await cluster.api(method, path, body)).body as Record<string, unknown>;
    } catch (err) {
      // A kept-alive connection the server closes as a GET reuses it (after a long idle, e.g.
      // writing 1 GB): the GET is retried once on a new connection.
      if (method !== 'GET') throw err;
      return (await cluster.api(method, path, body)).body as Record<string, unknown>;
    }
  };
  const exec = async (sandboxId: string, script: string): Promise<void> => {
    const res = await api('POST', `${NS}/sandboxes/${sandboxId}/exec`, { command: ['sh', '-c', script], timeout_secs: 600 });
    if (res.exit_code !== 0) throw new Error(`exec ${script}: ${JSON.stringify(res)}`);
  };
  const newSandbox = async (): Promise<string> => {
    const created = await api('POST', `${NS}/sandboxes`, { image: 'busybox:local', command: ['sh'] });
    const id = String(created.sandbox_id);
    await waitFor('sandbox running', async () => ((await api('GET', `${NS}/sandboxes/${id}`)).status === 'running' ? true : undefined), 120_000);
    return id;
  };
  const cryoSnapshot = async (sandboxId: string): Promise<{ total: number; body: Record<string, unknown> }> => {
    await api('GET', `${NS}/sandboxes/${sandboxId}`); // a fresh connection for the POST (not timed)
    const t0 = performance.now();
    const snap = await api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 0 });
    const snapshotId = String(snap.snapshot_id);
    const body = await waitFor('snapshot active', async () => {
      const s = await api('GET', `${NS}/snapshots/${snapshotId}`);
      return s.status === 'active' || s.status === 'failed' ? s : undefined;
    }, 900_000, 20);
    if (body.status === 'failed') throw new Error(`snapshot failed: ${String(body.error)}`);
    return { total: performance.now() - t0, body };
  };

  // Warm-up, not measured: the base image's layer reaches the registry once for each side.
  const warm = await newSandbox();
  await cryoSnapshot(warm);
  cli(['commit', `cryo-${warm}`, `${registry.host}/plain/snapshots:warm`]);
  cli(['push', `${registry.host}/plain/snapshots:warm`]);

  const load = [loadavg()[0] ?? NaN];
  const results: Array<{ mb: number; writer: boolean; cryo: CryoRun[]; plain: PlainRun[] }> = [];
  for (const mb of sizesMb) {
    for (const writer of [false, true]) {
      const cryo: CryoRun[] = [];
      const plain: PlainRun[] = [];
      for (let round = 0; round < rounds; round++) {
        const sandbox = await newSandbox();
        const twin = `bench-twin-${mb}-${writer ? 'w' : 'n'}-${round}`;
        cli(['run', '-d', '--name', twin, '--network', 'none', 'busybox:local', 'sleep', '100000']);
        const file = dataFile(work, mb, round + (writer ? 1000 : 0));
        cli(['cp', file, `cryo-${sandbox}:/root/data.bin`]);
        cli(['cp', file, `${twin}:/root/data.bin`]);
        rmSync(file);
        execFileSync('sync');
        if (writer) {
          await exec(sandbox, `(${WRITER}) > /dev/null 2>&1 &`);
          cli(['exec', '-d', twin, 'sh', '-c', WRITER]);
        }

        const { total, body } = await cryoSnapshot(sandbox);
        const timings = body.timings as Record<string, number | null>;
        const capture = body.capture as { bytes_pushed: number | null; passes: unknown[] };
        cryo.push({
          total, pause: timings.pause_ms ?? NaN, precopy: timings.precopy_ms ?? NaN, push: timings.push_ms ?? NaN, index: timings.index_ms ?? NaN,
          bytesPushed: capture.bytes_pushed ?? NaN, layerBytes: await lastLayerBytes(String(body.image_ref)), passes: capture.passes.length,
        });

        const ref = `${registry.host}/plain/snapshots:${twin}`;
        const p0 = performance.now();
        cli(['commit', twin, ref]);
        const p1 = performance.now();
        cli(['push', ref]);
        const p2 = performance.now();
        plain.push({ total: p2 - p0, commit: p1 - p0, push: p2 - p1, layerBytes: await lastLayerBytes(ref) });
        console.error(`${mb} MB${writer ? ' + writer' : ''} round ${round + 1}/${rounds}: cryo ${total.toFixed(0)} ms (pause ${timings.pause_ms} ms), plain ${(p2 - p0).toFixed(0)} ms (commit ${(p1 - p0).toFixed(0)} ms)`);

        // Clean up as we go: 1 GB diffs add up (containers, copies, images).
        await api('DELETE', `${NS}/snapshots/${String(body.snapshot_id)}`);
        await api('DELETE', `${NS}/sandboxes/${sandbox}`);
        cli(['rm', '-f', twin]);
        cli(['rmi', ref]);
        load.push(loadavg()[0] ?? NaN);
      }
      results.push({ mb, writer, cryo, plain });
      const ratio = median(cryo.map((r) => r.total)) / median(plain.map((r) => r.total));
      printTable(`${mb} MB diff${writer ? ', writer running' : ''}: medians of ${rounds}`, [
        ['cryo pause window (pause_ms)', `${median(cryo.map((r) => r.pause)).toFixed(0)} ms`],
        ['cryo pre-copy passes (precopy_ms)', `${median(cryo.map((r) => r.precopy)).toFixed(0)} ms`],
        ['cryo push (push_ms) / index (index_ms)', `${median(cryo.map((r) => r.push)).toFixed(0)} ms / ${median(cryo.map((r) => r.index)).toFixed(0)} ms`],
        ['cryo API call -> active', `${median(cryo.map((r) => r.total)).toFixed(0)} ms`],
        ['docker commit (its pause window)', `${median(plain.map((r) => r.commit)).toFixed(0)} ms`],
        ['docker commit + docker push', `${median(plain.map((r) => r.total)).toFixed(0)} ms`],
        ['ratio cryo / plain, end to end', ratio.toFixed(2)],
        ['new layer, compressed: cryo / docker', `${(median(cryo.map((r) => r.layerBytes)) / 1e6).toFixed(1)} MB / ${(median(plain.map((r) => r.layerBytes)) / 1e6).toFixed(1)} MB`],
        ['cryo bytes pushed (layer, config, manifest)', `${(median(cryo.map((r) => r.bytesPushed)) / 1e6).toFixed(1)} MB`],
      ]);
    }
  }
  console.log(`\nload average (1 min) during the run: ${load.map((l) => l.toFixed(1)).join(', ')}`);
  writeResult('snapshot', { rounds, sizes_mb: sizesMb, load, results });
  await registryClient.close();
} finally {
  rmSync(work, { recursive: true, force: true });
  await cluster.stop();
  await killAll();
}
