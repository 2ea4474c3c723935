import { setTimeout as delay } from 'node:timers/promises';
import { CryoWaitTimeoutError } from './client-errors';

export interface WaitOptions<T> {
  /** Time between two polls. Default 500 ms. */
  intervalMs?: number;
  /** Give up after this long (CryoWaitTimeoutError). Default: wait forever. */
  timeoutMs?: number;
  /** Called with every polled value, including the first and the last. */
  onUpdate?: (value: T) => void;
  signal?: AbortSignal;
}

/**
 * Poll `read` until `done` holds. The server has no watch API, so waits are polls; the interval
 * is short because the interesting transitions (pending -> running, creating -> active) take
 * from tens of milliseconds to a few seconds.
 */
export async function pollUntil<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  options: WaitOptions<T> & {
    /** Says what was still not reached, for the timeout message. */
    describe: (last: T) => string;
    sleep?: (ms: number, signal?: AbortSignal) => Promise<unknown>;
  },
): Promise<T> {
  const interval = options.intervalMs ?? 500;
  const sleep = options.sleep ?? ((ms: number, signal?: AbortSignal) => delay(ms, undefined, { signal }));
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  for (;;) {
    const value = await read();
    options.onUpdate?.(value);
    if (done(value)) return value;
    if (Date.now() + interval > deadline) {
      const secs = Math.round((options.timeoutMs ?? 0) / 1000);
      throw new CryoWaitTimeoutError(`gave up waiting after ${secs}s: ${options.describe(value)}`);
    }
    await sleep(interval, options.signal);
  }
}
