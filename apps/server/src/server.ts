/**
 * The composition root: opens the database, wires stores and services, builds the HTTP app and
 * runs the background duties (executor monitor, snapshot reaper, sandbox timeouts, pruning) —
 * on this replica only while it is the elected leader (see services/leadership.ts). Any replica
 * answers every API and executor call.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from './app';
import { systemClock, type Clock } from './clock';
import { assertSafeListen, type ServerConfig } from './config';
import { Database } from './db/database';
import { describeTarget } from './db/target';
import { createLogger } from './logger';
import { ExecutorMonitor } from './services/executor-monitor';
import { ExecutorService } from './services/executor-service';
import { ForkService } from './services/fork-service';
import { Metrics, type GaugeSamples } from './services/metrics';
import { Leadership } from './services/leadership';
import { OciSnapshotRegistry } from './services/oci-snapshot-registry';
import { OperationOutcomes } from './services/operation-outcomes';
import { OperationQueue } from './services/operation-queue';
import { OperationSignals } from './services/operation-signals';
import { PeriodicTask } from './services/periodic-task';
import { Placement } from './services/placement';
import { RetentionPruner } from './services/retention-pruner';
import { RollbackService } from './services/rollback-service';
import { SandboxService } from './services/sandbox-service';
import { SandboxTimeouts } from './services/sandbox-timeouts';
import { SnapshotReaper } from './services/snapshot-reaper';
import type { SnapshotImageRegistry } from './services/snapshot-registry';
import { SnapshotFollowUps } from './services/snapshot-follow-ups';
import { SnapshotService } from './services/snapshot-service';
import type { Stores } from './store/stores';

export interface ServerOptions {
  clock?: Clock;
  logger?: Logger;
  /** Replaces the registry built from `snapshot_registry` (tests); null = none. */
  registry?: SnapshotImageRegistry | null;
  /** PostgreSQL: work in this schema instead of `public` (tests give each server its own). */
  pgSchema?: string;
}

/** The lease that decides which replica runs the once-only duties. */
export const DUTIES_LEASE = 'duties';

const MONITOR_INTERVAL_MS = 1000;
const TIMEOUT_INTERVAL_MS = 1000;
const PRUNE_INTERVAL_MS = 10 * 60 * 1000;

export class CryoServer {
  readonly metrics = new Metrics();
  readonly signals = new OperationSignals();
  readonly queue: OperationQueue;
  readonly outcomes: OperationOutcomes;
  readonly placement: Placement;
  readonly sandboxService: SandboxService;
  readonly snapshotService: SnapshotService;
  readonly forkService: ForkService;
  readonly rollbackService: RollbackService;
  readonly executorService: ExecutorService;
  readonly monitor: ExecutorMonitor;
  readonly reaper: SnapshotReaper;
  readonly timeouts: SandboxTimeouts;
  readonly pruner: RetentionPruner;
  readonly leadership: Leadership;
  private readonly tasks: PeriodicTask[];
  private readonly reaperTask: PeriodicTask;
  private readonly ownRegistry: OciSnapshotRegistry | null;
  private appInstance: FastifyInstance | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    readonly config: ServerConfig,
    readonly db: Database,
    readonly clock: Clock,
    readonly logger: Logger,
    registry: SnapshotImageRegistry | null | undefined,
  ) {
    this.signals.attach(db);
    this.ownRegistry = registry === undefined && config.snapshot_registry !== undefined
      ? new OciSnapshotRegistry(config.snapshot_registry)
      : null;
    const imageRegistry = registry === undefined ? this.ownRegistry : registry;

    this.queue = new OperationQueue(db, this.signals, clock, config.operations);
    this.placement = new Placement();
    this.reaperTask = new PeriodicTask(
      'snapshot reaper',
      config.snapshots.reaper_interval_secs * 1000,
      () => this.reaper.runOnce(),
      logger,
    );
    // The reaper runs on the leader; a deletion that can progress wakes it wherever it runs.
    const wakeReaper = (tx: Stores): Promise<void> => tx.publish('wake', 'reaper');
    db.on('wake', (duty) => {
      if (duty === 'reaper') this.reaperTask.trigger();
    });
    const followUps = new SnapshotFollowUps({ queue: this.queue, metrics: this.metrics, clock, logger, onDeletionReady: wakeReaper });
    this.outcomes = new OperationOutcomes({
      db, queue: this.queue, metrics: this.metrics, clock, logger, onDeletionReady: wakeReaper, followUps,
    });
    this.sandboxService = new SandboxService({
      db, queue: this.queue, signals: this.signals, placement: this.placement, metrics: this.metrics, clock, config, logger,
    });
    this.snapshotService = new SnapshotService({
      db, queue: this.queue, sandboxService: this.sandboxService, metrics: this.metrics, clock, config, logger,
      onDeleteRequested: wakeReaper, followUps,
    });
    this.forkService = new ForkService({ db, sandboxService: this.sandboxService, snapshotService: this.snapshotService, logger });
    this.rollbackService = new RollbackService({ db, queue: this.queue, clock, logger });
    this.executorService = new ExecutorService({ db, queue: this.queue, clock, config, logger });
    this.monitor = new ExecutorMonitor({
      db, queue: this.queue, outcomes: this.outcomes, placement: this.placement, metrics: this.metrics,
      clock, config, logger,
    });
    this.reaper = new SnapshotReaper({
      db, queue: this.queue, registry: imageRegistry, metrics: this.metrics, clock,
      config: config.snapshots, logger: logger.child({ component: 'reaper' }),
    });
    this.timeouts = new SandboxTimeouts(db, this.queue, this.metrics, clock, logger);
    this.pruner = new RetentionPruner({ db, metrics: this.metrics, clock, config });
    this.tasks = [
      new PeriodicTask('executor monitor', MONITOR_INTERVAL_MS, () => this.monitor.runOnce(), logger),
      this.reaperTask,
      new PeriodicTask('sandbox timeouts', TIMEOUT_INTERVAL_MS, () => this.timeouts.runOnce(), logger),
      new PeriodicTask('retention pruner', PRUNE_INTERVAL_MS, () => this.pruner.runOnce(), logger),
    ];
    const { heartbeat_interval_secs: intervalSecs, heartbeat_timeout_secs: timeoutSecs } = config.executors;
    const leaseMs = (timeoutSecs - intervalSecs) * 1000;
    this.leadership = new Leadership({
      db,
      name: DUTIES_LEASE,
      leaseMs,
      renewMs: Math.min(intervalSecs * 1000, leaseMs / 3),
      takeOver: db.dialect === 'sqlite',
      logger,
      onElected: () => {
        for (const task of this.tasks) task.start();
        // Whatever expired while no replica led is handled now, not one interval later.
        this.reaperTask.trigger();
      },
      onDeposed: async () => {
        await Promise.all(this.tasks.map((t) => t.stop()));
      },
    });
  }

  /** The stores outside any transaction. */
  get stores(): Stores {
    return this.db.stores;
  }

  /** Opens the database and builds the app; nothing listens and no background task runs yet. */
  static async create(config: ServerConfig, options: ServerOptions = {}): Promise<CryoServer> {
    const logger = options.logger ?? createLogger(config.log_level);
    const db = await Database.open(config.database, {
      logger,
      ...(options.pgSchema === undefined ? {} : { pgSchema: options.pgSchema }),
    });
    logger.info({ database: describeTarget(db.target), replica_id: db.replicaId }, 'database open');
    const server = new CryoServer(config, db, options.clock ?? systemClock, logger, options.registry);
    try {
      server.appInstance = await buildApp({
        config,
        logger,
        db,
        sandboxService: server.sandboxService,
        snapshotService: server.snapshotService,
        forkService: server.forkService,
        rollbackService: server.rollbackService,
        executorService: server.executorService,
        executors: server.stores.executors,
        queue: server.queue,
        outcomes: server.outcomes,
        metrics: server.metrics,
        gauges: () => server.gauges(),
      });
    } catch (err) {
      await db.close();
      throw err;
    }
    return server;
  }

  get app(): FastifyInstance {
    if (this.appInstance === null) throw new Error('server is not built');
    return this.appInstance;
  }

  /** Joins the leader election; the duties run here while this replica is the leader. */
  startBackgroundTasks(): void {
    this.leadership.start();
  }

  async listen(): Promise<string> {
    assertSafeListen(this.config);
    const address = await this.app.listen({ host: this.config.listen.host, port: this.config.listen.port });
    return address;
  }

  /**
   * Stops background duties (releasing the leader lease), wakes long polls, closes HTTP, then the
   * database. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.leadership.stop();
      await Promise.all(this.tasks.map((t) => t.stop()));
      this.signals.close();
      await this.appInstance?.close();
      await this.ownRegistry?.close();
      await this.db.close();
    })();
    return this.closing;
  }

  /** The state gauges of /metrics, read from the database at scrape time. */
  async gauges(): Promise<GaugeSamples> {
    const { executors, sandboxes, snapshots } = this.stores;
    const now = this.clock.now();
    const [byState, sandboxesByStatus, snapshotsByStatus, all] = await Promise.all([
      executors.countByState(), sandboxes.countByStatus(), snapshots.countByStatus(), executors.list(),
    ]);
    return {
      cryo_executors: byState.map((r) => ({ labels: { state: r.state }, value: r.count })),
      cryo_sandboxes: sandboxesByStatus.map((r) => ({ labels: { status: r.status }, value: r.count })),
      cryo_snapshots: snapshotsByStatus.map((r) => ({ labels: { status: r.status }, value: r.count })),
      cryo_executor_heartbeat_age_seconds: all.map((e) => ({
        labels: { executor_id: e.id, state: e.state },
        value: Math.max(0, now - e.lastHeartbeatAt) / 1000,
      })),
    };
  }
}

export interface RunningServer {
  url: string;
  server: CryoServer;
  close(): Promise<void>;
}

/** Builds, listens and starts the background duties; for the binary and for in-process e2e tests. */
export async function startServer(config: ServerConfig, options: ServerOptions = {}): Promise<RunningServer> {
  assertSafeListen(config);
  const server = await CryoServer.create(config, options);
  let url: string;
  try {
    url = await server.listen();
  } catch (err) {
    await server.close();
    throw err;
  }
  server.startBackgroundTasks();
  server.logger.info(`listening on ${url}`);
  return { url, server, close: () => server.close() };
}
