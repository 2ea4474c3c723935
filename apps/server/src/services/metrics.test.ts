import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ executors: { heartbeat_timeout_secs: 15 } });
});
afterEach(async () => {
  await h.close();
});

/** One sample of a family as prom-client holds it (`_sum`, `_count`, `_bucket` for histograms). */
async function sample(metricName: string, labels: Record<string, string>): Promise<number | undefined> {
  const family = metricName.replace(/_(sum|count|bucket)$/, '');
  const all = await h.server.metrics.registry.getMetricsAsJSON();
  const values = all.find((m) => m.name === family)?.values ?? [];
  const nameOf = (v: object): string => ('metricName' in v && typeof v.metricName === 'string' ? v.metricName : family);
  const found = values.find((v) => nameOf(v) === metricName
    && Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want));
  return found?.value;
}

async function scrape(): Promise<string> {
  const reply = await h.request('GET', '/metrics', undefined, null);
  expect(reply.status).toBe(200);
  expect(String(reply.headers['content-type'])).toMatch(/^text\/plain; version=0\.0\.4/);
  return String(reply.body);
}

describe('/metrics', () => {
  it("exposes Node's default process metrics next to every cryo family", async () => {
    const text = await scrape();
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
      expect(text).toMatch(new RegExp(`^${name} `, 'm'));
    }
    for (const [name, type] of [
      ['cryo_snapshots_created_total', 'counter'],
      ['cryo_operations_total', 'counter'],
      ['cryo_snapshot_phase_seconds', 'histogram'],
      ['cryo_restore_to_running_seconds', 'histogram'],
      ['cryo_operation_duration_seconds', 'histogram'],
      ['cryo_http_request_duration_seconds', 'histogram'],
      ['cryo_executor_heartbeat_age_seconds', 'gauge'],
      ['cryo_snapshots', 'gauge'],
    ]) {
      expect(text).toContain(`# TYPE ${name} ${type}\n`);
    }
    // Counters without labels show 0 before anything happened (a rate() over them works at once).
    expect(text).toMatch(/^cryo_snapshots_expired_total 0$/m);
  });

  it("reports each executor's heartbeat age and state, read at scrape time", async () => {
    await h.executor('exec-a').heartbeat();
    h.clock.advanceSecs(4);
    await h.executor('exec-b').heartbeat();
    h.clock.advance(1500);
    const text = await scrape();
    expect(text).toMatch(/^cryo_executor_heartbeat_age_seconds\{executor_id="exec-a",state="ready"\} 5\.5$/m);
    expect(text).toMatch(/^cryo_executor_heartbeat_age_seconds\{executor_id="exec-b",state="ready"\} 1\.5$/m);
    h.clock.advanceSecs(20);
    await h.server.monitor.runOnce();
    const later = await scrape();
    expect(later).toMatch(/^cryo_executor_heartbeat_age_seconds\{executor_id="exec-a",state="lost"\} 25\.5$/m);
    expect(later).not.toMatch(/executor_id="exec-a",state="ready"/);
    expect(later).toMatch(/^cryo_executors\{state="lost"\} 2$/m);
  });
});

describe('docs/grafana/cryo-server.json', () => {
  it('queries only metric names the server exposes', async () => {
    const dashboard = JSON.parse(readFileSync(new URL('../../../../docs/grafana/cryo-server.json', import.meta.url), 'utf8')) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
    };
    const exposed = new Map<string, string>();
    for (const [, name, type] of (await scrape()).matchAll(/^# TYPE (\S+) (\S+)$/gm)) exposed.set(name ?? '', type ?? '');
    const used = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => [...t.expr.matchAll(/\b(?:cryo|process|nodejs)_[a-z0-9_]+/g)].map((m) => m[0])));
    expect(used.length).toBeGreaterThan(10);
    for (const name of used) {
      const family = name.replace(/_(bucket|sum|count)$/, '');
      const known = exposed.get(name) ?? (exposed.get(family) === 'histogram' ? 'histogram' : undefined);
      expect(known, `${name} is not on /metrics`).toBeDefined();
    }
  });
});

describe('operations by kind and outcome', () => {
  it('counts done, failed, cancelled and executor_lost, with the time from enqueue to end', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    expect(await h.server.metrics.value('cryo_operations_total', { kind: 'create_sandbox', outcome: 'done' })).toBe(1);

    const snap = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    expect(snap.status).toBe(202);
    const op = await executor.pollOne('snapshot');
    h.clock.advanceSecs(3);
    await executor.fail(op.op_id, 'UNAVAILABLE', 'registry 127.0.0.1:5001 is unreachable');
    expect(await h.server.metrics.value('cryo_operations_total', { kind: 'snapshot', outcome: 'failed' })).toBe(1);
    expect(await sample('cryo_operation_duration_seconds_sum', { kind: 'snapshot', outcome: 'failed' })).toBe(3);

    // A create the executor never picked up is withdrawn when its sandbox is deleted.
    const pending = await h.api('POST', '/sandboxes', { image: 'busybox:latest' });
    await h.api('DELETE', `/sandboxes/${String(pending.json.sandbox_id)}`);
    expect(await h.server.metrics.value('cryo_operations_total', { kind: 'create_sandbox', outcome: 'cancelled' })).toBe(1);

    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    await executor.pollOne('snapshot');
    h.clock.advanceSecs(16);
    await h.server.monitor.runOnce();
    expect(await h.server.metrics.value('cryo_operations_total', { kind: 'snapshot', outcome: 'executor_lost' })).toBe(1);
    expect(await h.server.metrics.value('cryo_operations_total', { kind: 'snapshot', outcome: 'done' })).toBe(0);
  });
});

describe('snapshot phases and restores', () => {
  it('observes pause, commit, push and index durations from the results the executor reports', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const pushed = await executor.pushNext(); // timings: pause 15 ms, commit 70 ms, push 300 ms
    expect(await sample('cryo_snapshot_phase_seconds_sum', { phase: 'pause' })).toBeCloseTo(0.015, 9);
    expect(await sample('cryo_snapshot_phase_seconds_sum', { phase: 'commit' })).toBeCloseTo(0.07, 9);
    expect(await sample('cryo_snapshot_phase_seconds_sum', { phase: 'push' })).toBeCloseTo(0.3, 9);
    expect(await sample('cryo_snapshot_phase_seconds_bucket', { phase: 'pause', le: '0.01' })).toBe(0);
    expect(await sample('cryo_snapshot_phase_seconds_bucket', { phase: 'pause', le: '0.025' })).toBe(1);
    expect(await sample('cryo_snapshot_phase_seconds_count', { phase: 'index' })).toBeUndefined();

    const index = await executor.pollOne('build_index');
    await executor.ok(index.op_id, {
      clip_index_ref: `${pushed.ref}.clip`, index_ms: 2400, index_size_bytes: 5000, image_size_bytes: 1_000_000,
    });
    expect(await sample('cryo_snapshot_phase_seconds_count', { phase: 'index' })).toBe(1);
    expect(await sample('cryo_snapshot_phase_seconds_sum', { phase: 'index' })).toBeCloseTo(2.4, 9);
    expect(await h.server.metrics.value('cryo_operations_total', { kind: 'build_index', outcome: 'done' })).toBe(1);
  });

  it('observes every phase of the timings: a pre-copy snapshot\'s precopy and flatten, not its absent commit', async () => {
    h.server.metrics.snapshotTimings({ pause_ms: 4, precopy_ms: 1200, commit_ms: null, flatten_ms: 2500, push_ms: 50, index_ms: 30 });
    expect(await sample('cryo_snapshot_phase_seconds_sum', { phase: 'precopy' })).toBeCloseTo(1.2, 9);
    expect(await sample('cryo_snapshot_phase_seconds_sum', { phase: 'flatten' })).toBeCloseTo(2.5, 9);
    expect(await sample('cryo_snapshot_phase_seconds_sum', { phase: 'index' })).toBeCloseTo(0.03, 9);
    expect(await sample('cryo_snapshot_phase_seconds_count', { phase: 'commit' })).toBeUndefined();
  });

  it('observes the time from a restore request to its sandbox running, by mode', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const { snapshotId } = await executor.pushNext({ clip: true });
    const lazyHost = h.executor('exec-l', { capabilities: { lazy: true, lazy_unavailable_reason: null } });
    await lazyHost.heartbeat();

    expect((await h.api('POST', `/snapshots/${snapshotId}/restore`, { executor_id: 'exec-a' })).status).toBe(202);
    h.clock.advanceSecs(7);
    await executor.startNext();
    expect((await h.api('POST', `/snapshots/${snapshotId}/restore`, { mode: 'lazy' })).status).toBe(202);
    h.clock.advance(800);
    await lazyHost.startNext();

    expect(await sample('cryo_restore_to_running_seconds_sum', { mode: 'eager' })).toBe(7);
    expect(await sample('cryo_restore_to_running_seconds_sum', { mode: 'lazy' })).toBeCloseTo(0.8, 9);
    expect(await sample('cryo_restore_to_running_seconds_count', { mode: 'lazy' })).toBe(1);
    // A sandbox created from an image is not a restore.
    expect(await sample('cryo_restore_to_running_seconds_count', { mode: 'eager' })).toBe(1);
  });
});
