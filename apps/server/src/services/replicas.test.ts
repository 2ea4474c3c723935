/**
 * Two server replicas on one PostgreSQL database (the `unit-pg` project; skipped on SQLite, where
 * one file is one server): work queued on one wakes a long poll on the other, an exec answered
 * through the other replica returns, the once-only duties are exact even when both replicas run
 * them at the same moment, and the leader lease moves when its holder stops.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox, TEST_DATABASE } from '../testing/harness';

let a: Harness;
let b: Harness;

describe.skipIf(TEST_DATABASE !== 'postgres')('replicas sharing PostgreSQL', () => {
  beforeEach(async () => {
    a = await Harness.start({
      executors: { heartbeat_interval_secs: 1, heartbeat_timeout_secs: 3 },
      snapshots: { default_ttl_secs: 3600 },
    });
    b = await a.replica();
  });
  afterEach(async () => {
    await b.close();
    await a.close();
  });

  it('wakes a long poll on replica B as soon as replica A queues work for its executor', async () => {
    const executor = b.executor('exec-a');
    await executor.heartbeat();
    const started = Date.now();
    const polled = executor.poll(20_000); // waits on B
    await new Promise((r) => setTimeout(r, 300));
    const created = await a.api('POST', '/sandboxes', { image: 'busybox' }); // queued on A
    expect(created.status).toBe(202);
    const ops = await polled;
    expect(ops.map((o) => o.kind)).toEqual(['create_sandbox']);
    expect(Date.now() - started).toBeLessThan(5000); // the NOTIFY, not the 20 s poll timeout
  });

  it('answers an exec on replica A whose result the executor reports to replica B', async () => {
    const { executor, sandboxId } = await runningSandbox(a);
    const exec = a.api('POST', `/sandboxes/${sandboxId}/exec`, { command: ['echo', 'hi'], timeout_secs: 30 });
    executor.attach(b);
    const op = await executor.pollOne('exec', 10_000);
    await executor.ok(op.op_id, { exit_code: 0, stdout: 'hi\n', stderr: '' });
    const reply = await exec;
    expect(reply.status).toBe(200);
    expect(reply.json).toMatchObject({ exit_code: 0, stdout: 'hi\n' });
  });

  it('declares an executor lost once and deletes each manifest once when both replicas run the duties at once', async () => {
    const { executor, sandboxId } = await runningSandbox(a, 'exec-a');
    const pushed: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const snap = await a.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 5 });
      expect(snap.status).toBe(202);
      pushed.push((await executor.pushNext()).digest);
    }
    // Every DELETE the reapers send, also one the registry answers with "not found".
    const deletes: string[] = [];
    const deleteManifest = a.registry.deleteManifest.bind(a.registry);
    a.registry.deleteManifest = async (ref, digest) => {
      deletes.push(digest);
      return deleteManifest(ref, digest);
    };
    a.clock.advanceSecs(6);
    await Promise.all([a.server.reaper.runOnce(), b.server.reaper.runOnce()]);
    await Promise.all([a.server.reaper.runOnce(), b.server.reaper.runOnce()]);
    expect(deletes.sort()).toEqual([...pushed].sort()); // each digest once, none twice
    expect(a.registry.deleted.sort()).toEqual([...pushed].sort());
    a.clock.advanceSecs(10); // exec-a stays silent past the heartbeat timeout
    const [fromA, fromB] = await Promise.all([a.server.monitor.runOnce(), b.server.monitor.runOnce()]);
    expect([...fromA.lost, ...fromB.lost]).toEqual(['exec-a']);
    expect(await a.server.metrics.value('cryo_executors_lost_total') + await b.server.metrics.value('cryo_executors_lost_total')).toBe(1);
  });

  it('elects one leader, and the other takes over when it stops', async () => {
    a.server.startBackgroundTasks();
    b.server.startBackgroundTasks();
    const holder = async (): Promise<string | undefined> => (await a.server.stores.leases.get('duties'))?.holder;
    const deadline = Date.now() + 10_000;
    while ((await holder()) === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const first = await holder();
    expect([a.server.db.replicaId, b.server.db.replicaId]).toContain(first);
    expect(a.server.leadership.isLeader !== b.server.leadership.isLeader).toBe(true);
    const [leader, follower] = a.server.leadership.isLeader ? [a, b] : [b, a];
    await leader.server.leadership.stop(); // releases the lease
    const takeover = Date.now() + 3000; // heartbeat timeout
    while (!follower.server.leadership.isLeader && Date.now() < takeover) await new Promise((r) => setTimeout(r, 50));
    expect(follower.server.leadership.isLeader).toBe(true);
    expect(await holder()).toBe(follower.server.db.replicaId);
  });
});
