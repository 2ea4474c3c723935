/**
 * The rollback_sandbox handler with fake drivers behind the real DriverSet, busy marks and (for
 * once-per-op-id) the real operation loop and journal: the driver is chosen by mode and checked
 * before anything is removed, the old container goes with the driver that owns it before the new
 * one is made with the target driver, all under the sandbox's busy mark, and a failure carries
 * its reason. The real swap (Docker, runc, FUSE) is test/lifecycle.test.ts "rollback in place".
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { CryoError, type Operation, type OperationOf, type Progress, type RestoreMode, type RuntimeName } from '@cryo/snapshot';
import { BusySandboxes } from '../busy-sandboxes';
import type { DriverCapabilities, ProgressSink, RuntimeDriver, SandboxSpec } from '../runtime/driver';
import { DriverSet } from '../runtime/driver-set';
import { OperationLoop } from '../services/operation-loop';
import { OpJournal } from '../state/op-journal';
import { ScriptedServer } from '../testing/scripted-server';
import { until } from '../testing/until';
import { rollbackSandbox, type RollbackContext } from './rollback-sandbox';

const log = pino({ level: 'silent' });
const SANDBOX = 'sbx-1';

/** What the fake drivers were asked, in order, with whether the sandbox was busy at the time. */
type Event = { call: string; busy: boolean };

/** A driver that keeps its sandboxes in a set; `create`/`remove` fail when told to. */
class FakeDriver implements RuntimeDriver {
  readonly sandboxes = new Set<string>();
  created: SandboxSpec[] = [];
  failCreate: Error | undefined;
  failRemove: Error | undefined;
  private made = 0;

  constructor(
    readonly name: RuntimeName,
    private readonly caps: DriverCapabilities,
    private readonly events: Event[],
    private readonly busy: BusySandboxes,
  ) {}

  async capabilities(): Promise<DriverCapabilities> { return this.caps; }
  async owns(sandboxId: string): Promise<boolean> { return this.sandboxes.has(sandboxId); }

  async create(spec: SandboxSpec, progress: ProgressSink): Promise<string> {
    this.events.push({ call: `${this.name}.create`, busy: this.busy.has(spec.sandboxId) });
    this.created.push(spec);
    progress({ phase: 'pull', bytes_done: 10, bytes_total: 10 });
    if (this.failCreate !== undefined) throw this.failCreate;
    this.sandboxes.add(spec.sandboxId);
    this.made += 1;
    return `${this.name}-container-${this.made}`;
  }

  async remove(sandboxId: string): Promise<boolean> {
    this.events.push({ call: `${this.name}.remove`, busy: this.busy.has(sandboxId) });
    if (this.failRemove !== undefined) throw this.failRemove;
    return this.sandboxes.delete(sandboxId);
  }

  exec(): never { throw new Error('not used by a rollback'); }
  snapshot(): never { throw new Error('not used by a rollback'); }
  async observe(): Promise<never[]> { return []; }
  async recover(): Promise<never[]> { return []; }
}

interface Host {
  lazy: FakeDriver;
  docker: FakeDriver;
  events: Event[];
  busy: BusySandboxes;
  nudges: number;
  ctx: RollbackContext;
}

/** An executor's drivers (lazy first, as the executor orders them); `lazyUnavailable` gives the lazy probe's reason. */
async function host(opts: { lazyUnavailable?: string } = {}): Promise<Host> {
  const events: Event[] = [];
  const busy = new BusySandboxes();
  const lazy = new FakeDriver('runc-lazy', opts.lazyUnavailable === undefined
    ? { available: true, reason: null, restoreModes: ['lazy'] }
    : { available: false, reason: opts.lazyUnavailable, restoreModes: ['lazy'] }, events, busy);
  const docker = new FakeDriver('docker', { available: true, reason: null, restoreModes: ['eager'] }, events, busy);
  const drivers = new DriverSet([lazy, docker], 'exec-1');
  await drivers.probe(log);
  const h: Host = {
    lazy, docker, events, busy, nudges: 0,
    ctx: { drivers, busy, create: (driver, spec, progress) => driver.create(spec, progress), changed: () => { h.nudges += 1; } },
  };
  return h;
}

function payload(mode: RestoreMode): OperationOf<'rollback_sandbox'>['payload'] {
  return {
    sandbox_id: SANDBOX, namespace: 'ns', image: 'reg:5000/cryo/snapshots:sb-1-snap-1', command: ['sh'], env: {},
    labels: { role: 'rollback' }, resources: { cpus: 1 },
    restore: {
      snapshot_id: 'snap-1', image_ref: 'reg:5000/cryo/snapshots:sb-1-snap-1', digest: 'sha256:aa',
      clip_index_ref: 'reg:5000/cryo/snapshots:sb-1-snap-1.clip', mode,
    },
  };
}

const calls = (h: Host): string[] => h.events.map((e) => e.call);
const noProgress: ProgressSink = () => undefined;

describe('rollbackSandbox', () => {
  it('eager to lazy: the docker driver removes the old container, then the lazy driver creates the new one from the snapshot', async () => {
    const h = await host();
    h.docker.sandboxes.add(SANDBOX);
    const progress: Progress[] = [];

    const result = await rollbackSandbox(h.ctx, payload('lazy'), log, (p) => progress.push(p));

    expect(result).toEqual({ container_id: 'runc-lazy-container-1', runtime: 'runc-lazy' });
    expect(calls(h)).toEqual(['docker.remove', 'runc-lazy.create']);
    expect(h.docker.sandboxes.has(SANDBOX)).toBe(false);
    expect(h.lazy.sandboxes.has(SANDBOX)).toBe(true);
    expect(h.lazy.created).toEqual([{
      sandboxId: SANDBOX, namespace: 'ns', image: 'reg:5000/cryo/snapshots:sb-1-snap-1', command: ['sh'], env: {},
      labels: { role: 'rollback' }, resources: { cpus: 1 },
      restore: {
        snapshotId: 'snap-1', imageRef: 'reg:5000/cryo/snapshots:sb-1-snap-1', digest: 'sha256:aa',
        clipIndexRef: 'reg:5000/cryo/snapshots:sb-1-snap-1.clip', mode: 'lazy',
      },
    }]);
    // The create's progress reaches the operation's sink; the heartbeat is told once it is done.
    expect(progress).toEqual([{ phase: 'pull', bytes_done: 10, bytes_total: 10 }]);
    expect(h.nudges).toBe(1);
  });

  it('lazy to eager: the lazy driver (which owns it) removes, the docker driver creates', async () => {
    const h = await host();
    h.lazy.sandboxes.add(SANDBOX);

    const result = await rollbackSandbox(h.ctx, payload('eager'), log, noProgress);

    expect(result).toEqual({ container_id: 'docker-container-1', runtime: 'docker' });
    expect(calls(h)).toEqual(['runc-lazy.remove', 'docker.create']);
    expect(h.lazy.sandboxes.has(SANDBOX)).toBe(false);
    expect(h.docker.created[0]?.restore?.mode).toBe('eager');
  });

  it('eager to eager: the same driver removes, then creates', async () => {
    const h = await host();
    h.docker.sandboxes.add(SANDBOX);

    expect(await rollbackSandbox(h.ctx, payload('eager'), log, noProgress)).toEqual({ container_id: 'docker-container-1', runtime: 'docker' });
    expect(calls(h)).toEqual(['docker.remove', 'docker.create']);
  });

  it('a sandbox with no container here (gone meanwhile) is created without a removal', async () => {
    const h = await host();

    expect(await rollbackSandbox(h.ctx, payload('eager'), log, noProgress)).toEqual({ container_id: 'docker-container-1', runtime: 'docker' });
    expect(calls(h)).toEqual(['docker.create']);
  });

  it('a mode this host cannot serve fails UNPROCESSABLE with the probe\'s reason, and the old container is left running', async () => {
    const h = await host({ lazyUnavailable: '/dev/fuse is missing' });
    h.docker.sandboxes.add(SANDBOX);

    const failure = await rollbackSandbox(h.ctx, payload('lazy'), log, noProgress).catch((err: unknown) => err);

    expect(failure).toBeInstanceOf(CryoError);
    expect(failure).toMatchObject({ code: 'UNPROCESSABLE', message: 'executor exec-1 cannot restore lazily: /dev/fuse is missing' });
    expect(calls(h)).toEqual([]);
    expect(h.docker.sandboxes.has(SANDBOX)).toBe(true);
    expect(h.busy.has(SANDBOX)).toBe(false);
  });

  it('holds the sandbox busy from before the removal until the new container is made, and lets go after', async () => {
    const h = await host();
    h.docker.sandboxes.add(SANDBOX);

    await rollbackSandbox(h.ctx, payload('lazy'), log, noProgress);

    expect(h.events).toEqual([{ call: 'docker.remove', busy: true }, { call: 'runc-lazy.create', busy: true }]);
    expect(h.busy.has(SANDBOX)).toBe(false);
  });

  it('a removal that fails creates nothing and fails with the driver\'s error', async () => {
    const h = await host();
    h.docker.sandboxes.add(SANDBOX);
    h.docker.failRemove = new Error('(HTTP code 500) server error - removal of container cryo-sbx-1 is already in progress');

    await expect(rollbackSandbox(h.ctx, payload('lazy'), log, noProgress)).rejects.toBe(h.docker.failRemove);

    expect(calls(h)).toEqual(['docker.remove']);
    expect(h.lazy.created).toEqual([]);
    expect(h.busy.has(SANDBOX)).toBe(false);
  });

  it('a create that fails after the removal fails with its reason; the old container is not brought back (the server ends the sandbox)', async () => {
    const h = await host();
    h.docker.sandboxes.add(SANDBOX);
    h.lazy.failCreate = new CryoError('NOT_FOUND', 'clip index reg:5000/cryo/snapshots:sb-1-snap-1.clip not found in the registry');

    await expect(rollbackSandbox(h.ctx, payload('lazy'), log, noProgress)).rejects.toBe(h.lazy.failCreate);

    expect(calls(h)).toEqual(['docker.remove', 'runc-lazy.create']);
    expect(h.docker.sandboxes.has(SANDBOX)).toBe(false);
    expect(h.lazy.sandboxes.has(SANDBOX)).toBe(false);
    expect(h.busy.has(SANDBOX)).toBe(false);
    expect(h.nudges).toBe(0);
  });
});

describe('rollback_sandbox in the operation loop', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  const rollbackOp = (opId: string, mode: RestoreMode, attempt = 1): Operation =>
    ({ op_id: opId, attempt, lease_expires_at: new Date().toISOString(), kind: 'rollback_sandbox', payload: payload(mode) });

  async function run(h: Host, server: ScriptedServer, check: (journal: OpJournal) => Promise<void>): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'cryo-rollback-'));
    dirs.push(dir);
    const journal = new OpJournal(dir);
    const loop = new OperationLoop(server, journal, (op, opLog) => rollbackSandbox(h.ctx, (op as OperationOf<'rollback_sandbox'>).payload, opLog, noProgress), log, 10);
    loop.start();
    try {
      await check(journal);
    } finally {
      await loop.stop();
    }
  }

  it('swaps once per op id: offered again while running and after it is done, the journal answers', async () => {
    const h = await host();
    h.docker.sandboxes.add(SANDBOX);
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const create = h.ctx.create;
    h.ctx.create = async (driver, spec, progress) => { await gate; return create(driver, spec, progress); };
    // The second batch is the lease offered again while the first run waits at the gate.
    const server = new ScriptedServer([[rollbackOp('op-r', 'lazy')], [rollbackOp('op-r', 'lazy', 2)]]);

    await run(h, server, async (journal) => {
      await until('the old container removed', () => calls(h).length === 1);
      await new Promise((r) => setTimeout(r, 50));
      release();
      await until('the report', () => server.reports.length === 1);
      server.offer([rollbackOp('op-r', 'lazy', 3)]);
      await until('the second report', () => server.reports.length === 2);
      const done = { ok: true, result: { container_id: 'runc-lazy-container-1', runtime: 'runc-lazy' } };
      expect(server.reports.map((r) => r.body)).toEqual([done, done]);
      expect(calls(h)).toEqual(['docker.remove', 'runc-lazy.create']);
      expect(journal.get('op-r')).toMatchObject({ state: 'done', reported: true });
    });
  });

  it('reports a refused mode with its code and reason, and the old container stays', async () => {
    const h = await host({ lazyUnavailable: 'runc is not installed' });
    h.docker.sandboxes.add(SANDBOX);
    const server = new ScriptedServer([[rollbackOp('op-f', 'lazy')]]);

    await run(h, server, async () => {
      await until('the report', () => server.reports.length === 1);
      expect(server.reports[0]?.body).toEqual({
        ok: false, error: { code: 'UNPROCESSABLE', message: 'executor exec-1 cannot restore lazily: runc is not installed' },
      });
      expect(h.docker.sandboxes.has(SANDBOX)).toBe(true);
    });
  });
});
