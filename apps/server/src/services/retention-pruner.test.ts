import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ snapshots: { retention_secs: 1000 }, sandboxes: { retention_secs: 500 } });
});
afterEach(async () => {
  await h.close();
});

describe('retention pruning', () => {
  it('removes ended sandboxes and gone snapshots after their retention, and nothing else', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 0 });
    const kept = await executor.pushNext();
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, { ttl_secs: 0 });
    const gone = await executor.pushNext();
    await h.api('DELETE', `/snapshots/${gone.snapshotId}`);
    await h.server.reaper.runOnce();
    await executor.ok((await executor.pollOne('delete_image')).op_id, { removed: [] });
    await h.server.reaper.runOnce();
    expect((await h.api('GET', `/snapshots/${gone.snapshotId}`)).json.status).toBe('deleted');
    await h.api('DELETE', `/sandboxes/${sandboxId}`);

    h.clock.advanceSecs(499);
    expect(await h.server.pruner.runOnce()).toMatchObject({ sandboxes: 0, snapshots: 0 });
    h.clock.advanceSecs(2);
    expect(await h.server.pruner.runOnce()).toMatchObject({ sandboxes: 1, snapshots: 0 });
    expect((await h.api('GET', `/sandboxes/${sandboxId}`)).status).toBe(404);
    h.clock.advanceSecs(500);
    const counts = await h.server.pruner.runOnce();
    expect(counts).toMatchObject({ snapshots: 1, records: 1 });
    expect(counts.operations).toBeGreaterThan(0);
    expect((await h.api('GET', `/snapshots/${gone.snapshotId}`)).status).toBe(404);
    expect((await h.api('GET', `/snapshots/${kept.snapshotId}`)).json.status).toBe('active');
  });
});
