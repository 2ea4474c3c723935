/**
 * Issue 3 end to end with the real registry: TTL expiry reaches the registry and the executor,
 * DELETE removes the manifest, and a DELETE while the registry is down waits and finishes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from './support/cluster';
import { importBusybox, docker } from './support/images';
import { killAll } from './support/processes';
import { obj, waitSandbox, waitSnapshot } from './support/api';

const NS = '/v1/namespaces/lifetime';
let cluster: Cluster;
let sandboxId = '';

const status = (id: string, wanted: (s: Record<string, unknown>) => boolean, what: string) => waitSnapshot(cluster, NS, id, wanted, what);

function manifestStatus(digest: string): Promise<number> {
  const auth = `Basic ${Buffer.from(`${cluster.registryUser}:${cluster.registryPassword}`).toString('base64')}`;
  return fetch(`${cluster.registry?.url}/v2/cryo/snapshots/manifests/${digest}`, {
    method: 'HEAD', headers: { authorization: auth, accept: 'application/vnd.docker.distribution.manifest.v2+json' },
  }).then((r) => r.status);
}

beforeAll(async () => {
  cluster = await startCluster({
    hosts: [{ name: 'A' }],
    // An open registry, as `npm start` runs one: pushes must work without any credentials too.
    openRegistry: true,
    serverConfig: 'snapshots:\n  reaper_interval_secs: 1\n  delete_retry_base_secs: 1\n  delete_retry_max_secs: 2\n',
  });
  const engine = cluster.engines.get('A');
  if (engine === undefined) throw new Error('engine expected');
  importBusybox(engine.host, 'busybox:local');
  const created = await cluster.api('POST', `${NS}/sandboxes`, { image: 'busybox:local', command: ['sh'], executor_id: 'A' });
  sandboxId = String(obj(created.body).sandbox_id);
  await waitSandbox(cluster, NS, sandboxId, ['running']);
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await killAll();
});

describe('snapshot lifetime', () => {
  it('expires a snapshot with ttl_secs 3: manifest gone from the registry, local image gone, restore 410', async () => {
    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3 });
    expect(snap.status).toBe(202);
    const id = String(obj(snap.body).snapshot_id);
    const active = await status(id, (s) => s.status !== 'creating', 'no longer creating');
    expect(active.status).toBe('active');
    const digest = String(active.digest);
    expect(await manifestStatus(digest)).toBe(200);
    const expired = await status(id, (s) => s.status === 'expired', 'expired');
    expect(typeof expired.expired_at).toBe('string');
    expect(await manifestStatus(digest)).toBe(404);
    const images = docker(cluster.engines.get('A')?.host ?? '', ['images', '--format', '{{.Repository}}:{{.Tag}}']);
    expect(images).not.toContain(id);
    const restore = await cluster.api('POST', `${NS}/snapshots/${id}/restore`, {});
    expect(restore.status).toBe(410);
    expect(String(obj(obj(restore.body).error).message)).toContain('expired');
    const listed = await cluster.api('GET', `${NS}/snapshots?status=expired`);
    expect((obj(listed.body).items as Array<{ snapshot_id: string }>).map((s) => s.snapshot_id)).toContain(id);
  });

  it('DELETE removes the manifest; while the registry is down it stays deleting with the error and finishes once it is back', async () => {
    const first = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3600 });
    const firstId = String(obj(first.body).snapshot_id);
    const firstActive = await status(firstId, (s) => s.status === 'active', 'active');
    expect((await cluster.api('DELETE', `${NS}/snapshots/${firstId}`)).status).toBe(202);
    await status(firstId, (s) => s.status === 'deleted', 'deleted');
    expect(await manifestStatus(String(firstActive.digest))).toBe(404);

    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 3600 });
    const id = String(obj(snap.body).snapshot_id);
    const active = await status(id, (s) => s.status === 'active', 'active');
    await cluster.registry?.stop();
    expect((await cluster.api('DELETE', `${NS}/snapshots/${id}`)).status).toBe(202);
    const deleting = await status(id, (s) => s.status === 'deleting' && s.error !== null, 'deleting with an error');
    expect(String(deleting.error)).toMatch(/unreachable/);
    await new Promise((r) => setTimeout(r, 3000));
    expect(obj((await cluster.api('GET', `${NS}/snapshots/${id}`)).body).status).toBe('deleting');
    await cluster.registry?.start();
    await status(id, (s) => s.status === 'deleted', 'deleted');
    expect(await manifestStatus(String(active.digest))).toBe(404);
    const metrics = await (await fetch(`${cluster.serverUrl}/metrics`)).text();
    expect(metrics).toMatch(/cryo_snapshots_expired_total\S* [1-9]/);
    expect(metrics).toMatch(/cryo_snapshots_deleted_total\S* [1-9]/);
  });
});
