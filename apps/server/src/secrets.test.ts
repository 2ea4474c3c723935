import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { databasePassword } from './db/target';
import { API_KEY, EXECUTOR_TOKEN, Harness, runningSandbox, TEST_DATABASE } from './testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start();
});
afterEach(async () => {
  await h.close();
});

describe('secrets', () => {
  it('never writes the API key, executor token, registry or database password to the log, the database or a response', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    await executor.pushNext();
    await h.request('GET', '/v1/executors', undefined, 'wrong-key');
    h.server.logger.info({ config: h.server.config }, 'config at start');
    h.server.logger.info({ req: { headers: { authorization: `Bearer ${API_KEY}` } } }, 'request headers');
    const responses = JSON.stringify([
      (await h.request('GET', '/v1/executors')).body,
      (await h.api('GET', '/snapshots')).body,
      (await h.request('GET', '/docs/json', undefined, null)).body,
    ]);
    const { kysely } = h.server.db;
    const tables = ['namespaces', 'executors', 'sandboxes', 'snapshots', 'operations', 'reaper_records', 'leases'] as const;
    const rows = JSON.stringify(await Promise.all(tables.map((t) => kysely.selectFrom(t).selectAll().execute())));
    const dbPassword = TEST_DATABASE === 'postgres' ? databasePassword(h.server.config.database) : null;
    await h.server.close();
    const files = readdirSync(h.dir).filter((f) => f.startsWith('server.db'));
    const database = rows + files.map((f) => readFileSync(join(h.dir, f)).toString('latin1')).join('');
    const logs = h.logs.join('');
    expect(logs).toContain('[REDACTED]');
    expect(rows).toContain('registry'); // the rows were read
    const secrets = [API_KEY, EXECUTOR_TOKEN, 'registry-secret-pw', ...(dbPassword === null ? [] : [dbPassword])];
    for (const secret of secrets) {
      expect(logs).not.toContain(secret);
      expect(database).not.toContain(secret);
      expect(responses).not.toContain(secret);
    }
  });
});
