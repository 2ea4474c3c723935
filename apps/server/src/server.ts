/**
 * The composition root: opens the database, wires stores and services, builds the HTTP app and
 * runs the background duties (executor monitor, snapshot reaper, sandbox timeouts, pruning).
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from './app';
import { systemClock, type Clock } from './clock';
import { assertSafeListen, type ServerConfig } from './config';
import { openDatabase, type Database } from './db/database';
import { createLogger } from './logger';
import { ExecutorMonitor } from './services/executor-monitor';
import { ExecutorService } from './services/executor-service';
import { Metrics, type GaugeSamples } from './services/metrics';
import { OciSnapshotRegistry } from './services/oci-snapshot-registry';
import { OperationOutcomes } from './services/operation-outcomes';
import { OperationQueue } from './services/operation-queue';
import { OperationSignals } from './services/operation-signals';
import { PeriodicTask } from './services/periodic-task';
import { Placement } from './services/placement';
import { RetentionPruner } from './services/retention-pruner';
import { SandboxService } from './services/sandbox-service';
import { SandboxTimeouts } from './services/sandbox-timeouts';
import { SnapshotReaper } from './services/snapshot-reaper';
import type { SnapshotImageRegistry } from './services/snapshot-registry';
import { SnapshotService } from './services/snapshot-service';
import { ExecutorStore } from './store/executors';
import { NamespaceStore } from './store/namespaces';
import { OperationStore } from './store/operations';
import { ReaperRecordStore } from './store/reaper-records';
import { SandboxStore } from './store/sandboxes';
import { SnapshotStore } from './store/snapshots';

export interface ServerOptions {
  clock?: Clock;
  logger?: Logger;
  /** Replaces the registry built from `snapshot_registry` (tests); null = none. */
  registry?: SnapshotImageRegistry | null;
}

const MONITOR_INTERVAL_MS = 1000;
const TIMEOUT_INTERVAL_MS = 1000;
const PRUNE_INTERVAL_MS = 10 * 60 * 1000;

export class CryoServer {
  readonly metrics = new Metrics();
  readonly signals = new OperationSignals();
  readonly stores;
  readonly queue: OperationQueue;
  readonly outcomes: OperationOutcomes;
  readonly placement: Placement;
  readonly sandboxService: SandboxService;
  readonly snapshotService: SnapshotService;
  readonly executorService: ExecutorService;
  readonly monitor: ExecutorMonitor;
  readonly reaper: SnapshotReaper;
  readonly timeouts: SandboxTimeouts;
  readonly pruner: RetentionPruner;
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
    const stores = {
      namespaces: new NamespaceStore(db),
      sandboxes: new SandboxStore(db),
      snapshots: new SnapshotStore(db),
      executors: new ExecutorStore(db),
      operations: new OperationStore(db),
      records: new ReaperRecordStore(db),
    };
    this.stores = stores;
    this.ownRegistry = registry === undefined && config.snapshot_registry !== undefined
      ? new OciSnapshotRegistry(config.snapshot_registry)
      : null;
    const imageRegistry = registry === undefined ? this.ownRegistry : registry;

    this.queue = new OperationQueue(stores.operations, this.signals, clock, config.operations);
    this.placement = new Placement(stores.executors, stores.sandboxes);
    this.reaperTask = new PeriodicTask(
      'snapshot reaper',
      config.snapshots.reaper_interval_secs * 1000,
      () => this.reaper.runOnce(),
      logger,
    );
    const wakeReaper = (): void => this.reaperTask.trigger();
    this.outcomes = new OperationOutcomes({
      db, ...stores, queue: this.queue, signals: this.signals, metrics: this.metrics, clock, logger,
      onDeletionReady: wakeReaper,
    });
    this.sandboxService = new SandboxService({
      db, ...stores, queue: this.queue, signals: this.signals, placement: this.placement, metrics: this.metrics, clock, config, logger,
    });
    this.snapshotService = new SnapshotService({
      db, ...stores, queue: this.queue, sandboxService: this.sandboxService, metrics: this.metrics, clock, config, logger,
      onDeleteRequested: wakeReaper,
    });
    this.executorService = new ExecutorService({ db, ...stores, queue: this.queue, clock, config, logger });
    this.monitor = new ExecutorMonitor({
      db, ...stores, queue: this.queue, outcomes: this.outcomes, placement: this.placement, metrics: this.metrics,
      clock, config, logger,
    });
    this.reaper = new SnapshotReaper({
      db, ...stores, queue: this.queue, registry: imageRegistry, metrics: this.metrics, clock,
      config: config.snapshots, logger: logger.child({ component: 'reaper' }),
    });
    this.timeouts = new SandboxTimeouts(db, stores.sandboxes, this.queue, this.metrics, clock, logger);
    this.pruner = new RetentionPruner({ db, ...stores, metrics: this.metrics, clock, config });
    this.tasks = [
      new PeriodicTask('executor monitor', MONITOR_INTERVAL_MS, () => this.monitor.runOnce(), logger),
      this.reaperTask,
      new PeriodicTask('sandbox timeouts', TIMEOUT_INTERVAL_MS, () => this.timeouts.runOnce(), logger),
      new PeriodicTask('retention pruner', PRUNE_INTERVAL_MS, () => this.pruner.runOnce(), logger),
    ];
  }

  /** Opens the database and builds the app; nothing listens and no background task runs yet. */
  static async create(config: ServerConfig, options: ServerOptions = {}): Promise<CryoServer> {
    const logger = options.logger ?? createLogger(config.log_level);
    const db = openDatabase(config.database);
    const server = new CryoServer(config, db, options.clock ?? systemClock, logger, options.registry);
    try {
      server.appInstance = await buildApp({
        config,
        logger,
        db,
        sandboxService: server.sandboxService,
        snapshotService: server.snapshotService,
        executorService: server.executorService,
        executors: server.stores.executors,
        queue: server.queue,
        outcomes: server.outcomes,
        metrics: server.metrics,
        gauges: () => server.gauges(),
      });
    } catch (err) {
      db.close();
      throw err;
    }
    return server;
  }

  get app(): FastifyInstance {
    if (this.appInstance === null) throw new Error('server is not built');
    return this.appInstance;
  }

  startBackgroundTasks(): void {
    for (const task of this.tasks) task.start();
    // Whatever expired while the server was down is handled now, not one interval later.
    this.reaperTask.trigger();
  }

  async listen(): Promise<string> {
    assertSafeListen(this.config);
    const address = await this.app.listen({ host: this.config.listen.host, port: this.config.listen.port });
    return address;
  }

  /** Stops background duties, wakes long polls, closes HTTP, then the database. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all(this.tasks.map((t) => t.stop()));
      this.signals.close();
      await this.appInstance?.close();
      await this.ownRegistry?.close();
      this.db.close();
    })();
    return this.closing;
  }

  /** The state gauges of /metrics, read from the database at scrape time. */
  gauges(): GaugeSamples {
    const { executors, sandboxes, snapshots } = this.stores;
    const now = this.clock.now();
    return {
      cryo_executors: executors.countByState().map((r) => ({ labels: { state: r.state }, value: r.count })),
      cryo_sandboxes: sandboxes.countByStatus().map((r) => ({ labels: { status: r.status }, value: r.count })),
      cryo_snapshots: snapshots.countByStatus().map((r) => ({ labels: { status: r.status }, value: r.count })),
      cryo_executor_heartbeat_age_seconds: executors.list().map((e) => ({
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
