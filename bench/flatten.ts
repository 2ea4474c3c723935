/**
 * Issue 8 item 2 benchmark: what flattening costs. The same sandbox (same image, same diff)
 * snapshotted normally and flattened, for both drivers, and next to the hand-rolled flatten
 * (`docker export` | `docker import` + `docker push`) of the same container, in the same run.
 *
 * The image: Debian bookworm with python3 (the cached debootstrap tarball, 267 MB) plus 99 small
 * layers: 100 layers, so a snapshot has 101. Host A keeps snapshots.max_layers 124 (a normal
 * snapshot), host B has 100 (the snapshot is flattened). Each round writes a fresh diff first
 * (python3: a 20 MB file and 500 files of 4 KiB), so no layer is "already there".
 * Bytes pushed = bytes the registry stores new for the snapshot (blobs and manifests), read from
 * its storage directory before and after.
 *
 *   npm run bench -- flatten        (or: npx tsx bench/flatten.ts [rounds])
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { debianRootfsTar } from '../libs/clip/src/testing/debian';
import { startCluster, type Cluster } from '../test/support/cluster';
import { DOCKER_BIN } from '../test/support/dockerd';
import { pushLayeredImage } from '../test/support/layered-image';
import { killAll, waitFor } from '../test/support/processes';
import { median, printTable, writeResult } from './report';

const rounds = Number(process.argv[2] ?? 3);
const LAYERS = 100;
const NS = '/v1/namespaces/bench';
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const DIFF = 'import os,shutil\nshutil.rmtree("/work",True)\nos.makedirs("/work")\n'
  + 'open("/work/blob","wb").write(os.urandom(20<<20))\n'
  + '[open(f"/work/f{i}","wb").write(os.urandom(4096)) for i in range(500)]\n';

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => v as Obj;

interface Run {
  what: string;
  total_ms: number;
  pause_ms: number | null;
  commit_ms: number | null;
  flatten_ms: number | null;
  push_ms: number | null;
  pushed_bytes: number;
  layers: number | null;
  flattened: boolean | null;
  load1: number;
}

/** Bytes of every blob (layers, configs, manifests) the registry stores. */
function storedBytes(cluster: Cluster): number {
  const root = join(cluster.registry?.dir ?? '', 'data', 'docker', 'registry', 'v2', 'blobs');
  let total = 0;
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name === 'data') total += statSync(join(dir, e.name)).size;
    }
  };
  walk(root);
  return total;
}

async function running(cluster: Cluster, id: string): Promise<void> {
  await waitFor(`sandbox ${id} running`, async () => {
    const body = obj((await cluster.api('GET', `${NS}/sandboxes/${id}`)).body);
    if (body.status === 'terminated') throw new Error(`sandbox ${id} ended: ${JSON.stringify(body.outcome)}`);
    return body.status === 'running' ? true : undefined;
  }, 900_000, 200);
}

async function writeDiff(cluster: Cluster, id: string): Promise<void> {
  const res = await cluster.api('POST', `${NS}/sandboxes/${id}/exec`, { command: ['python3', '-c', DIFF], timeout_secs: 300 });
  if (obj(res.body).exit_code !== 0) throw new Error(`diff on ${id}: ${JSON.stringify(res.body)}`);
}

async function snapshot(cluster: Cluster, sandbox: string, what: string): Promise<Run & { snapshot_id: string }> {
  const before = storedBytes(cluster);
  const t0 = performance.now();
  const res = await cluster.api('POST', `${NS}/sandboxes/${sandbox}/snapshots`, { ttl_secs: 0 });
  const id = String(obj(res.body).snapshot_id);
  const done = await waitFor(`snapshot ${id}`, async () => {
    const body = obj((await cluster.api('GET', `${NS}/snapshots/${id}`)).body);
    if (body.status === 'failed') throw new Error(String(body.error));
    return body.status === 'active' ? body : undefined;
  }, 900_000, 20);
  const total = performance.now() - t0;
  const t = obj(done.timings);
  const num = (v: unknown): number | null => (typeof v === 'number' ? v : null);
  const run = {
    what, snapshot_id: id, total_ms: total, pause_ms: num(t.pause_ms), commit_ms: num(t.commit_ms), flatten_ms: num(t.flatten_ms), push_ms: num(t.push_ms),
    pushed_bytes: storedBytes(cluster) - before, layers: num(done.layers), flattened: done.flattened === true, load1: loadavg()[0] ?? NaN,
  };
  console.error(`${what}: ${(total / 1000).toFixed(1)} s, flatten ${run.flatten_ms ?? '-'} ms, pushed ${mb(run.pushed_bytes)}, layers ${run.layers}, load ${run.load1.toFixed(1)}`);
  return run;
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

const cluster = await startCluster({
  hosts: [{ name: 'A', snapshots: { max_layers: 124 } }, { name: 'B', snapshots: { max_layers: LAYERS } }],
  heartbeatTimeoutSecs: 60,
  logLevel: 'info',
});
const runs: Run[] = [];
try {
  const registryHost = cluster.registryHost ?? '';
  const image = `${registryHost}/bench/layered-debian:${LAYERS}`;
  const credentials = { username: cluster.registryUser, password: cluster.registryPassword };
  await pushLayeredImage(image, LAYERS, { credentials, baseTar: debianRootfsTar(), env: [PATH_ENV] });
  console.error(`pushed ${image}: ${LAYERS} layers, registry holds ${mb(storedBytes(cluster))}`);

  const sandboxes: Record<string, string> = {};
  for (const host of ['A', 'B']) {
    const res = await cluster.api('POST', `${NS}/sandboxes`, { image, command: ['sleep', 'infinity'], executor_id: host });
    sandboxes[host] = String(obj(res.body).sandbox_id);
  }
  for (const id of Object.values(sandboxes)) await running(cluster, id);

  // The hand-rolled flatten of the same container: export its filesystem, import it as one layer, push.
  const engineB = cluster.engines.get('B');
  if (engineB === undefined) throw new Error('no engine B');
  const dockerConfig = mkdtempSync(join(cluster.dir, 'docker-config-'));
  const cli = (args: string[], input?: string): string => execFileSync(DOCKER_BIN, ['-H', engineB.host, '--config', dockerConfig, ...args],
    { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
  cli(['login', '-u', credentials.username, '--password-stdin', registryHost], credentials.password);
  const exportImport = (round: number): Run => {
    const before = storedBytes(cluster);
    const ref = `${registryHost}/plain/flat:round-${round}`;
    const t0 = performance.now();
    execFileSync('sh', ['-c', `"${DOCKER_BIN}" -H "${engineB.host}" export cryo-${sandboxes.B} | "${DOCKER_BIN}" -H "${engineB.host}" import -c 'ENV ${PATH_ENV}' - ${ref}`], { stdio: 'pipe' });
    cli(['push', ref]);
    const total = performance.now() - t0;
    const run = { what: 'docker export | docker import + docker push', total_ms: total, pause_ms: null, commit_ms: null, flatten_ms: null, push_ms: null,
      pushed_bytes: storedBytes(cluster) - before, layers: 1, flattened: null, load1: loadavg()[0] ?? NaN };
    console.error(`${run.what}: ${(total / 1000).toFixed(1)} s, pushed ${mb(run.pushed_bytes)}, load ${run.load1.toFixed(1)}`);
    return run;
  };

  let lastNormal = '';
  for (let round = 0; round < rounds; round++) {
    for (const host of ['A', 'B']) {
      const id = sandboxes[host] ?? '';
      await writeDiff(cluster, id);
      const run = await snapshot(cluster, id, host === 'A' ? 'docker: normal snapshot (101 layers)' : 'docker: flattened snapshot (101 -> 1 layer)');
      if (host === 'A') lastNormal = run.snapshot_id;
      runs.push(run);
    }
    await writeDiff(cluster, sandboxes.B ?? '');
    runs.push(exportImport(round));
  }

  // runc-lazy: lazy sandboxes of the normal 101-layer snapshot on A (stays normal) and B (flattens).
  await waitFor('clip index', async () => (obj((await cluster.api('GET', `${NS}/snapshots/${lastNormal}`)).body).clip_index_ref !== null ? true : undefined), 900_000);
  const lazy: Record<string, string> = {};
  for (const host of ['A', 'B']) {
    const res = await cluster.api('POST', `${NS}/snapshots/${lastNormal}/restore`, { executor_id: host, mode: 'lazy', command: ['sleep', 'infinity'] });
    lazy[host] = String(obj(res.body).sandbox_id);
    await running(cluster, lazy[host] ?? '');
  }
  for (let round = 0; round < rounds; round++) {
    for (const host of ['A', 'B']) {
      const id = lazy[host] ?? '';
      await writeDiff(cluster, id);
      runs.push(await snapshot(cluster, id, host === 'A' ? 'runc-lazy: normal snapshot (102 layers)' : 'runc-lazy: flattened snapshot (102 -> 1 layer)'));
    }
  }

  const kinds = [...new Set(runs.map((r) => r.what))];
  const ms = (v: number): string => (Number.isNaN(v) ? '-' : `${(v / 1000).toFixed(2)} s`);
  const med = (what: string, key: 'total_ms' | 'pause_ms' | 'flatten_ms' | 'push_ms' | 'pushed_bytes' | 'load1'): number =>
    median(runs.filter((r) => r.what === what).map((r) => r[key] ?? NaN).filter((v) => !Number.isNaN(v)));
  printTable(`Snapshot of a sandbox of a ${LAYERS}-layer Debian+python3 image with a fresh 22 MB diff, median of ${rounds} rounds`, [
    ['', 'API -> active', 'pause', 'flatten', 'push', 'pushed', 'load'],
    ...kinds.map((k) => [k, ms(med(k, 'total_ms')), ms(med(k, 'pause_ms')), ms(med(k, 'flatten_ms')), ms(med(k, 'push_ms')), mb(med(k, 'pushed_bytes')), med(k, 'load1').toFixed(1)]),
  ]);
  // Where a flatten's time goes, from the executors' logs.
  const phases = { docker: [] as Obj[], lazy: [] as Obj[] };
  for (const line of cluster.logs().split('\n')) {
    if (!line.startsWith('{')) continue;
    const entry = obj(JSON.parse(line));
    if (entry.msg === 'snapshot image flattened') phases.docker.push(entry);
    if (entry.msg === 'lazy snapshot pushed' && entry.flattened !== undefined) phases.lazy.push(obj(obj(entry.flattened).phases));
  }
  const phase = (list: Obj[], key: string): string => ms(median(list.map((p) => (typeof p[key] === 'number' ? p[key] : NaN)).filter((v) => !Number.isNaN(v))));
  printTable('Where a flatten goes (medians)', [
    ['docker: docker save + spool + parse (read_ms)', phase(phases.docker, 'read_ms')],
    ['docker: merge streamed into docker load (load_ms)', phase(phases.docker, 'load_ms')],
    ['runc-lazy: layers from the registry, spooled (read_ms)', phase(phases.lazy, 'read_ms')],
    ['runc-lazy: merge + gzip to disk (merge_ms)', phase(phases.lazy, 'merge_ms')],
  ]);
  writeResult('flatten', { rounds, layers: LAYERS, runs, phases });
} finally {
  await cluster.stop();
  await killAll();
}
