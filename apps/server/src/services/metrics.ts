/**
 * The server's Prometheus metrics, with prom-client: one Registry per server holding Node's
 * default process metrics (process_*, nodejs_*) and cryo's families, declared once in the tables
 * below (name, help, label names, buckets). Services record through the methods of `Metrics`;
 * gauges of stored state (executors, sandboxes, snapshots, heartbeat age) are read from the
 * database at scrape time. Counters restart from zero with the process, as Prometheus expects.
 *
 * The same shape serves the executor (issue 14, next round: clip and cache metrics, restore to
 * first exec): its own `metrics.ts` with its own Registry, tables and methods, and a /metrics
 * route on `metrics.listen`. prom-client stays an app dependency; libs report through their own
 * small interfaces (callbacks, result fields), never through a metrics object.
 * Names and their meaning: docs/metrics.md.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { timingPhases, type OperationKind, type RestoreMode, type Timings } from '@cryo/snapshot';

interface FamilySpec {
  help: string;
  labels: readonly string[];
}

const COUNTERS = {
  cryo_snapshots_created_total: { help: 'Snapshots that became active.', labels: [] },
  cryo_snapshots_failed_total: { help: 'Snapshots whose creation failed.', labels: [] },
  cryo_snapshots_expired_total: { help: 'Snapshots removed because their TTL passed.', labels: [] },
  cryo_snapshots_deleted_total: { help: 'Snapshots removed on request.', labels: [] },
  cryo_snapshot_bytes_reclaimed_total: { help: 'Image bytes of expired and deleted snapshots.', labels: [] },
  cryo_reaper_errors_total: { help: 'Failed attempts to delete a snapshot image (retried with backoff).', labels: [] },
  cryo_sandboxes_timed_out_total: { help: 'Sandboxes ended by their timeout_secs.', labels: [] },
  cryo_executors_lost_total: { help: 'Executors declared lost after missing heartbeats.', labels: [] },
  cryo_operations_requeued_total: { help: 'Operations offered again after their lease expired.', labels: [] },
  cryo_rows_pruned_total: { help: 'Rows removed from the database after their retention period.', labels: [] },
  cryo_restore_fallbacks_total: {
    help: 'Sandboxes started from a snapshot\'s base image because the snapshot was gone (on_expired: base_image).', labels: [],
  },
  cryo_snapshots_retained_out_total: { help: 'Snapshots deleted by a newer snapshot\'s keep_last (retention).', labels: [] },
  cryo_rollbacks_total: { help: 'Rollbacks in place that ended, by outcome (done, failed).', labels: ['outcome'] },
  cryo_http_requests_total: { help: 'HTTP requests answered, by method, route and status.', labels: ['method', 'route', 'status'] },
  cryo_operations_total: {
    help: 'Executor operations that ended, by kind and outcome (done, failed, cancelled, executor_lost, lease_expired).',
    labels: ['kind', 'outcome'],
  },
} as const satisfies Record<string, FamilySpec>;

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** From a few ms (a pause) to ten minutes (a push of a large image over a slow link). */
const PHASE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

const HISTOGRAMS = {
  cryo_http_request_duration_seconds: {
    help: 'HTTP request latency by method and route.', labels: ['method', 'route'], buckets: LATENCY_BUCKETS,
  },
  cryo_snapshot_phase_seconds: {
    help: 'Snapshot phases as the executor measured them: pause (the sandbox frozen), precopy or commit, flatten, push, index (clip index build and push), and any other phase its timings report.',
    labels: ['phase'],
    buckets: PHASE_BUCKETS,
  },
  cryo_restore_to_running_seconds: {
    help: 'From a restore request to its sandbox running, by mode (eager, lazy).', labels: ['mode'], buckets: PHASE_BUCKETS,
  },
  cryo_operation_duration_seconds: {
    help: 'From enqueueing an executor operation to its end, by kind and outcome.', labels: ['kind', 'outcome'], buckets: PHASE_BUCKETS,
  },
} as const satisfies Record<string, FamilySpec & { buckets: readonly number[] }>;

const GAUGES = {
  cryo_executors: { help: 'Executors by state.', labels: ['state'] },
  cryo_sandboxes: { help: 'Sandboxes in the database by status.', labels: ['status'] },
  cryo_snapshots: { help: 'Snapshots in the database by status.', labels: ['status'] },
  cryo_executor_heartbeat_age_seconds: {
    help: 'Seconds since each executor last sent a heartbeat, with its state (ready, draining, lost).',
    labels: ['executor_id', 'state'],
  },
} as const satisfies Record<string, FamilySpec>;

export type CounterName = keyof typeof COUNTERS;
export type GaugeName = keyof typeof GAUGES;
type LabelsOf<Spec extends FamilySpec> = Record<Spec['labels'][number], string>;

/** One value per label set of a gauge, as read at scrape time. */
export type GaugeSamples = {
  [N in GaugeName]: Array<{ labels: LabelsOf<(typeof GAUGES)[N]>; value: number }>;
};

/** How an operation ended: its final state, or why the server ended it. */
export type OperationOutcome = 'done' | 'failed' | 'cancelled' | 'executor_lost' | 'lease_expired';

type Families<T extends Record<string, FamilySpec>, M> = { [N in keyof T]: M };

export class Metrics {
  readonly registry = new Registry();
  private readonly counters: Families<typeof COUNTERS, Counter>;
  private readonly histograms: Families<typeof HISTOGRAMS, Histogram>;
  private readonly gauges: Families<typeof GAUGES, Gauge>;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.counters = mapFamilies(COUNTERS, (name, spec) =>
      new Counter({ name, help: spec.help, labelNames: spec.labels, registers }));
    this.histograms = mapFamilies(HISTOGRAMS, (name, spec) =>
      new Histogram({ name, help: spec.help, labelNames: spec.labels, buckets: [...spec.buckets], registers }));
    this.gauges = mapFamilies(GAUGES, (name, spec) =>
      new Gauge({ name, help: spec.help, labelNames: spec.labels, registers }));
  }

  /** Adds `by` to a counter; a counter with label names needs all of them. */
  inc<N extends CounterName>(name: N, by = 1, labels?: LabelsOf<(typeof COUNTERS)[N]>): void {
    if (labels === undefined) this.counters[name].inc(by);
    else this.counters[name].inc(labels, by);
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.inc('cryo_http_requests_total', 1, { method, route, status: String(status) });
    this.histograms.cryo_http_request_duration_seconds.observe({ method, route }, seconds);
  }

  /** An executor operation ended; `seconds` from its enqueueing. */
  operationEnded(kind: OperationKind, outcome: OperationOutcome, seconds: number): void {
    this.inc('cryo_operations_total', 1, { kind, outcome });
    this.histograms.cryo_operation_duration_seconds.observe({ kind, outcome }, Math.max(0, seconds));
  }

  /** The phase durations an executor reported (`<phase>_ms`; null = the phase did not run): see timingPhases. */
  snapshotTimings(timings: Partial<Timings>): void {
    for (const { phase, seconds } of timingPhases(timings)) this.histograms.cryo_snapshot_phase_seconds.observe({ phase }, seconds);
  }

  /** A restored sandbox started running `seconds` after the restore was requested. */
  restoreRunning(mode: RestoreMode, seconds: number): void {
    this.histograms.cryo_restore_to_running_seconds.observe({ mode }, Math.max(0, seconds));
  }

  /** The current value of a counter (tests and the benchmarks read it). */
  async value<N extends CounterName>(name: N, labels?: LabelsOf<(typeof COUNTERS)[N]>): Promise<number> {
    const { values } = await this.counters[name].get();
    const wanted = Object.entries(labels ?? {});
    const sample = values.find((v) => wanted.every(([k, want]) => String(v.labels[k]) === want));
    return sample?.value ?? 0;
  }

  /** The text exposition format, with the gauges set from `samples` read just before. */
  async render(samples: GaugeSamples | Promise<GaugeSamples>): Promise<string> {
    const read = await samples;
    // Reset and set in one synchronous step, so a concurrent scrape never sees half a family.
    for (const name of Object.keys(GAUGES) as GaugeName[]) {
      const gauge = this.gauges[name];
      gauge.reset();
      for (const sample of read[name]) gauge.set(sample.labels, sample.value);
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function mapFamilies<T extends Record<string, FamilySpec>, M>(
  specs: T,
  make: (name: string, spec: T[keyof T]) => M,
): Families<T, M> {
  const out: Partial<Families<T, M>> = {};
  for (const name of Object.keys(specs) as Array<keyof T & string>) out[name] = make(name, specs[name]);
  return out as Families<T, M>;
}
