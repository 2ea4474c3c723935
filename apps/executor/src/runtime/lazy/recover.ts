/**
 * Recovery of one lazy sandbox after an executor restart (or any time): adopt it when its mount
 * process, mounts and container are intact (resuming one a crashed snapshot left paused); when its
 * mount is gone, take down what is left — never leaving a stale mount — and either remount and
 * rerun it over its kept upper dir (`restart`) or remove it (`end`).
 */
import { existsSync } from 'node:fs';
import { containerName } from '@cryo/snapshot';
import type { Recovery } from '../driver';
import { resumeWithRetries } from '../pause-window';
import { readRecord } from './layout';
import { errorText, type LazySandboxes } from './lifecycle';

export type LazyRecoverMode = 'restart' | 'end';

export async function recoverLazySandbox(sandboxes: LazySandboxes, sandboxId: string, mode: LazyRecoverMode): Promise<Recovery> {
  const layout = sandboxes.layout(sandboxId);
  const record = readRecord(layout);
  if (record === undefined) {
    await sandboxes.teardown(sandboxId);
    return { sandbox_id: sandboxId, action: 'ended', reason: 'its sandbox record was missing (an interrupted create)' };
  }
  const containerId = containerName(sandboxId);
  const state = await sandboxes.runc.state(containerId);
  const healthy = sandboxes.mountHealthy(layout);
  if (healthy && state !== undefined && state.status === 'paused') {
    const stuck = await resumeWithRetries(() => sandboxes.resume(containerId));
    if (stuck !== undefined) {
      // Its files are intact: keep it (the next recovery tries again) rather than end it.
      return { sandbox_id: sandboxId, action: 'adopted', reason: `an interrupted snapshot had left it paused, and resuming failed: ${errorText(stuck)}` };
    }
    return { sandbox_id: sandboxId, action: 'resumed', reason: 'an interrupted snapshot had left it paused' };
  }
  if (healthy && state !== undefined && state.status === 'running') {
    return { sandbox_id: sandboxId, action: 'adopted', reason: 'mount process, mounts and container are intact' };
  }
  if (healthy && state !== undefined && state.status === 'stopped') {
    return { sandbox_id: sandboxId, action: 'exited', reason: 'its command had ended; kept for removal' };
  }
  const why = state === undefined ? 'its container was gone' : healthy ? `its container was ${state.status}` : 'its image mount was gone (mount process ended)';
  if (state !== undefined) await sandboxes.deleteContainer(containerId);
  await sandboxes.takeDownMounts(layout);
  if (mode === 'end' || !existsSync(record.index_path)) {
    await sandboxes.teardown(sandboxId);
    const reason = existsSync(record.index_path) ? why : `${why}, and its clip index ${record.index_path} is gone`;
    return { sandbox_id: sandboxId, action: 'ended', reason };
  }
  await sandboxes.bringUp(record, layout, () => undefined);
  return { sandbox_id: sandboxId, action: 'restarted', reason: `${why}; remounted and started again with its files kept` };
}
