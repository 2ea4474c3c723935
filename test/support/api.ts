/** Waiting on sandboxes and snapshots through the real REST API, shared by the e2e suites. */
import { readFileSync } from 'node:fs';
import type { Cluster } from './cluster';
import { waitFor } from './processes';

export interface Obj { [k: string]: unknown }
export const obj = (v: unknown): Obj => v as Obj;

export async function waitSandbox(cluster: Cluster, ns: string, id: string, statuses: string[]): Promise<Obj> {
  return waitFor(`sandbox ${id} in ${statuses.join('|')}`, async () => {
    const body = obj((await cluster.api('GET', `${ns}/sandboxes/${id}`)).body);
    if (body.status === 'terminated' && !statuses.includes('terminated')) {
      throw new Error(`sandbox ${id} terminated: ${JSON.stringify(body.outcome)}`);
    }
    return statuses.includes(String(body.status)) ? body : undefined;
  }, 120_000);
}

export async function waitSnapshot(cluster: Cluster, ns: string, id: string, done: (s: Obj) => boolean, what: string): Promise<Obj> {
  return waitFor(`snapshot ${id} ${what}`, async () => {
    const body = obj((await cluster.api('GET', `${ns}/snapshots/${id}`)).body);
    return done(body) ? body : undefined;
  }, 180_000);
}

export async function execIn(cluster: Cluster, ns: string, sandboxId: string, command: string[]): Promise<Obj> {
  const res = await cluster.api('POST', `${ns}/sandboxes/${sandboxId}/exec`, { command, timeout_secs: 120 });
  if (res.status !== 200) throw new Error(`exec answered ${res.status}: ${JSON.stringify(res.body)}`);
  return obj(res.body);
}

/**
 * Ends every sandbox of namespace `ns` through the API and waits until the cluster's mounts are
 * gone. Lazy sandboxes outlive their executor (detached clip mounts, runc containers), so a test
 * file that made any calls this before `cluster.stop()`.
 */
export async function endSandboxes(cluster: Cluster, ns: string): Promise<void> {
  const items = obj((await cluster.api('GET', `${ns}/sandboxes?limit=500`)).body).items as Array<{ sandbox_id: string; status: string }> | undefined;
  for (const s of items ?? []) if (s.status !== 'terminated') await cluster.api('DELETE', `${ns}/sandboxes/${s.sandbox_id}`);
  for (const s of items ?? []) await waitSandbox(cluster, ns, s.sandbox_id, ['terminated']).catch(() => undefined);
  await waitFor('lazy mounts gone', async () => (readFileSync('/proc/mounts', 'utf8').includes(cluster.dir) ? undefined : true), 60_000)
    .catch(() => undefined);
}
