import { readFileSync } from 'node:fs';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { emptyFetchStats } from '@cryo/clip';
import { ExecutorMetrics } from './metrics';
import { MetricsEndpoint } from './services/metrics-endpoint';

/** The value of one sample line of the text format, e.g. `clip_range_get_count` or `cryo_cache_hits_total{tier="disk"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Every series' value in `text` is the one expected (undefined: the series is absent). */
function expectSamples(text: string, expected: Record<string, number | undefined>): void {
  expect(Object.fromEntries(Object.keys(expected).map((series) => [series, sample(text, series)]))).toEqual(expected);
}

describe('ExecutorMetrics', () => {
  it('adds what mount processes counted since the last read, and keeps the counts of mounts that ended', async () => {
    const m = new ExecutorMetrics();
    const fetch = (over: Partial<ReturnType<typeof emptyFetchStats>>) => ({ ...emptyFetchStats(), ...over });
    m.mountStats([{ key: 'a#1', fetch: fetch({ requests: 2, bytes: 1000, spansFetched: 2, diskHits: 1, diskHitBytes: 4096, inflateSeconds: 0.5 }) }]);
    m.mountStats([
      { key: 'a#1', fetch: fetch({ requests: 3, bytes: 1500, spansFetched: 3, diskHits: 1, diskHitBytes: 4096, inflateSeconds: 0.75, fallbacks: 2 }) },
      { key: 'b#2', fetch: fetch({ requests: 1, bytes: 10, memoryHits: 4, memoryHitBytes: 100 }) },
    ]);
    // a#1 taken down: its last counts arrive once more (partial), then it is gone from the list.
    m.mountStats([{ key: 'a#1', fetch: fetch({ requests: 4, bytes: 2000, spansFetched: 4, diskHits: 1, diskHitBytes: 4096, inflateSeconds: 1, fallbacks: 3 }) }], true);
    m.mountStats([{ key: 'b#2', fetch: fetch({ requests: 1, bytes: 10, memoryHits: 4, memoryHitBytes: 100 }) }]);
    // A new process behind a#1's status file starts from zero.
    m.mountStats([{ key: 'a#1', fetch: fetch({ requests: 1, bytes: 5 }) }, { key: 'b#2', fetch: fetch({ requests: 1, bytes: 10, memoryHits: 4, memoryHitBytes: 100 }) }]);
    const text = await m.render();
    expectSamples(text, {
      'clip_range_get_count': 6,
      'clip_range_get_bytes_total': 2015,
      'clip_inflate_seconds_total': 1,
      'clip_tier_fallbacks_total': 3,
      'cryo_cache_hits_total{tier="disk"}': 1,
      'cryo_cache_hit_bytes_total{tier="disk"}': 4096,
      'cryo_cache_hits_total{tier="memory"}': 4,
      'cryo_cache_misses_total{tier="disk"}': 4,
      'cryo_cache_miss_bytes_total{tier="disk"}': 2015,
    });
  });

  it('times restores to running and to their first exec by mode; only the first exec counts', async () => {
    const m = new ExecutorMetrics();
    m.restoreStarted('sbx-lazy', 'lazy', performance.now() - 200);
    m.restoreStarted('sbx-eager', 'eager', performance.now() - 100);
    m.execEnded('sbx-lazy');
    m.execEnded('sbx-lazy');
    m.execEnded('sbx-plain'); // never restored: no first exec of a restore
    const text = await m.render();
    expectSamples(text, {
      'cryo_executor_restore_to_running_seconds_count{mode="lazy"}': 1,
      'cryo_executor_restore_to_running_seconds_count{mode="eager"}': 1,
      'cryo_executor_restore_to_first_exec_seconds_count{mode="lazy"}': 1,
      'cryo_executor_restore_to_first_exec_seconds_count{mode="eager"}': undefined,
      'clip_first_exec_ms_count': 1,
    });
    expect(sample(text, 'clip_first_exec_ms_sum')).toBeGreaterThanOrEqual(200);
  });

  it('takes snapshot phases from the timings fields, index builds, operations and image cache hits', async () => {
    const m = new ExecutorMetrics();
    m.snapshotTimings({ pause_ms: 15, commit_ms: null, precopy_ms: 800, flatten_ms: 2500, push_ms: 300, index_ms: 900 });
    m.indexBuilt(900, 12_345);
    m.operationEnded('snapshot', 'done', 1.2);
    m.operationEnded('exec', 'failed', 0.1);
    m.imageCache(false, 5_000_000);
    m.imageCache(true, 0);
    const text = await m.render();
    expectSamples(text, {
      'cryo_snapshot_phase_seconds_count{phase="pause"}': 1,
      'cryo_snapshot_phase_seconds_sum{phase="precopy"}': 0.8,
      'cryo_snapshot_phase_seconds_sum{phase="flatten"}': 2.5,
      'cryo_snapshot_phase_seconds_count{phase="commit"}': undefined,
      'clip_index_build_seconds_sum': 0.9,
      'clip_index_bytes_total': 12_345,
      'cryo_executor_operations_total{kind="snapshot",outcome="done"}': 1,
      'cryo_executor_operations_total{kind="exec",outcome="failed"}': 1,
      'cryo_cache_misses_total{tier="image"}': 1,
      'cryo_cache_miss_bytes_total{tier="image"}': 5_000_000,
      'cryo_cache_hits_total{tier="image"}': 1,
      'cryo_heartbeat_age_seconds': -1,
    });
    expect(text).toContain('process_cpu_seconds_total');
  });
});

describe('docs/grafana/cryo-executor.json', () => {
  it('queries only metric names the executor exposes', async () => {
    const dashboard = JSON.parse(readFileSync(new URL('../../../docs/grafana/cryo-executor.json', import.meta.url), 'utf8')) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
    };
    const exposed = new Map<string, string>();
    for (const [, name, type] of (await new ExecutorMetrics().render()).matchAll(/^# TYPE (\S+) (\S+)$/gm)) exposed.set(name ?? '', type ?? '');
    const used = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => [...t.expr.matchAll(/\b(?:cryo|clip|process|nodejs)_[a-z0-9_]+/g)].map((m) => m[0])));
    expect(used.length).toBeGreaterThan(20);
    for (const name of used) {
      const family = name.replace(/_(bucket|sum|count)$/, '');
      const known = exposed.get(name) ?? (exposed.get(family) === 'histogram' ? 'histogram' : undefined);
      expect(known, `${name} is not on the executor's /metrics`).toBeDefined();
    }
    // Every family the issue names has a panel.
    for (const name of ['clip_index_build_seconds', 'clip_index_bytes_total', 'clip_first_exec_ms', 'clip_range_get_bytes_total', 'clip_range_get_count',
      'clip_inflate_seconds_total', 'cryo_snapshot_phase_seconds', 'cryo_cache_hits_total', 'cryo_cache_misses_total', 'cryo_cache_size_bytes',
      'cryo_executor_operations_total', 'cryo_heartbeat_age_seconds']) {
      expect(used.some((u) => u === name || u.replace(/_(bucket|sum|count)$/, '') === name), name).toBe(true);
    }
  });
});

describe('MetricsEndpoint', () => {
  let endpoint: MetricsEndpoint | undefined;
  afterEach(async () => {
    await endpoint?.stop();
  });

  it('serves GET /metrics after a refresh, and nothing else', async () => {
    const metrics = new ExecutorMetrics();
    let refreshes = 0;
    endpoint = new MetricsEndpoint({
      host: '127.0.0.1', port: 0, metrics, log: pino({ level: 'silent' }),
      refresh: async () => {
        refreshes++;
        metrics.spanCache({ used_bytes: 4096, evicted_spans: 3 * refreshes, evicted_bytes: 3 * 65536 * refreshes });
      },
    });
    const { port } = await endpoint.start();
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(sample(text, 'cryo_cache_size_bytes{tier="disk"}')).toBe(4096);
    expect(refreshes).toBeGreaterThanOrEqual(1);
    // Cumulative service counts become counter increments: after n refreshes, 3n spans.
    expect(sample(text, 'cryo_cache_evictions_total{tier="disk"}')).toBe(3 * refreshes);
    expect(sample(text, 'cryo_cache_evicted_bytes_total{tier="disk"}')).toBe(3 * 65536 * refreshes);
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
  });
});
