/**
 * Issue 14 "done means", end to end: the real server and two real executors serving /metrics
 * (executor `metrics.listen`), a snapshot on A (pushed through a registry proxy, then indexed),
 * a lazy restore and an eager restore on B. Every named series is scraped before and after and
 * must have moved. A pending restore's `progress` is polled from the API (lazy) and followed by
 * the real CLI's --wait line (eager); the proxy holds the clip index back and slows the pull so
 * the phases last long enough to be seen.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execIn, obj, waitSandbox, waitSnapshot, type Obj } from './support/api';
import { startCluster, type Cluster } from './support/cluster';
import { dockerAsync, importBusybox } from './support/images';
import { sampleValue, scrapeMetrics } from './support/metrics';
import { freePort, killAll, REPO_ROOT, waitFor } from './support/processes';
import { startRegistryProxy, type RegistryProxy } from './support/registry-proxy';

const NS = '/v1/namespaces/metrics';
const BLOB_BYTES = 48 * 1024 * 1024;

let cluster: Cluster;
let proxy: RegistryProxy;
let baseImage: string;
const metricsUrl = new Map<string, string>();
/** While set: the clip index fetch is held back (ms), whole-blob GETs (docker pull) are slowed (bytes/s). */
let slow = { clipIndexMs: 0, pullBytesPerSec: 0 };

beforeAll(async () => {
  const ports = { A: await freePort(), B: await freePort() };
  for (const [host, port] of Object.entries(ports)) metricsUrl.set(host, `http://127.0.0.1:${port}/metrics`);
  cluster = await startCluster({
    hosts: Object.entries(ports).map(([name, port]) => ({ name, config: `metrics:\n  listen: "127.0.0.1:${port}"\n` })),
    heartbeatTimeoutSecs: 20,
    registryFront: async (registry) => {
      proxy = await startRegistryProxy(registry.host, {
        delayMs: (req) => (req.method === 'GET' && /\/manifests\/[^/]*\.clip$/.test(req.url ?? '') ? slow.clipIndexMs : 0),
        throttleBytesPerSec: (req) => (req.method === 'GET' && (req.url ?? '').includes('/blobs/sha256:') && req.headers.range === undefined ? slow.pullBytesPerSec : 0),
      });
      return proxy.host;
    },
  });
  const engineA = cluster.engines.get('A');
  const registryHost = cluster.registryHost;
  if (engineA === undefined || registryHost === undefined) throw new Error('cluster incomplete');
  baseImage = `${registryHost}/base/busybox:metrics`;
  importBusybox(engineA.host, baseImage);
  const dockerConfig = mkdtempSync(join(cluster.dir, 'docker-config-'));
  // Not execFileSync: the registry proxy answering the engine runs in this process.
  await dockerAsync(engineA.host, ['--config', dockerConfig, 'login', '-u', cluster.registryUser, '--password-stdin', registryHost], cluster.registryPassword);
  await dockerAsync(engineA.host, ['--config', dockerConfig, 'push', baseImage]);
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await proxy?.close();
  await killAll();
});

async function scrape(host: 'server' | 'A' | 'B'): Promise<string> {
  return scrapeMetrics(host === 'server' ? `${cluster.serverUrl}/metrics` : metricsUrl.get(host) ?? '');
}

/** A sample's value, 0 when the series does not exist yet (a counter before its first increment). */
const value = (text: string, name: string, labels: Record<string, string> = {}): number => sampleValue(text, name, labels) ?? 0;

/** Restores `snapshotId` on B and polls the sandbox until it runs; every progress seen on the way, in order. */
async function restoreWatching(snapshotId: string, mode: 'eager' | 'lazy'): Promise<{ sandboxId: string; seen: Obj[] }> {
  const restore = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: 'B', mode, command: ['sh'] });
  expect(restore.status, JSON.stringify(restore.body)).toBe(202);
  const sandboxId = String(obj(restore.body).sandbox_id);
  const seen: Obj[] = [];
  await waitFor(`${mode} restore ${sandboxId} running`, async () => {
    const sb = obj((await cluster.api('GET', `${NS}/sandboxes/${sandboxId}`)).body);
    if (sb.status === 'pending' && sb.progress !== null) {
      const p = obj(sb.progress);
      const last = seen[seen.length - 1];
      if (last === undefined || JSON.stringify(last) !== JSON.stringify(p)) seen.push(p);
    }
    if (sb.status === 'terminated') throw new Error(`restore ended: ${JSON.stringify(sb.outcome)}`);
    if (sb.status === 'running') {
      expect(sb.progress, 'no progress once running').toBeNull();
      return true;
    }
    return undefined;
  }, 180_000, 25);
  return { sandboxId, seen };
}

/** The real `cryo` CLI against the cluster (spawned, not spawnSync: the registry proxy runs in this process). */
function cryoCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'apps', 'cli', 'bin', 'cryo.js'), ...args], {
      env: { ...process.env, CRYO_SERVER: cluster.serverUrl, CRYO_API_KEY: cluster.apiKey, CRYO_NAMESPACE: 'metrics' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString('utf8'); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString('utf8'); });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe('metrics on the server and the executors, and restore progress', () => {
  it('executors serve their metrics on metrics.listen, with the process metrics', async () => {
    for (const host of ['A', 'B'] as const) {
      const text = await scrape(host);
      expect(value(text, 'process_cpu_seconds_total'), host).toBeGreaterThan(0);
      expect(value(text, 'process_resident_memory_bytes'), host).toBeGreaterThan(0);
      // Heartbeats reach the server every few seconds.
      const age = sampleValue(text, 'cryo_heartbeat_age_seconds');
      expect(age, host).toBeGreaterThanOrEqual(0);
      expect(age, host).toBeLessThan(10);
    }
  });

  it('a snapshot and a lazy and an eager restore move every named series; pending restores show their progress', async () => {
    const before = { server: await scrape('server'), A: await scrape('A'), B: await scrape('B') };

    const created = await cluster.api('POST', `${NS}/sandboxes`, {
      image: baseImage, executor_id: 'A',
      command: ['sh', '-c', `test -e /data/ready || { head -c ${BLOB_BYTES} /dev/urandom > /data/blob && touch /data/ready; }; sleep 3600`],
    });
    const source = String(obj(created.body).sandbox_id);
    await waitSandbox(cluster, NS, source, ['running']);
    await waitFor('the blob written', async () => ((await execIn(cluster, NS, source, ['test', '-e', '/data/ready'])).exit_code === 0 ? true : undefined), 120_000, 500);
    const sum = async (sandboxId: string, cmd: string): Promise<string> => {
      const out = await execIn(cluster, NS, sandboxId, ['sh', '-c', `${cmd} | md5sum`]);
      expect(out.exit_code, String(out.stderr)).toBe(0);
      return String(out.stdout).split(' ')[0] ?? '';
    };
    const head = await sum(source, 'head -c 8388608 /data/blob');
    const tail = await sum(source, 'tail -c 1048576 /data/blob');

    const snap = await cluster.api('POST', `${NS}/sandboxes/${source}/snapshots`, {});
    const snapshotId = String(obj(snap.body).snapshot_id);
    const indexed = await waitSnapshot(cluster, NS, snapshotId, (s) => s.clip_index_ref !== null || s.clip_error !== null || s.status === 'failed', 'indexed');
    expect(indexed.clip_error).toBeNull();
    // The default method on these overlay2 engines: copied while running, indexed as it was pushed
    // (no build_index operation), so its phases are pause, precopy, push and index.
    expect(obj(indexed.capture).method).toBe('precopy');

    // Lazy on B: the clip index arrives 1.5 s late, so the pending sandbox shows fetch-index.
    slow = { clipIndexMs: 1500, pullBytesPerSec: 0 };
    const lazy = await restoreWatching(snapshotId, 'lazy');
    slow = { clipIndexMs: 0, pullBytesPerSec: 0 };
    const lazyPhases = lazy.seen.map((p) => p.phase);
    expect(lazyPhases, JSON.stringify(lazy.seen)).toContain('fetch-index');
    expect(lazyPhases.every((p) => ['fetch-index', 'mount', 'start'].includes(String(p))), JSON.stringify(lazy.seen)).toBe(true);
    // Its first exec reads 8 MiB through the mount: range GETs, inflates, spans cached on disk.
    expect(await sum(lazy.sandboxId, 'head -c 8388608 /data/blob')).toBe(head);

    // Eager on B through the real CLI's --wait: the pull (48 MiB of random data at 16 MiB/s) shows its bytes
    // in the API, hence on the CLI's status line (a line per change: stderr is not a terminal).
    slow = { clipIndexMs: 0, pullBytesPerSec: 16 * 1024 * 1024 };
    const cli = await cryoCli(['snapshots', 'restore', snapshotId, '--mode', 'eager', '--executor', 'B', '--wait', '--', 'sh']);
    slow = { clipIndexMs: 0, pullBytesPerSec: 0 };
    expect(cli.code, cli.stderr).toBe(0);
    const eagerId = /sandbox (sbx-\S+) is running on B/.exec(cli.stdout)?.[1] ?? '';
    expect(eagerId, cli.stdout).not.toBe('');
    console.log(`metrics e2e: lazy restore progress seen ${JSON.stringify(lazy.seen)}; eager restore, the CLI's --wait lines:\n${cli.stderr}`);
    const pullLines = cli.stderr.split('\n').filter((l) => l.startsWith(`${eagerId} pending: pull `));
    expect(pullLines.some((l) => / \/ [\d.]+ MiB \(\d+%\)$/.test(l)), cli.stderr).toBe(true);
    // The bytes only go forward (a layer's extraction does not restart the count).
    const percents = pullLines.flatMap((l) => /\((\d+)%\)$/.exec(l)?.[1] ?? []).map(Number);
    expect(percents, cli.stderr).toEqual([...percents].sort((x, y) => x - y));
    expect(await sum(eagerId, 'tail -c 1048576 /data/blob')).toBe(tail);

    // The mounts publish their counts every 2 s: wait for B's range GETs to show.
    const afterB = await waitFor('B counts the lazy mount\'s range GETs', async () => {
      const text = await scrape('B');
      return value(text, 'clip_range_get_count') > value(before.B, 'clip_range_get_count') ? text : undefined;
    }, 30_000, 500);
    const after = { server: await scrape('server'), A: await scrape('A'), B: afterB };
    const grew = (host: keyof typeof after, name: string, labels: Record<string, string> = {}): void => {
      expect(value(after[host], name, labels), `${host} ${name} ${JSON.stringify(labels)}`).toBeGreaterThan(value(before[host], name, labels));
    };

    // Server: phases of the snapshot, restores to running by mode, operations by kind and outcome.
    for (const phase of ['pause', 'precopy', 'push', 'index']) grew('server', 'cryo_snapshot_phase_seconds_count', { phase });
    expect(value(after.server, 'cryo_snapshot_phase_seconds_count', { phase: 'commit' })).toBe(value(before.server, 'cryo_snapshot_phase_seconds_count', { phase: 'commit' }));
    grew('server', 'cryo_restore_to_running_seconds_count', { mode: 'lazy' });
    grew('server', 'cryo_restore_to_running_seconds_count', { mode: 'eager' });
    grew('server', 'cryo_operations_total', { kind: 'snapshot', outcome: 'done' });
    grew('server', 'cryo_operations_total', { kind: 'create_sandbox', outcome: 'done' });
    expect(value(after.server, 'cryo_executor_heartbeat_age_seconds', { executor_id: 'B', state: 'ready' })).toBeLessThan(10);

    // A took the snapshot and built its clip index while pushing it.
    for (const phase of ['pause', 'precopy', 'push', 'index']) grew('A', 'cryo_snapshot_phase_seconds_count', { phase });
    grew('A', 'clip_index_build_seconds_count');
    grew('A', 'clip_index_bytes_total');
    grew('A', 'cryo_executor_operations_total', { kind: 'snapshot', outcome: 'done' });

    // B restored lazily (range GETs, inflates, span cache) and eagerly (a pull: an image cache miss).
    grew('B', 'clip_range_get_count');
    grew('B', 'clip_range_get_bytes_total');
    grew('B', 'clip_inflate_seconds_total');
    grew('B', 'clip_first_exec_ms_count');
    grew('B', 'cryo_executor_restore_to_running_seconds_count', { mode: 'lazy' });
    grew('B', 'cryo_executor_restore_to_running_seconds_count', { mode: 'eager' });
    grew('B', 'cryo_executor_restore_to_first_exec_seconds_count', { mode: 'lazy' });
    grew('B', 'cryo_executor_restore_to_first_exec_seconds_count', { mode: 'eager' });
    grew('B', 'cryo_cache_misses_total', { tier: 'disk' });
    grew('B', 'cryo_cache_miss_bytes_total', { tier: 'disk' });
    grew('B', 'cryo_cache_misses_total', { tier: 'image' });
    grew('B', 'cryo_cache_miss_bytes_total', { tier: 'image' });
    grew('B', 'cryo_executor_operations_total', { kind: 'create_sandbox', outcome: 'done' });
    grew('B', 'cryo_executor_operations_total', { kind: 'exec', outcome: 'done' });
    // The span cache is measured by B's cache service every clip.cache.gc_interval_secs (10 s).
    await waitFor('B\'s span cache size', async () => (value(await scrape('B'), 'cryo_cache_size_bytes', { tier: 'disk' }) >= 8 * 1024 * 1024 ? true : undefined), 45_000, 1000);
    // 8 MiB of random data does not compress: at least that much came over the wire.
    expect(value(after.B, 'clip_range_get_bytes_total') - value(before.B, 'clip_range_get_bytes_total')).toBeGreaterThanOrEqual(8 * 1024 * 1024);
    // The range GETs B counted are the proxy's: every one it saw from a mount.
    const proxied = proxy.requests.filter((r) => r.range !== undefined && r.path.includes('/blobs/')).length;
    expect(value(after.B, 'clip_range_get_count') - value(before.B, 'clip_range_get_count')).toBeLessThanOrEqual(proxied);

    // A mount that ends keeps what it counted: the counters never go down.
    const rangeGets = value(after.B, 'clip_range_get_count');
    await cluster.api('DELETE', `${NS}/sandboxes/${lazy.sandboxId}`);
    await waitSandbox(cluster, NS, lazy.sandboxId, ['terminated']);
    await waitFor('the lazy mount gone', async () => (readFileSync('/proc/mounts', 'utf8').includes(lazy.sandboxId) ? undefined : true), 60_000);
    expect(value(await scrape('B'), 'clip_range_get_count')).toBeGreaterThanOrEqual(rangeGets);
  });
});
