/** How sandboxes, snapshots and executors look to people: tables for lists, key: value for one. */
import type { ExecutorView, Outcome, Progress, Sandbox, SandboxListItem, Snapshot } from '@cryo/snapshot';
import {
  formatBytes,
  formatLabels,
  formatMillis,
  formatProgressBytes,
  formatTtl,
  fullTime,
  relativeTime,
  renderFields,
  renderTable,
} from './format';

export function describeOutcome(outcome: Outcome | null): string | undefined {
  if (outcome === null) return undefined;
  return outcome.reason ? `${outcome.kind}: ${outcome.reason}` : outcome.kind;
}

/** A command line as a person would type it: arguments with blanks or quotes are JSON-quoted. */
export function formatCommand(command: readonly string[] | null): string | undefined {
  if (command === null) return undefined;
  return command.map((arg) => (arg === '' || /[\s"'\\$`]/.test(arg) ? JSON.stringify(arg) : arg)).join(' ');
}

/** The one thing worth knowing beyond the status: why it waits, how it ended, where it came from. */
function sandboxDetail(sb: SandboxListItem): string {
  const detail = sb.pending_reason ?? describeOutcome(sb.outcome);
  if (detail !== undefined) return detail;
  return sb.restored_from_snapshot === null ? '' : `from ${sb.restored_from_snapshot}`;
}

export function sandboxTable(items: readonly SandboxListItem[], now: Date): string {
  return renderTable(
    ['SANDBOX', 'STATUS', 'IMAGE', 'EXECUTOR', 'CREATED', 'DETAIL'],
    items.map((sb) => [
      sb.sandbox_id,
      sb.status,
      sb.image,
      sb.executor_id ?? '-',
      relativeTime(sb.created_at, now),
      sandboxDetail(sb),
    ]),
  );
}

export function sandboxFields(sb: Sandbox, now: Date): string {
  const { cpus, memory_mb } = sb.resources;
  const resources = [cpus === undefined ? '' : `cpus=${cpus}`, memory_mb === undefined ? '' : `memory_mb=${memory_mb}`]
    .filter(Boolean)
    .join(' ');
  const restored =
    sb.restored_from_snapshot === null ? undefined : `${sb.restored_from_snapshot} (${sb.restore_mode ?? 'eager'})`;
  return renderFields([
    ['sandbox_id', sb.sandbox_id],
    ['namespace', sb.namespace],
    ['status', sb.status],
    ['pending_reason', sb.pending_reason ?? undefined],
    ['progress', sb.progress === null ? undefined : progressText(sb.progress)],
    ['outcome', describeOutcome(sb.outcome)],
    ['image', sb.image],
    ['command', formatCommand(sb.command) ?? '(image default)'],
    ['executor_id', sb.executor_id ?? '-'],
    ['restored_from', restored],
    ['labels', formatLabels(sb.labels)],
    ['resources', resources || '-'],
    ['timeout_secs', String(sb.timeout_secs)],
    ['created_at', fullTime(sb.created_at, now)],
    ['started_at', fullTime(sb.started_at, now)],
    ['terminated_at', sb.terminated_at === null ? undefined : fullTime(sb.terminated_at, now)],
    ['expires_at', sb.expires_at === null ? undefined : fullTime(sb.expires_at, now)],
  ]);
}

/** "expires" column: "in 3h", "never", or what happened instead. */
function snapshotExpiry(snap: Snapshot, now: Date): string {
  if (snap.status === 'expired') return `expired ${relativeTime(snap.expired_at, now)}`;
  if (snap.status === 'deleted' || snap.status === 'deleting') return '-';
  return snap.expires_at === null ? 'never' : relativeTime(snap.expires_at, now);
}

export function snapshotTable(items: readonly Snapshot[], now: Date): string {
  return renderTable(
    ['SNAPSHOT', 'STATUS', 'SANDBOX', 'SIZE', 'CREATED', 'EXPIRES', 'REF'],
    items.map((snap) => [
      snap.snapshot_id,
      snap.status,
      snap.sandbox_id,
      formatBytes(snap.size_bytes),
      relativeTime(snap.created_at, now),
      snapshotExpiry(snap, now),
      snap.image_ref ?? '-',
    ]),
  );
}

export function snapshotFields(snap: Snapshot, now: Date): string {
  const { pause_ms, commit_ms, push_ms, index_ms, flatten_ms } = snap.timings;
  const progress = snap.progress === null ? undefined : progressText(snap.progress);
  return renderFields([
    ['snapshot_id', snap.snapshot_id],
    ['namespace', snap.namespace],
    ['status', snap.status],
    ['error', snap.error ?? undefined],
    ['progress', snap.status === 'creating' ? progress : undefined],
    ['sandbox_id', snap.sandbox_id],
    ['base_image', snap.base_image],
    ['tag', snap.tag ?? '-'],
    ['labels', formatLabels(snap.labels)],
    ['image_ref', snap.image_ref ?? '-'],
    ['digest', snap.digest ?? '-'],
    ['size', snap.size_bytes === null ? '-' : `${formatBytes(snap.size_bytes)} (${snap.size_bytes} bytes)`],
    ['layers', snap.layers === null ? '-' : `${snap.layers}${snap.flattened ? ' (flattened: the chain of snapshots had reached the executor\'s snapshots.max_layers)' : ''}`],
    ['clip_index_ref', snap.clip_index_ref ?? undefined],
    ['clip_error', snap.clip_error ?? undefined],
    ['executor_id', snap.executor_id ?? '-'],
    ['created_at', fullTime(snap.created_at, now)],
    ['ttl_secs', `${snap.ttl_secs} (${snap.ttl_secs === 0 ? 'never expires' : formatTtl(snap.ttl_secs)}${snap.ttl_from === 'last_use' ? ', from the last use' : ''})`],
    ['expires_at', snap.expires_at === null ? 'never' : fullTime(snap.expires_at, now)],
    ['last_used_at', snap.last_used_at === null ? undefined : fullTime(snap.last_used_at, now)],
    ['keep_last', snap.keep_last === null ? undefined : String(snap.keep_last)],
    ['expired_at', snap.expired_at === null ? undefined : fullTime(snap.expired_at, now)],
    ['deleted_at', snap.deleted_at === null ? undefined : fullTime(snap.deleted_at, now)],
    ['deleted_reason', snap.deleted_reason ?? undefined],
    [
      'timings',
      `pause ${formatMillis(pause_ms)}, commit ${formatMillis(commit_ms)}, ${flatten_ms === null ? '' : `flatten ${formatMillis(flatten_ms)}, `}`
        + `push ${formatMillis(push_ms)}, index ${formatMillis(index_ms)}`,
    ],
  ]);
}

function progressText(progress: Progress): string {
  const bytes = progress.bytes_done > 0 || progress.bytes_total !== null;
  return bytes ? `${progress.phase} ${formatProgressBytes(progress.bytes_done, progress.bytes_total)}` : progress.phase;
}

/** The --wait status line of a snapshot: "snap-1 creating: pushing 12.0 MiB / 40.0 MiB (30%)". */
export function snapshotProgressLine(snap: Snapshot): string {
  const progress = snap.status === 'creating' && snap.progress !== null ? `: ${progressText(snap.progress)}` : '';
  return `${snap.snapshot_id} ${snap.status}${progress}`;
}

/**
 * The --wait status line of a sandbox being created, restored or rolled back: the executor's
 * progress once it reports ("sbx-1 pending: pull 12.0 MiB / 40.0 MiB (30%)", "... mount"),
 * else why it waits ("sbx-1 pending: waiting for executor host-a"); "sbx-1 running" at the end.
 */
export function sandboxProgressLine(sb: Sandbox): string {
  const detail = sb.progress !== null ? progressText(sb.progress) : sb.pending_reason;
  return detail === null ? `${sb.sandbox_id} ${sb.status}` : `${sb.sandbox_id} ${sb.status}: ${detail}`;
}

export function executorTable(items: readonly ExecutorView[], now: Date): string {
  return renderTable(
    ['EXECUTOR', 'STATE', 'HOST', 'SANDBOXES', 'CAPACITY', 'LAZY', 'IMAGES', 'HEARTBEAT', 'VERSION'],
    items.map((ex) => [
      ex.executor_id,
      ex.state,
      ex.host,
      String(ex.sandboxes),
      `${ex.capacity.cpus} cpu, ${formatBytes(ex.capacity.memory_mb * 1024 * 1024)}, max ${ex.capacity.max_sandboxes}`,
      ex.capabilities.lazy ? 'yes' : 'no',
      String(ex.cached_snapshot_images.length),
      relativeTime(ex.last_heartbeat_at, now),
      ex.version,
    ]),
  );
}
