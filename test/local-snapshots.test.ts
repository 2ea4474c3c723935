/** Issue 2: without a snapshot_registry, snapshots stay on the executor that made them. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from './support/cluster';
import { importBusybox, docker } from './support/images';
import { waitFor, killAll } from './support/processes';

const NS = '/v1/namespaces/local';
let cluster: Cluster;
interface Obj { [k: string]: unknown }
const obj = (v: unknown): Obj => v as Obj;

beforeAll(async () => {
  cluster = await startCluster({ hosts: [{ name: 'solo' }], registry: false });
  const engine = cluster.engines.get('solo');
  if (engine === undefined) throw new Error('engine expected');
  importBusybox(engine.host, 'busybox:local');
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await killAll();
});

async function status(path: string, wanted: string[]): Promise<Obj> {
  return waitFor(`${path} in ${wanted.join('|')}`, async () => {
    const body = obj((await cluster.api('GET', `${NS}${path}`)).body);
    return wanted.includes(String(body.status)) ? body : undefined;
  }, 120_000);
}

describe('snapshots without a registry', () => {
  it('snapshots and restores on the same host from the local image', async () => {
    const created = await cluster.api('POST', `${NS}/sandboxes`, { image: 'busybox:local', command: ['sh'] });
    expect(created.status).toBe(202);
    const sandboxId = String(obj(created.body).sandbox_id);
    await status(`/sandboxes/${sandboxId}`, ['running']);
    const write = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/exec`, { command: ['sh', '-c', 'echo local-only > /root/f.txt'] });
    expect(obj(write.body).exit_code).toBe(0);

    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, { tag: 'my-local-tag' });
    expect(snap.status).toBe(202);
    const snapshotId = String(obj(snap.body).snapshot_id);
    const active = await status(`/snapshots/${snapshotId}`, ['active', 'failed']);
    expect(active.error).toBeNull();
    // The tag is the snapshot's name; the image tag is made of ids (issue 12: names are per namespace).
    expect(active.tag).toBe('my-local-tag');
    expect(active.image_ref).toBe(`cryo-snapshots:sb-${sandboxId}-snap-${snapshotId}`);
    expect(active.executor_id).toBe('solo');
    expect(obj(active.timings).push_ms).toBeNull();
    const host = cluster.engines.get('solo')?.host ?? '';
    expect(docker(host, ['images', '-q', String(active.image_ref)])).not.toBe('');

    const restore = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { command: ['sh'] });
    expect(restore.status, JSON.stringify(restore.body)).toBe(202);
    const restoredId = String(obj(restore.body).sandbox_id);
    const restored = await status(`/sandboxes/${restoredId}`, ['running']);
    expect(restored.executor_id).toBe('solo');
    const read = await cluster.api('POST', `${NS}/sandboxes/${restoredId}/exec`, { command: ['cat', '/root/f.txt'] });
    expect(obj(read.body).stdout).toBe('local-only\n');

    // Deleting a sandbox is idempotent and removes its container.
    expect((await cluster.api('DELETE', `${NS}/sandboxes/${restoredId}`)).status).toBeLessThan(300);
    expect((await cluster.api('DELETE', `${NS}/sandboxes/${restoredId}`)).status).toBeLessThan(300);
    await status(`/sandboxes/${restoredId}`, ['terminated']);
    await waitFor('container removed', async () => (docker(host, ['ps', '-aq', '--filter', `name=cryo-${restoredId}`]) === '' ? true : undefined), 60_000);
  });
});
