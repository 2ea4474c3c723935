/**
 * Whether a snapshot can be started from (restore, fork, rollback), said once: gone (410, or a
 * fallback to its base image), not ready (409), or not lazily restorable (422); else what a
 * create_sandbox or rollback_sandbox operation needs to restore it.
 */
import { CryoError, isLocalSnapshotRef, type RestoreMode } from '@cryo/snapshot';
import { toIso } from '../clock';
import type { SnapshotRow } from '../store/snapshots';
import type { LaunchSpec } from './sandbox-service';

export type RestoreSource = NonNullable<LaunchSpec['restore']>;

/** A 410 for a snapshot that is gone or going (saying when it expired or was deleted), else null. */
export function goneError(row: SnapshotRow, now: number): CryoError | null {
  const expired = row.status === 'expired' || (row.status === 'deleting' && row.delete_reason === 'expired') ||
    (row.status === 'active' && row.expires_at !== null && row.expires_at <= now);
  if (expired) {
    const at = row.expires_at ?? row.expired_at ?? row.delete_requested_at ?? now;
    return new CryoError(
      'GONE',
      `snapshot ${row.id} expired at ${toIso(at)} (ttl_secs ${row.ttl_secs}) and can no longer be restored or changed`,
      { expired_at: toIso(at), status: row.status },
    );
  }
  if (row.status === 'deleted' || row.status === 'deleting') {
    const at = row.deleted_at ?? row.delete_requested_at ?? now;
    const verb = row.status === 'deleted' ? 'was deleted' : 'is being deleted (requested';
    const why = row.deleted_reason === 'retention' ? ' by retention (a newer snapshot\'s keep_last)' : '';
    return new CryoError(
      'GONE',
      `snapshot ${row.id} ${verb} at ${toIso(at)}${row.status === 'deleting' ? ')' : ''}${why} and can no longer be restored or changed`,
      { deleted_at: toIso(at), status: row.status, deleted_reason: row.deleted_reason },
    );
  }
  return null;
}

/**
 * What restoring `row` in `mode` takes, for a snapshot that is not gone: 409 while it is creating
 * or when it failed, 422 for a lazy restore without a clip index.
 */
export function restoreSource(row: SnapshotRow, mode: RestoreMode): RestoreSource {
  if (row.status === 'creating') {
    throw new CryoError('CONFLICT', `snapshot ${row.id} is still creating; restore it once it is active`, { status: row.status });
  }
  if (row.status === 'failed') {
    throw new CryoError('CONFLICT', `snapshot ${row.id} failed and cannot be restored: ${row.error ?? 'no error recorded'}`, {
      status: row.status,
    });
  }
  if (row.status !== 'active' || row.image_ref === null) {
    throw new CryoError('CONFLICT', `snapshot ${row.id} is ${row.status} and has no image to restore`, { status: row.status });
  }
  if (mode === 'lazy' && row.clip_index_ref === null) {
    throw new CryoError(
      'UNPROCESSABLE',
      `snapshot ${row.id} has no clip index, so it cannot be restored lazily` +
        `${row.clip_error === null ? '' : ` (indexing failed: ${row.clip_error})`}; restore it with mode "eager"`,
    );
  }
  return {
    snapshotId: row.id,
    imageRef: row.image_ref,
    digest: row.digest,
    clipIndexRef: row.clip_index_ref,
    mode,
    onlyOn: isLocalSnapshotRef(row.image_ref) ? row.executor_id : null,
  };
}

/** The 410 when a snapshot checked as usable expired or went between the check and its use. */
export function goneMeanwhile(id: string): CryoError {
  return new CryoError('GONE', `snapshot ${id} expired or was deleted while it was being restored from; nothing was started`);
}
