/**
 * Leader election among server replicas that share a database. Duties that must run once (the
 * TTL reaper, executor liveness, sandbox timeouts, pruning) run only on the replica holding the
 * `duties` lease: a row with a holder and an expiry, taken and renewed by compare-and-set. A
 * replica that dies stops renewing; another takes the lease once it has expired, within one
 * heartbeat timeout (lease = timeout - interval, tried every interval or faster). A clean
 * shutdown releases it at once. The duties themselves are compare-and-set in SQL as well, so a
 * deposed leader that has not noticed yet cannot delete a snapshot or lose an executor twice.
 */
import type { Logger } from 'pino';
import type { Database } from '../db/database';

export interface LeadershipOptions {
  db: Database;
  /** The lease's name (one per group of duties). */
  name: string;
  /** How long a taken lease lasts without renewal. */
  leaseMs: number;
  /** How often the holder renews and the others try to take it. */
  renewMs: number;
  /**
   * The database serves one server only (SQLite): take the lease at once from whoever holds it
   * (a predecessor that crashed) instead of waiting for it to expire.
   */
  takeOver?: boolean;
  logger: Logger;
  /** Called when this replica becomes the leader. */
  onElected(): void;
  /** Called when it stops being the leader (lease lost, database unreachable past the lease, stop). */
  onDeposed(): Promise<void>;
}

export class Leadership {
  private timer: NodeJS.Timeout | null = null;
  private tick: Promise<void> | null = null;
  private leading = false;
  private leaderUntil = 0;
  private stopped = true;

  constructor(private readonly options: LeadershipOptions) {}

  /** True while this replica holds an unexpired lease. */
  get isLeader(): boolean {
    return this.leading && Date.now() < this.leaderUntil;
  }

  get replicaId(): string {
    return this.options.db.replicaId;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops trying, ends the duties and releases the lease so another replica takes over now. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.tick;
    if (!this.leading) return;
    await this.stepDown('shutting down');
    try {
      await this.options.db.stores.leases.release(this.options.name, this.replicaId);
    } catch (err) {
      this.options.logger.warn({ error: err instanceof Error ? err.message : String(err) }, 'could not release the leader lease');
    }
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      this.tick = this.renew().finally(() => {
        this.tick = null;
        if (!this.stopped) this.schedule(this.options.renewMs);
      });
    }, delayMs);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    const { db, name, leaseMs, logger } = this.options;
    const now = Date.now();
    let held: boolean;
    try {
      held = await db.stores.leases.acquire(name, this.replicaId, now, now + leaseMs, this.options.takeOver === true);
    } catch (err) {
      // The database may be back before the lease runs out; until then the duties keep going.
      logger.warn({ error: err instanceof Error ? err.message : String(err) }, 'could not renew the leader lease');
      if (this.leading && Date.now() >= this.leaderUntil) await this.stepDown('lease expired while the database was unreachable');
      return;
    }
    if (this.stopped) return;
    if (held) {
      this.leaderUntil = now + leaseMs;
      if (!this.leading) {
        this.leading = true;
        logger.info({ replica_id: this.replicaId, lease: name }, 'elected leader: running the once-only duties here');
        this.options.onElected();
      }
    } else if (this.leading) {
      await this.stepDown('another replica holds the lease');
    }
  }

  private async stepDown(reason: string): Promise<void> {
    this.leading = false;
    this.leaderUntil = 0;
    this.options.logger.warn({ replica_id: this.replicaId, reason }, 'no longer the leader; duties stopped');
    await this.options.onDeposed();
  }
}
