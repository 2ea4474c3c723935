/** Waiting on sandboxes and snapshots through the real REST API, shared by the e2e suites. */
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
