import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DUTIES_LEASE } from '../server';
import { Harness, TEST_DATABASE } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ executors: { heartbeat_interval_secs: 1, heartbeat_timeout_secs: 3 } });
});
afterEach(async () => {
  await h.close();
});

async function until(check: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return check();
}

describe(`leadership (${TEST_DATABASE})`, () => {
  it('takes the duties lease, renews it, and releases it on close', async () => {
    h.server.startBackgroundTasks();
    expect(await until(() => h.server.leadership.isLeader, 2000)).toBe(true);
    const first = await h.server.stores.leases.get(DUTIES_LEASE);
    expect(first?.holder).toBe(h.server.db.replicaId);
    expect(await until(async () => ((await h.server.stores.leases.get(DUTIES_LEASE))?.expires_at ?? 0) > (first?.expires_at ?? 0), 3000)).toBe(true);
    await h.server.leadership.stop();
    expect(await h.server.stores.leases.get(DUTIES_LEASE)).toBeUndefined();
  });

  it(TEST_DATABASE === 'sqlite'
    ? 'takes over at once from a crashed predecessor (one SQLite file is one server)'
    : 'waits for a crashed holder\'s lease to expire before taking over', async () => {
    const expiresAt = Date.now() + 1500;
    await h.server.db.kysely.insertInto('leases')
      .values({ name: DUTIES_LEASE, holder: 'crashed-replica', acquired_at: Date.now(), expires_at: expiresAt })
      .execute();
    h.server.startBackgroundTasks();
    expect(await until(() => h.server.leadership.isLeader, 1000)).toBe(TEST_DATABASE === 'sqlite');
    expect(await until(() => h.server.leadership.isLeader, 3000)).toBe(true);
    if (TEST_DATABASE === 'postgres') expect(Date.now()).toBeGreaterThanOrEqual(expiresAt);
  });
});
