/**
 * Issue 8 item 8: the test suite's Docker engines leave the machine's network alone. A dockerd
 * started with --bridge=none deletes the machine's docker0 and cuts every bridged container of the
 * machine's engine off; test engines now run on bridges of their own (scripts/engine-bridge.sh).
 *
 * The "machine engine" here is started as a machine's own engine is: default bridge docker0 (made
 * by dockerd), but with its own data root, exec root and socket so it disturbs nothing else, and
 * without iptables rules. When the machine already has a docker0 (its own engine), the test does
 * not put containers on it: it only checks that docker0 keeps its addresses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { startCluster, type Cluster } from './support/cluster';
import { startDockerd, type TestDockerd } from './support/dockerd';
import { docker, importBusybox } from './support/images';
import { killAll } from './support/processes';
import { execIn, obj, waitSandbox, waitSnapshot } from './support/api';

const NS = '/v1/namespaces/host-network';
const BOX = 'cryo-machine-box';

interface Link { ifname: string; addr_info?: Array<{ family: string; local: string; prefixlen: number }> }

function links(): Link[] {
  return JSON.parse(execFileSync('ip', ['-j', 'addr', 'show'], { encoding: 'utf8' })) as Link[];
}

/** `docker0`'s IPv4 addresses as `a.b.c.d/n`, or undefined when there is no docker0. */
function docker0Addresses(): string[] | undefined {
  const link = links().find((l) => l.ifname === 'docker0');
  return link?.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
}

const machineHadDocker0 = docker0Addresses() !== undefined;
let machine: TestDockerd | undefined;
let cluster: Cluster | undefined;
let docker0Before: string[] | undefined;
let gateway = '';

/** The machine engine's container pings docker0's address (busybox's ping; docker grants NET_RAW). */
function pingGateway(args: string[]): { ok: boolean; output: string } {
  try {
    return { ok: true, output: docker(machine?.host ?? '', [...args, 'busybox', 'ping', '-c', '1', '-W', '2', gateway]) };
  } catch (err) {
    return { ok: false, output: err instanceof Error ? err.message : String(err) };
  }
}

beforeAll(async () => {
  if (!machineHadDocker0) {
    machine = await startDockerd('machine', { bridge: 'docker0' });
    importBusybox(machine.host, 'busybox:local');
    docker(machine.host, ['run', '-d', '--name', BOX, 'busybox:local', 'sleep', '3600']);
    gateway = docker(machine.host, ['inspect', '-f', '{{.NetworkSettings.Gateway}}', BOX]);
  }
  docker0Before = docker0Addresses();
}, 300_000);

afterAll(async () => {
  await cluster?.stop();
  await killAll();
  if (machine !== undefined) {
    try { docker(machine.host, ['rm', '-f', BOX]); } catch { /* never started */ }
    await machine.stop();
    // The test made docker0 (there was none): it deletes it again.
    if (docker0Addresses() !== undefined) execFileSync('ip', ['link', 'del', 'docker0']);
  }
});

describe("the e2e suite's engines and the machine's docker0", () => {
  it.skipIf(machineHadDocker0)('a default-bridge engine with its own socket makes docker0, and its bridged container reaches the gateway', () => {
    expect(docker0Before).toHaveLength(1);
    expect(docker0Before?.[0]?.startsWith(`${gateway}/`)).toBe(true);
    expect(pingGateway(['exec', BOX])).toMatchObject({ ok: true, output: expect.stringContaining('1 packets received') });
  });

  it('two test hosts snapshot on A and restore on B through the registry, on bridges of their own that are gone afterwards', async () => {
    cluster = await startCluster({ hosts: [{ name: 'A' }, { name: 'B' }] });
    const engineA = cluster.engines.get('A');
    const engineB = cluster.engines.get('B');
    if (engineA === undefined || engineB === undefined) throw new Error('engines A and B expected');
    const bridges = [engineA.bridge, engineB.bridge];
    expect(bridges[0]).toMatch(/^cryobr\d+$/);
    expect(bridges[1]).toMatch(/^cryobr\d+$/);
    expect(bridges[0]).not.toBe(bridges[1]);
    expect(links().map((l) => l.ifname)).toEqual(expect.arrayContaining(bridges));
    expect(docker0Addresses()).toEqual(docker0Before);

    importBusybox(engineA.host, 'busybox:local');
    const created = await cluster.api('POST', `${NS}/sandboxes`, { image: 'busybox:local', command: ['sh'], executor_id: 'A' });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const sandboxA = String(obj(created.body).sandbox_id);
    await waitSandbox(cluster, NS, sandboxA, ['running']);
    expect((await execIn(cluster, NS, sandboxA, ['sh', '-c', 'echo from-A > /root/note'])).exit_code).toBe(0);
    const snap = await cluster.api('POST', `${NS}/sandboxes/${sandboxA}/snapshots`, { ttl_secs: 0 });
    expect(snap.status, JSON.stringify(snap.body)).toBe(202);
    const snapshotId = String(obj(snap.body).snapshot_id);
    await waitSnapshot(cluster, NS, snapshotId, (s) => s.status === 'active', 'active');
    const restored = await cluster.api('POST', `${NS}/snapshots/${snapshotId}/restore`, { executor_id: 'B' });
    expect(restored.status, JSON.stringify(restored.body)).toBe(202);
    const sandboxB = String(obj(restored.body).sandbox_id);
    await waitSandbox(cluster, NS, sandboxB, ['running']);
    expect(await execIn(cluster, NS, sandboxB, ['cat', '/root/note'])).toMatchObject({ exit_code: 0, stdout: 'from-A\n' });

    await cluster.stop();
    cluster = undefined;
    const after = links().map((l) => l.ifname);
    expect(after.filter((name) => bridges.includes(name))).toEqual([]);
    expect(docker0Addresses()).toEqual(docker0Before);
  });

  it.skipIf(machineHadDocker0)('afterwards the machine engine\'s bridged container still reaches its gateway, and a new one gets network', () => {
    expect(docker0Addresses()).toEqual(docker0Before);
    expect(pingGateway(['exec', BOX])).toMatchObject({ ok: true, output: expect.stringContaining('1 packets received') });
    expect(pingGateway(['run', '--rm', 'busybox:local'])).toMatchObject({ ok: true, output: expect.stringContaining('1 packets received') });
  });
});
