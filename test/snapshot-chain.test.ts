/**
 * Issue 8 item 2: a chain of snapshot -> restore -> snapshot goes on past the overlay's layer
 * limit. The input is an image of 120 small layers (made with GNU tar and gzip, pushed through
 * the registry API) holding whiteouts, an opaque directory, a directory replaced by a file, hard
 * links, a symlink and a name that is not UTF-8; every round writes a file and deletes one of a
 * lower layer and one of an earlier round. Each restored sandbox must show exactly what the
 * chain wrote, as Docker showed it for the input image.
 *
 * Host A flattens at the default snapshots.max_layers (100); host B at 124, so that B can make a
 * 121-layer snapshot for the lazy chain to start from.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from './support/cluster';
import { killAll } from './support/processes';
import { execIn, obj, waitSandbox, waitSnapshot, type Obj } from './support/api';
import { expectedTree, listTreeCommand, parseTree, pushLayeredImage } from './support/layered-image';

const NS = '/v1/namespaces/chain';
const BASE_LAYERS = 120;
const ROUNDS = 10;
const TREE_DIRS = ['layers', 'opq', 'links', 'names', 'swap', 'rounds'];
let cluster: Cluster;
let baseImage: string;

beforeAll(async () => {
  cluster = await startCluster({
    hosts: [{ name: 'A' }, { name: 'B', snapshots: { max_layers: 124 } }],
    heartbeatTimeoutSecs: 30,
  });
  const host = cluster.registryHost;
  if (host === undefined) throw new Error('cluster without registry');
  baseImage = `${host}/base/layered:${BASE_LAYERS}`;
  await pushLayeredImage(baseImage, BASE_LAYERS, { credentials: { username: cluster.registryUser, password: cluster.registryPassword } });
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await killAll();
});

async function tree(sandboxId: string): Promise<Map<string, string>> {
  const out = await execIn(cluster, NS, sandboxId, listTreeCommand(TREE_DIRS));
  expect(out.exit_code, String(out.stderr)).toBe(0);
  return parseTree(String(out.stdout));
}

/** What the chain holds after `round` rounds: the input image, less what the rounds deleted, plus what they wrote. */
function expectedAfter(round: number): Map<string, string> {
  const t = expectedTree(BASE_LAYERS);
  for (let r = 1; r <= round; r++) {
    t.set('rounds', '/');
    t.set(`rounds/r${r}`, `=round ${r} 1`);
    t.delete(`layers/f${10 * r + 2}`);
    if (r >= 3) t.delete(`rounds/r${r - 2}`);
  }
  return t;
}

const roundCommand = (r: number): string[] => ['sh', '-c', [
  'mkdir -p /rounds', `echo round ${r} > /rounds/r${r}`, `rm /layers/f${10 * r + 2}`, ...(r >= 3 ? [`rm /rounds/r${r - 2}`] : []),
].join(' && ')];

async function snapshot(sandboxId: string): Promise<Obj> {
  const res = await cluster.api('POST', `${NS}/sandboxes/${sandboxId}/snapshots`, {});
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(obj(res.body).snapshot_id);
  const done = await waitSnapshot(cluster, NS, id, (s) => s.status === 'failed' || (s.status === 'active' && (s.clip_index_ref !== null || s.clip_error !== null)), 'active and indexed');
  expect(done.error).toBeNull();
  expect(done.status).toBe('active');
  expect(done.clip_error).toBeNull();
  return done;
}

async function restore(snapshotId: string, executor: string, mode: 'eager' | 'lazy'): Promise<string> {
  const res = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: executor, mode, command: ['sh'] });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const id = String(obj(res.body).sandbox_id);
  expect((await waitSandbox(cluster, NS, id, ['running'])).restore_mode).toBe(mode);
  return id;
}

async function remove(sandboxId: string): Promise<void> {
  await cluster.api('DELETE', `${NS}/sandboxes/${sandboxId}`);
  await waitSandbox(cluster, NS, sandboxId, ['terminated']);
}

const other = (host: string): string => (host === 'A' ? 'B' : 'A');

describe('a chain of snapshots past the overlay layer limit', () => {
  it('docker: 10 rounds of snapshot -> restore from a 120-layer image; the first snapshot is flattened', async () => {
    const created = await cluster.api('POST', `${NS}/sandboxes`, { image: baseImage, command: ['sh'], executor_id: 'A' });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    let sandbox = String(obj(created.body).sandbox_id);
    await waitSandbox(cluster, NS, sandbox, ['running']);
    // Docker's own view of the input is the model the rounds are checked against.
    expect(await tree(sandbox)).toEqual(expectedAfter(0));

    for (let r = 1; r <= ROUNDS; r++) {
      expect((await execIn(cluster, NS, sandbox, roundCommand(r))).exit_code).toBe(0);
      const snap = await snapshot(sandbox);
      // 121 layers > 100 on A: flattened to one; then one layer per round.
      expect({ round: r, layers: snap.layers, flattened: snap.flattened }).toEqual({ round: r, layers: r, flattened: r === 1 });
      expect(typeof obj(snap.timings).flatten_ms).toBe(r === 1 ? 'number' : 'object');
      // The cluster's engines keep containers in overlay2 on this host: the pre-copy method, flattened or not.
      expect(obj(snap.capture).method).toBe('precopy');
      // Odd rounds restore on the host that made the snapshot (its engine has the image), even rounds on the other (a pull).
      const made = String(snap.executor_id);
      const next = await restore(String(snap.snapshot_id), r % 2 === 1 ? made : other(made), 'eager');
      expect(await tree(next), `round ${r}`).toEqual(expectedAfter(r));
      await remove(sandbox);
      sandbox = next;
    }
    await remove(sandbox);
  });

  it('runc-lazy: a lazy sandbox of a 121-layer snapshot is flattened when it is snapshotted, and the chain goes on lazily', async () => {
    const created = await cluster.api('POST', `${NS}/sandboxes`, { image: baseImage, command: ['sh'], executor_id: 'B' });
    let sandbox = String(obj(created.body).sandbox_id);
    await waitSandbox(cluster, NS, sandbox, ['running']);
    // (Docker's commit adds no layer for a container without changes.)
    expect((await execIn(cluster, NS, sandbox, ['sh', '-c', 'echo start > /root/start'])).exit_code).toBe(0);
    // Below B's max_layers (124): not flattened.
    const first = await snapshot(sandbox);
    expect({ layers: first.layers, flattened: first.flattened }).toEqual({ layers: BASE_LAYERS + 1, flattened: false });
    await remove(sandbox);
    sandbox = await restore(String(first.snapshot_id), 'A', 'lazy');
    expect(await tree(sandbox)).toEqual(expectedAfter(0));

    let layers = BASE_LAYERS + 1;
    for (let r = 1; r <= ROUNDS; r++) {
      expect((await execIn(cluster, NS, sandbox, roundCommand(r))).exit_code).toBe(0);
      const snap = await snapshot(sandbox);
      // Round 1 snapshots the lazy sandbox on A: 122 layers > 100, flattened by the runc-lazy driver.
      layers = r === 1 ? 1 : layers + 1;
      expect({ round: r, layers: snap.layers, flattened: snap.flattened }).toEqual({ round: r, layers, flattened: r === 1 });
      // Lazy restores, on alternating hosts; round 5 eagerly, so that round 6 is a docker snapshot of a lazily made chain.
      const mode = r === 5 ? 'eager' : 'lazy';
      const next = await restore(String(snap.snapshot_id), other(String(snap.executor_id)), mode);
      expect(await tree(next), `round ${r} (${mode})`).toEqual(expectedAfter(r));
      await remove(sandbox);
      sandbox = next;
    }
    await remove(sandbox);
  });

  it('an image with more layers than Docker can stack fails with the clear message, not the daemon text', async () => {
    const host = cluster.registryHost ?? '';
    const tooDeep = `${host}/base/layered:130`;
    await pushLayeredImage(tooDeep, 130, { credentials: { username: cluster.registryUser, password: cluster.registryPassword } });
    const created = await cluster.api('POST', `${NS}/sandboxes`, { image: tooDeep, command: ['sh'], executor_id: 'A' });
    const id = String(obj(created.body).sandbox_id);
    const ended = await waitSandbox(cluster, NS, id, ['terminated']);
    const reason = String(obj(ended.outcome).reason);
    expect(reason).toMatch(/more layers than the overlay filesystem can stack/);
    expect(reason).toMatch(/snapshots\.max_layers/);
    expect(reason).not.toContain('HTTP code');
  });
});
