/**
 * Prometheus metrics, hand-rolled: a few counters, one latency histogram and gauges read from the
 * database at scrape time. Counters restart from zero with the process, as Prometheus expects.
 */

const COUNTERS = {
  cryo_snapshots_created_total: 'Snapshots that became active.',
  cryo_snapshots_failed_total: 'Snapshots whose creation failed.',
  cryo_snapshots_expired_total: 'Snapshots removed because their TTL passed.',
  cryo_snapshots_deleted_total: 'Snapshots removed on request.',
  cryo_snapshot_bytes_reclaimed_total: 'Image bytes of expired and deleted snapshots.',
  cryo_reaper_errors_total: 'Failed attempts to delete a snapshot image (retried with backoff).',
  cryo_sandboxes_timed_out_total: 'Sandboxes ended by their timeout_secs.',
  cryo_executors_lost_total: 'Executors declared lost after missing heartbeats.',
  cryo_operations_requeued_total: 'Operations offered again after their lease expired.',
  cryo_rows_pruned_total: 'Rows removed from the database after their retention period.',
  cryo_http_requests_total: 'HTTP requests answered, by method, route and status.',
} as const;

export type CounterName = keyof typeof COUNTERS;
type Labels = Record<string, string>;

export interface GaugeFamily {
  name: string;
  help: string;
  samples: Array<{ labels: Labels; value: number }>;
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

interface Histogram {
  labels: Labels;
  buckets: number[];
  count: number;
  sum: number;
}

export class Metrics {
  private readonly counters = new Map<CounterName, Map<string, { labels: Labels; value: number }>>();
  private readonly latency = new Map<string, Histogram>();

  inc(name: CounterName, by = 1, labels: Labels = {}): void {
    let series = this.counters.get(name);
    if (series === undefined) {
      series = new Map();
      this.counters.set(name, series);
    }
    const key = labelText(labels);
    const current = series.get(key);
    if (current === undefined) series.set(key, { labels, value: by });
    else current.value += by;
  }

  value(name: CounterName, labels: Labels = {}): number {
    return this.counters.get(name)?.get(labelText(labels))?.value ?? 0;
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.inc('cryo_http_requests_total', 1, { method, route, status: String(status) });
    const labels = { method, route };
    const key = labelText(labels);
    let histogram = this.latency.get(key);
    if (histogram === undefined) {
      histogram = { labels, buckets: LATENCY_BUCKETS.map(() => 0), count: 0, sum: 0 };
      this.latency.set(key, histogram);
    }
    histogram.count += 1;
    histogram.sum += seconds;
    LATENCY_BUCKETS.forEach((bound, i) => {
      if (seconds <= bound) histogram.buckets[i] = (histogram.buckets[i] ?? 0) + 1;
    });
  }

  /** The text exposition format (version 0.0.4). */
  render(gauges: GaugeFamily[] = []): string {
    const lines: string[] = [];
    for (const [name, help] of Object.entries(COUNTERS) as Array<[CounterName, string]>) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      const series = this.counters.get(name);
      if (series === undefined || series.size === 0) {
        if (name !== 'cryo_http_requests_total') lines.push(`${name} 0`);
        continue;
      }
      for (const { labels, value } of series.values()) lines.push(`${name}${labelText(labels)} ${value}`);
    }
    const hist = 'cryo_http_request_duration_seconds';
    lines.push(`# HELP ${hist} HTTP request latency by method and route.`, `# TYPE ${hist} histogram`);
    for (const h of this.latency.values()) {
      LATENCY_BUCKETS.forEach((bound, i) => {
        lines.push(`${hist}_bucket${labelText({ ...h.labels, le: String(bound) })} ${h.buckets[i] ?? 0}`);
      });
      lines.push(`${hist}_bucket${labelText({ ...h.labels, le: '+Inf' })} ${h.count}`);
      lines.push(`${hist}_sum${labelText(h.labels)} ${h.sum}`, `${hist}_count${labelText(h.labels)} ${h.count}`);
    }
    for (const gauge of gauges) {
      lines.push(`# HELP ${gauge.name} ${gauge.help}`, `# TYPE ${gauge.name} gauge`);
      for (const s of gauge.samples) lines.push(`${gauge.name}${labelText(s.labels)} ${s.value}`);
    }
    return `${lines.join('\n')}\n`;
  }
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  const body = entries
    .map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`)
    .join(',');
  return `{${body}}`;
}
