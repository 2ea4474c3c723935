/**
 * Issue 2 benchmark: cryo's end-to-end snapshot (API call -> snapshot active, pushed) and its
 * pause window, next to the hand-rolled alternative `docker commit` + `docker push` of the same
 * container, in the same run, against the same registry. Each round writes a fresh ~100 MB of
 * random data first, so no layer is ever "already there" for either side.
 *
 *   npm run bench -- snapshot        (or: npx tsx bench/snapshot.ts [rounds])
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster } from '../test/support/cluster';
import { importBusybox } from '../test/support/images';
import { DOCKER_BIN } from '../test/support/dockerd';
import { waitFor, killAll } from '../test/support/processes';
import { printTable, median, writeResult } from './report';

const rounds = Number(process.argv[2] ?? 3);
const DIFF_MB = 100;
const NS = '/v1/namespaces/bench';

const cluster = await startCluster({ hosts: [{ name: 'A' }] });
try {
  const engine = cluster.engines.get('A');
  const registry = cluster.registry;
  if (engine === undefined || registry === undefined) throw new Error('cluster incomplete');
  importBusybox(engine.host, 'busybox:local');
  const dockerConfig = mkdtempSync(join(cluster.dir, 'docker-config-'));
  const cli = (args: string[], input?: string): string => execFileSync(DOCKER_BIN, ['-H', engine.host, '--config', dockerConfig, ...args],
    { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  cli(['login', '-u', cluster.registryUser, '--password-stdin', registry.host], cluster.registryPassword);

  const created = await cluster.api('POST', `${NS}/sandboxes`, { image: 'busybox:local', command: ['sh'] });
  const sandboxId = String((created.body as { sandbox_id: string }).sandbox_id);
  await waitFor('sandbox running', async () => ((await cluster.api('GET', `${NS}/sandboxes/${sandboxId}`)).body as { status: string }).status === 'running' ? true : undefined);
  const freshDiff = async (round: number): Promise<void> => {
    const res = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/exec`, {
      command: ['sh', '-c', `rm -f /data/blob-*; dd if=/dev/urandom of=/data/blob-${round} bs=1M count=${DIFF_MB} 2>/dev/null; sync`],
      timeout_secs: 120,
    });
    if ((res.body as { exit_code: number }).exit_code !== 0) throw new Error(`could not write the diff: ${JSON.stringify(res.body)}`);
  };

  const cryoRuns: Array<{ total: number; pause: number; commit: number; push: number }> = [];
  const plainRuns: Array<{ total: number; commit: number; push: number }> = [];
  for (let round = 0; round < rounds; round++) {
    await freshDiff(round * 2);
    const t0 = performance.now();
    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 0 });
    const snapshotId = String((snap.body as { snapshot_id: string }).snapshot_id);
    const done = await waitFor('snapshot active', async () => {
      const body = (await cluster.api('GET', `${NS}/snapshots/${snapshotId}`)).body as { status: string; error: string | null; timings: Record<string, number> };
      if (body.status === 'failed') throw new Error(body.error ?? 'failed');
      return body.status === 'active' ? body : undefined;
    }, 300_000, 20);
    const total = performance.now() - t0;
    cryoRuns.push({ total, pause: done.timings.pause_ms ?? NaN, commit: done.timings.commit_ms ?? NaN, push: done.timings.push_ms ?? NaN });

    await freshDiff(round * 2 + 1);
    const ref = `${registry.host}/plain/snapshots:round-${round}`;
    const p0 = performance.now();
    cli(['commit', `cryo-${sandboxId}`, ref]);
    const p1 = performance.now();
    cli(['push', ref]);
    const p2 = performance.now();
    plainRuns.push({ total: p2 - p0, commit: p1 - p0, push: p2 - p1 });
    console.error(`round ${round + 1}/${rounds}: cryo ${total.toFixed(0)} ms, plain ${(p2 - p0).toFixed(0)} ms`);
  }

  const cryoTotal = median(cryoRuns.map((r) => r.total));
  const plainTotal = median(plainRuns.map((r) => r.total));
  const pause = median(cryoRuns.map((r) => r.pause));
  const commit = median(cryoRuns.map((r) => r.commit));
  const rows = [
    ['cryo snapshot, API call -> active (pushed)', `${cryoTotal.toFixed(0)} ms`],
    ['  of which pause window (pause_ms)', `${pause.toFixed(0)} ms`],
    ['  of which commit (commit_ms)', `${commit.toFixed(0)} ms`],
    ['  of which push (push_ms)', `${median(cryoRuns.map((r) => r.push)).toFixed(0)} ms`],
    ['docker commit + docker push', `${plainTotal.toFixed(0)} ms`],
    ['  of which docker commit', `${median(plainRuns.map((r) => r.commit)).toFixed(0)} ms`],
    ['  of which docker push', `${median(plainRuns.map((r) => r.push)).toFixed(0)} ms`],
    ['ratio cryo / plain (target <= 1.2)', (cryoTotal / plainTotal).toFixed(2)],
    ['pause window / commit (target <= 1.0)', (pause / commit).toFixed(2)],
  ];
  printTable(`Snapshot of a container with a ${DIFF_MB} MB diff, median of ${rounds} rounds`, rows);
  writeResult('snapshot', { rounds, diff_mb: DIFF_MB, cryo: cryoRuns, plain: plainRuns, ratio: cryoTotal / plainTotal, pause_over_commit: pause / commit });
} finally {
  await cluster.stop();
  await killAll();
}
