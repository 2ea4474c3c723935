/**
 * Issue 13 end to end: a real PostgreSQL (Debian's package, started here), two server replicas
 * started at the same moment on the empty database, two executors with both replicas in
 * server_urls, and a real registry. Replica 1 is killed (-9) while a snapshot's push runs: the
 * snapshot still ends active and restores through replica 2. Then the elected replica is killed:
 * expiries go on on the other one, each manifest deleted exactly once (counted in the registry's
 * access log).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../apps/server/src/db/migrations';
import { startPostgres, type TestPostgres } from '../apps/server/src/testing/postgres';
import { obj, type Obj } from './support/api';
import { startCluster, type Cluster } from './support/cluster';
import { importBusybox } from './support/images';
import { killAll, waitFor } from './support/processes';

const NS = '/v1/namespaces/replicas';
const HEARTBEAT_TIMEOUT_SECS = 6;
let postgres: TestPostgres;
let cluster: Cluster;

beforeAll(async () => {
  postgres = await startPostgres({ settings: { synchronous_commit: 'off' } });
  cluster = await startCluster({
    hosts: [{ name: 'A' }, { name: 'B' }],
    replicas: 2,
    // The password comes from the environment, as an operator would write it.
    database: `postgres://${postgres.user}:\${CRYO_TEST_DB_PASSWORD}@127.0.0.1:${postgres.port}/${postgres.database}`,
    serverEnv: { CRYO_TEST_DB_PASSWORD: postgres.password },
    heartbeatTimeoutSecs: HEARTBEAT_TIMEOUT_SECS,
    serverConfig: 'snapshots:\n  reaper_interval_secs: 1\n  delete_retry_base_secs: 1\n  delete_retry_max_secs: 2\n',
  });
  for (const name of ['A', 'B']) {
    const engine = cluster.engines.get(name);
    if (engine === undefined) throw new Error(`engine ${name} expected`);
    importBusybox(engine.host, 'busybox:local');
  }
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await killAll();
  await postgres?.stop();
});

async function at(replica: number, method: string, path: string, body?: unknown): Promise<Obj> {
  const res = await cluster.apiAt(replica, method, `${NS}${path}`, body);
  if (res.status >= 300) throw new Error(`${method} ${path} via replica ${replica} answered ${res.status}: ${JSON.stringify(res.body)}`);
  return obj(res.body);
}

async function running(replica: number, executorId: string): Promise<string> {
  const created = await at(replica, 'POST', '/sandboxes', { image: 'busybox:local', command: ['sleep', '100000'], executor_id: executorId });
  const id = String(created.sandbox_id);
  await waitFor(`sandbox ${id} running`, async () => ((await at(replica, 'GET', `/sandboxes/${id}`)).status === 'running' ? true : undefined), 120_000);
  return id;
}

function waitSnapshot(replica: number, id: string, done: (s: Obj) => boolean, what: string, timeoutMs = 180_000): Promise<Obj> {
  return waitFor(`snapshot ${id} ${what}`, async () => {
    const s = await at(replica, 'GET', `/snapshots/${id}`);
    return done(s) ? s : undefined;
  }, timeoutMs, 100);
}

/**
 * Manifest DELETEs the registry carried out for a digest, from its access log. A 401 is the
 * authentication challenge before the same request is sent again with credentials: not a delete.
 */
function registryDeletes(digest: string): number {
  const lines = cluster.registry?.logs().split('\n') ?? [];
  const request = `"DELETE /v2/cryo/snapshots/manifests/${digest} HTTP/1.1" `;
  return lines.filter((l) => l.includes(request) && !l.includes(`${request}401 `)).length;
}

async function leaseHolder(): Promise<string | undefined> {
  const rows = await postgres.query<{ holder: string; expires_at: number }>("SELECT holder, expires_at FROM leases WHERE name = 'duties'");
  const row = rows[0];
  return row !== undefined && Number(row.expires_at) > Date.now() ? row.holder : undefined;
}

/** The replica index whose process holds the duties lease (holders are host-pid-random). */
async function leaderIndex(): Promise<number> {
  return waitFor('an elected leader', async () => {
    const holder = await leaseHolder();
    if (holder === undefined) return undefined;
    const index = cluster.servers.findIndex((s) => s.child.exitCode === null && s.child.signalCode === null && holder.includes(`-${s.child.pid}-`));
    return index >= 0 ? index : undefined;
  }, 30_000, 100);
}

describe('PostgreSQL with two replicas', () => {
  it('applied the migrations once although both replicas started at the same moment on an empty database', async () => {
    const versions = await postgres.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
    expect(versions.map((v) => v.version)).toEqual(MIGRATIONS.map((m) => m.version));
    const applied = cluster.logs().split('\n').filter((l) => l.includes('"database migration applied"'));
    expect(applied).toHaveLength(MIGRATIONS.length);
    // Both replicas answer every call, and the password is in no log.
    expect((await cluster.apiAt(0, 'GET', '/v1/executors')).status).toBe(200);
    expect((await cluster.apiAt(1, 'GET', '/v1/executors')).status).toBe(200);
    expect(cluster.logs()).not.toContain(postgres.password);
    expect(cluster.logs()).toContain(`postgres://cryo:***@127.0.0.1:${postgres.port}/cryo`);
  });

  it('finishes a snapshot whose replica was killed during the push, and restores it through the other', async () => {
    const sandboxId = await running(0, 'A');
    // 64 MiB of random data: a push that takes long enough to kill a replica in the middle of it.
    const filled = await at(0, 'POST', `/sandboxes/${sandboxId}/exec`, {
      command: ['sh', '-c', 'dd if=/dev/urandom of=/payload bs=1048576 count=64 2>/dev/null && md5sum /payload'],
      timeout_secs: 120,
    });
    expect(filled.exit_code).toBe(0);
    const md5 = String(filled.stdout).split(' ')[0];

    const snap = await at(0, 'POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3600 });
    const snapshotId = String(snap.snapshot_id);
    // Replica 2 sees the progress replica 1 recorded: the push is under way.
    await waitSnapshot(1, snapshotId, (s) => obj(s.progress).phase === 'push' && Number(obj(s.progress).bytes_done) > 0, 'pushing');
    await cluster.servers[0]?.kill('SIGKILL');

    const active = await waitSnapshot(1, snapshotId, (s) => s.status !== 'creating', 'done');
    expect(active.status, JSON.stringify(active)).toBe('active');
    expect(String(active.digest)).toMatch(/^sha256:[0-9a-f]{64}$/);
    const executorLog = cluster.logs();
    expect(executorLog).toContain('cryo server replica not answering; moving to the next');

    const restored = await at(1, 'POST', `/snapshots/${snapshotId}/restore`, { executor_id: 'B' });
    const restoredId = String(restored.sandbox_id);
    await waitFor(`restored ${restoredId} running`, async () => ((await at(1, 'GET', `/sandboxes/${restoredId}`)).status === 'running' ? true : undefined), 180_000);
    const check = await at(1, 'POST', `/sandboxes/${restoredId}/exec`, { command: ['md5sum', '/payload'], timeout_secs: 60 });
    expect(String(check.stdout).split(' ')[0]).toBe(md5);
    // The source sandbox kept running through all of it.
    expect((await at(1, 'GET', `/sandboxes/${sandboxId}`)).status).toBe('running');
  });

  it('keeps expiring snapshots after the elected replica is killed, each manifest deleted exactly once', async () => {
    await cluster.startReplica(0); // two replicas again
    const sandboxId = await running(1, 'B');
    const ttls = [20, 45, 50, 55];
    const snapshots: Array<{ id: string; digest: string }> = [];
    for (const ttl of ttls) {
      const snap = await at(1, 'POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: ttl });
      const done = await waitSnapshot(1, String(snap.snapshot_id), (s) => s.status !== 'creating', 'active');
      expect(done.status).toBe('active');
      snapshots.push({ id: String(done.snapshot_id), digest: String(done.digest) });
    }
    const [first, ...later] = snapshots;
    if (first === undefined) throw new Error('snapshots expected');

    // The first expiry happens on the leader as it is.
    const leader = await leaderIndex();
    await waitSnapshot(1 - leader, first.id, (s) => s.status === 'expired', 'expired', 90_000);
    expect(registryDeletes(first.digest)).toBe(1);

    // Kill the leader; the other replica takes the lease within one heartbeat timeout.
    const killedAt = Date.now();
    await cluster.servers[leader]?.kill('SIGKILL');
    const survivor = 1 - leader;
    expect(await leaderIndex()).toBe(survivor);
    expect(Date.now() - killedAt).toBeLessThan((HEARTBEAT_TIMEOUT_SECS + 1) * 1000);

    for (const s of later) {
      const expired = await waitSnapshot(survivor, s.id, (x) => x.status === 'expired', 'expired', 120_000);
      expect(expired.status).toBe('expired');
    }
    // Let a few more reaper passes run: nothing is deleted again.
    await new Promise((r) => setTimeout(r, 3000));
    for (const s of snapshots) expect(registryDeletes(s.digest), s.digest).toBe(1);
    const records = await postgres.query<{ snapshot_id: string }>('SELECT snapshot_id FROM reaper_records');
    for (const s of snapshots) expect(records.filter((r) => r.snapshot_id === s.id)).toHaveLength(1);
  });
});
