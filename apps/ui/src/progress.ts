/**
 * What the progress bar shows for a snapshot or a sandbox, from the API's fields alone: the
 * executor's `progress{phase, bytes_done, bytes_total}` while a snapshot is made and pushed,
 * "indexing" while the clip index of a pushed snapshot is built, and the pending reason of a
 * sandbox being created or restored.
 */
import { LOCAL_SNAPSHOT_REPOSITORY } from '@cryo/snapshot/naming';
import type { Progress, Sandbox, Snapshot } from './api';
import { formatBytes } from './format';

export interface ProgressView {
  /** What is happening, for people: "pushing 12 MB / 40 MB". */
  label: string;
  /** 0..1, or null when the amount of work is unknown (an indeterminate bar). */
  fraction: number | null;
}

/** The executor's phase names, as verbs. */
const PHASE_LABELS: Record<string, string> = {
  precopy: 'copying',
  pause: 'pausing',
  commit: 'committing',
  index: 'indexing',
  push: 'pushing',
  pushed: 'pushed',
  pull: 'pulling',
  mount: 'mounting',
  'fetch-index': 'fetching index',
  start: 'starting',
};

/** The executor's `progress{phase, bytes_done, bytes_total}` as words and a fraction. */
function phaseProgress(progress: Progress): ProgressView {
  const verb = PHASE_LABELS[progress.phase] ?? progress.phase;
  if (progress.bytes_total === null || progress.bytes_total <= 0) {
    return { label: progress.bytes_done > 0 ? `${verb} ${formatBytes(progress.bytes_done)}` : verb, fraction: null };
  }
  const fraction = Math.min(1, Math.max(0, progress.bytes_done / progress.bytes_total));
  return { label: `${verb} ${formatBytes(progress.bytes_done)} / ${formatBytes(progress.bytes_total)}`, fraction };
}

export function snapshotProgress(snapshot: Snapshot): ProgressView | null {
  switch (snapshot.status) {
    case 'creating': {
      return snapshot.progress === null ? { label: 'queued', fraction: null } : phaseProgress(snapshot.progress);
    }
    case 'active':
      return isIndexing(snapshot) ? { label: 'indexing', fraction: null } : null;
    case 'deleting':
      return { label: 'deleting', fraction: null };
    default:
      return null;
  }
}

/**
 * After a push to a registry the server has the pushing executor build a clip index; until it
 * reports (clip_index_ref or clip_error), lazy restore is not yet available.
 */
export function isIndexing(snapshot: Snapshot): boolean {
  return snapshot.image_ref !== null
    && !snapshot.image_ref.startsWith(`${LOCAL_SNAPSHOT_REPOSITORY}:`)
    && snapshot.clip_index_ref === null
    && snapshot.clip_error === null;
}

export function sandboxProgress(sandbox: Sandbox): ProgressView | null {
  // The executor's progress on a pull (eager) or mount (lazy) once it reports, else why it waits.
  if (sandbox.status === 'pending') {
    const what = sandbox.restored_from_snapshot === null ? 'starting' : `restoring (${sandbox.restore_mode ?? 'eager'})`;
    if (sandbox.progress !== null) {
      const view = phaseProgress(sandbox.progress);
      return { label: `${what}: ${view.label}`, fraction: view.fraction };
    }
    return { label: sandbox.pending_reason === null ? what : `${what}: ${sandbox.pending_reason}`, fraction: null };
  }
  if (sandbox.status === 'snapshotting') return { label: 'snapshotting', fraction: null };
  if (sandbox.status === 'restoring') {
    return sandbox.progress !== null ? phaseProgress(sandbox.progress) : { label: sandbox.pending_reason ?? 'rolling back', fraction: null };
  }
  return null;
}

/** Anything still moving: the dashboard polls faster while this holds. */
export function inFlight(sandboxes: Sandbox[], snapshots: Snapshot[]): boolean {
  return sandboxes.some((s) => sandboxProgress(s) !== null) || snapshots.some((s) => snapshotProgress(s) !== null);
}
