/**
 * Wake-ups. A long poll sleeps here until work is queued for its executor, and an exec request
 * sleeps until its operation ends; nobody polls the database in a loop. The wake-ups come from
 * committed transactions of this replica and, on PostgreSQL, of every other one (NOTIFY). The
 * database stays the truth: a wake-up only says "look again".
 */
import type { Database } from '../db/database';

/** One-shot callbacks by key. */
class Waiters<T> {
  private readonly byKey = new Map<string, Set<(value: T) => void>>();

  /** Registers `callback`; returns a function that unregisters it. */
  add(key: string, callback: (value: T) => void): () => void {
    let set = this.byKey.get(key);
    if (set === undefined) {
      set = new Set();
      this.byKey.set(key, set);
    }
    const own = set;
    own.add(callback);
    return () => {
      own.delete(callback);
      if (own.size === 0 && this.byKey.get(key) === own) this.byKey.delete(key);
    };
  }

  fire(key: string, value: T): void {
    const set = this.byKey.get(key);
    if (set === undefined) return;
    this.byKey.delete(key);
    for (const callback of set) callback(value);
  }

  fireAll(value: T): void {
    for (const key of [...this.byKey.keys()]) this.fire(key, value);
  }
}

export class OperationSignals {
  private readonly work = new Waiters<void>();
  private readonly ends = new Waiters<'ended' | 'timeout' | 'closed'>();
  private closed = false;
  private readonly unsubscribe: Array<() => void> = [];

  /** Listens to the database's events: queued work, ended operations, missed notifications. */
  attach(db: Database): void {
    this.unsubscribe.push(
      db.on('work', (executorId) => this.notifyWork(executorId)),
      db.on('op_end', (opId) => this.ended(opId)),
      db.on('resync', () => {
        this.work.fireAll(undefined);
        this.ends.fireAll('ended');
      }),
    );
  }

  get isClosed(): boolean {
    return this.closed;
  }

  notifyWork(executorId: string): void {
    this.work.fire(executorId, undefined);
  }

  /** Resolves when work is queued for the executor, after `ms`, on abort or on close. */
  waitForWork(executorId: string, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.closed || signal?.aborted === true) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        remove();
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      const remove = this.work.add(executorId, done);
    });
  }

  ended(opId: string): void {
    this.ends.fire(opId, 'ended');
  }

  /**
   * Resolves `ended` when the operation may have ended (read it to know how), `timeout` after
   * `ms` (or on abort), or `closed` on shutdown.
   */
  waitForEnd(opId: string, ms: number, signal?: AbortSignal): Promise<'ended' | 'timeout' | 'closed'> {
    if (this.closed) return Promise.resolve('closed');
    return new Promise((resolve) => {
      const settle = (end: 'ended' | 'timeout' | 'closed'): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        remove();
        resolve(end);
      };
      const aborted = (): void => settle('timeout');
      const timer = setTimeout(() => settle('timeout'), ms);
      signal?.addEventListener('abort', aborted, { once: true });
      const remove = this.ends.add(opId, settle);
    });
  }

  /** Wakes every sleeper; used on shutdown so long polls and execs answer at once. */
  close(): void {
    this.closed = true;
    for (const off of this.unsubscribe.splice(0)) off();
    this.work.fireAll(undefined);
    this.ends.fireAll('closed');
  }
}
