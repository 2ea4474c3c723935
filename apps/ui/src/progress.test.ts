import { describe, expect, it } from 'vitest';
import type { Sandbox, Snapshot } from './api';
import { inFlight, sandboxProgress, snapshotProgress } from './progress';

const snapshot = (over: Partial<Snapshot>): Snapshot => ({
  snapshot_id: 'snap-1', namespace: 'default', sandbox_id: 'sbx-1', status: 'active', error: null, tag: null, labels: {},
  image_ref: '127.0.0.1:5001/cryo/snapshots:sb-sbx-1-snap-snap-1', digest: 'sha256:ab', size_bytes: 1000, base_image: 'busybox',
  created_at: '2030-01-01T00:00:00.000Z', ttl_secs: 3600, expires_at: '2030-01-01T01:00:00.000Z', expired_at: null, deleted_at: null,
  executor_id: 'host-a', timings: { pause_ms: 15, commit_ms: 70, push_ms: 300, index_ms: 900, precopy_ms: null, flatten_ms: null }, layers: 2, flattened: false, progress: null,
  clip_index_ref: '127.0.0.1:5001/cryo/snapshots:sb-sbx-1-snap-snap-1.clip', clip_error: null, capture: null, excluded_mounts: [],
  ttl_from: 'created', last_used_at: null, keep_last: null, deleted_reason: null,
  ...over,
});

const sandbox = (over: Partial<Sandbox>): Sandbox => ({
  sandbox_id: 'sbx-2', namespace: 'default', image: 'busybox', command: null, labels: {}, resources: {}, timeout_secs: 0,
  status: 'running', pending_reason: null, outcome: null, executor_id: 'host-a', restored_from_snapshot: null, restore_mode: null, progress: null,
  created_at: '2030-01-01T00:00:00.000Z', started_at: '2030-01-01T00:00:01.000Z', terminated_at: null, expires_at: null,
  ...over,
});

describe('snapshot progress', () => {
  it('shows the push as a fraction of the bytes the executor reported', () => {
    const view = snapshotProgress(snapshot({ status: 'creating', progress: { phase: 'push', bytes_done: 12_000_000, bytes_total: 48_000_000 } }));
    expect(view).toEqual({ label: 'pushing 12 MB / 48 MB', fraction: 0.25 });
  });

  it('is indeterminate while the amount of work is unknown', () => {
    expect(snapshotProgress(snapshot({ status: 'creating', progress: null }))).toEqual({ label: 'queued', fraction: null });
    expect(snapshotProgress(snapshot({ status: 'creating', progress: { phase: 'commit', bytes_done: 0, bytes_total: null } })))
      .toEqual({ label: 'committing', fraction: null });
    expect(snapshotProgress(snapshot({ status: 'deleting' }))).toEqual({ label: 'deleting', fraction: null });
  });

  it('shows indexing after a registry push until the clip index or its error is recorded', () => {
    expect(snapshotProgress(snapshot({ clip_index_ref: null }))).toEqual({ label: 'indexing', fraction: null });
    expect(snapshotProgress(snapshot({}))).toBeNull();
    expect(snapshotProgress(snapshot({ clip_index_ref: null, clip_error: 'layer 2 is not gzip' }))).toBeNull();
    // A snapshot kept on its executor (no registry) is never indexed.
    expect(snapshotProgress(snapshot({ clip_index_ref: null, image_ref: 'cryo-snapshots:sb-sbx-1-snap-snap-1' }))).toBeNull();
    expect(snapshotProgress(snapshot({ status: 'expired', clip_index_ref: null }))).toBeNull();
  });
});

describe('sandbox progress', () => {
  it('names a restore and its pending reason', () => {
    expect(sandboxProgress(sandbox({ status: 'pending', restored_from_snapshot: 'snap-1', restore_mode: 'lazy', pending_reason: 'waiting for executor host-a' })))
      .toEqual({ label: 'restoring (lazy): waiting for executor host-a', fraction: null });
    expect(sandboxProgress(sandbox({ status: 'pending' }))).toEqual({ label: 'starting', fraction: null });
    expect(sandboxProgress(sandbox({}))).toBeNull();
    // A rollback in place (issue 12) says what it rolls back to.
    expect(sandboxProgress(sandbox({ status: 'restoring', pending_reason: 'rolling back to snapshot snap-1 (eager) on executor host-a' })))
      .toEqual({ label: 'rolling back to snapshot snap-1 (eager) on executor host-a', fraction: null });
  });

  it('shows the executor\'s pull or mount progress of a pending restore', () => {
    const pulling = sandbox({ status: 'pending', restored_from_snapshot: 'snap-1', restore_mode: 'eager', pending_reason: 'waiting for executor host-a',
      progress: { phase: 'pull', bytes_done: 12_000_000, bytes_total: 48_000_000 } });
    expect(sandboxProgress(pulling)).toEqual({ label: 'restoring (eager): pulling 12 MB / 48 MB', fraction: 0.25 });
    const mounting = sandbox({ status: 'pending', restored_from_snapshot: 'snap-1', restore_mode: 'lazy', progress: { phase: 'mount', bytes_done: 0, bytes_total: null } });
    expect(sandboxProgress(mounting)).toEqual({ label: 'restoring (lazy): mounting', fraction: null });
    expect(sandboxProgress(sandbox({ status: 'restoring', progress: { phase: 'pull', bytes_done: 1_000_000, bytes_total: 4_000_000 } })))
      .toEqual({ label: 'pulling 1.0 MB / 4.0 MB', fraction: 0.25 });
  });

  it('tells the dashboard to poll faster while anything moves', () => {
    expect(inFlight([sandbox({})], [snapshot({})])).toBe(false);
    expect(inFlight([sandbox({ status: 'snapshotting' })], [])).toBe(true);
    expect(inFlight([], [snapshot({ clip_index_ref: null })])).toBe(true);
  });
});
