/**
 * The one moment a snapshot may stop a sandbox: pause, capture, resume. Both drivers go through
 * here, so "the sandbox is resumed, always, also when the capture fails" is written once.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export interface PauseControl {
  /** Called before the pause, outside the measured window (e.g. write a pause journal record). */
  prepare?(): void;
  pause(): Promise<void>;
  /** Make the sandbox run again; a no-op when it is not paused (or gone). */
  resume(): Promise<void>;
}

/**
 * Resume, retrying with a growing delay (100, 200, ... ms): leaving a sandbox frozen is the one
 * outcome never allowed. Returns undefined once resumed, else the last error (the caller logs
 * it; recovery at the next start tries again).
 */
export async function resumeWithRetries(resume: () => Promise<void>, attempts = 5): Promise<unknown> {
  let lastError: unknown;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      await resume();
      return undefined;
    } catch (err) {
      lastError = err;
      await sleep(100 * (attempt + 1));
    }
  }
  return lastError ?? new Error('resume failed');
}

export interface PausedResult<T> {
  value: T;
  /** From just before the pause to just after the resume, in ms. */
  pauseMs: number;
}

/**
 * Runs `work` while the sandbox is paused. The resume runs whatever `work` does (it is retried);
 * a resume that keeps failing goes to `onStuck` and does not hide `work`'s own error.
 */
export async function pauseWithResume<T>(
  control: PauseControl,
  work: () => Promise<T>,
  onStuck: (err: unknown) => void,
): Promise<PausedResult<T>> {
  control.prepare?.();
  const pausedAt = performance.now();
  let value: T;
  try {
    await control.pause();
    value = await work();
  } finally {
    const stuck = await resumeWithRetries(() => control.resume());
    if (stuck !== undefined) onStuck(stuck);
  }
  return { value, pauseMs: performance.now() - pausedAt };
}

/** Milliseconds rounded to a tenth, as timings are reported. */
export const roundMs = (ms: number): number => Math.round(ms * 10) / 10;
