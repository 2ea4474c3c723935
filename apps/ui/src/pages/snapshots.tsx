import { useState } from 'preact/hooks';
import { SNAPSHOT_ACTIONS } from '../actions';
import type { CryoApi, Snapshot } from '../api';
import { ActionBar, type Notice } from '../components/action-bar';
import { ProgressBar } from '../components/progress-bar';
import { EndedToggle, StatusBadge, Table } from '../components/status';
import { formatBytes, formatCountdown, formatDuration } from '../format';
import { isIndexing, snapshotProgress } from '../progress';

interface Props {
  api: CryoApi;
  snapshots: Snapshot[];
  now: number;
  onDone: (notice: Notice) => void;
}

const ENDED = new Set(['deleted', 'expired']);

export function SnapshotsPage({ api, snapshots, now, onDone }: Props) {
  const [showEnded, setShowEnded] = useState(false);
  const ended = snapshots.filter((s) => ENDED.has(s.status));
  const shown = showEnded ? snapshots : snapshots.filter((s) => !ENDED.has(s.status));
  return (
    <section>
      <header class="page-header">
        <h1>Snapshots</h1>
        <EndedToggle count={ended.length} shown={showEnded} onChange={setShowEnded} />
      </header>
      <Table
        empty={shown.length === 0 ? 'No snapshots yet: snapshot a running sandbox from the Sandboxes page.' : null}
        headers={['Snapshot', 'Sandbox', 'Status', 'Size', 'Base image', 'Expires', 'Lazy restore', 'Timings', 'Executor', '']}
      >
        {shown.map((s) => {
          const progress = snapshotProgress(s);
          return (
            <tr key={s.snapshot_id} data-snapshot={s.snapshot_id}>
              <td class="mono">{s.snapshot_id}{s.tag === null ? '' : <div class="detail">{s.tag}</div>}</td>
              <td class="mono">{s.sandbox_id}</td>
              <td>
                <StatusBadge status={s.status} />
                {progress !== null && <ProgressBar view={progress} />}
                {s.error !== null && <div class="detail error-text">{s.error}</div>}
              </td>
              <td>{formatBytes(s.size_bytes)}</td>
              <td class="mono">{s.base_image}</td>
              <td data-ttl={s.ttl_secs}>
                <span data-testid="countdown">{ENDED.has(s.status) ? '—' : formatCountdown(s.expires_at, now)}</span>
                <div class="detail">TTL {s.ttl_secs === 0 ? 'none' : formatDuration(s.ttl_secs)}</div>
              </td>
              <td>{lazyState(s)}</td>
              <td class="detail">{timings(s)}</td>
              <td>{s.executor_id ?? '—'}</td>
              <td><ActionBar item={s} actions={SNAPSHOT_ACTIONS} api={api} onDone={onDone} /></td>
            </tr>
          );
        })}
      </Table>
    </section>
  );
}

function lazyState(s: Snapshot): string {
  if (s.clip_index_ref !== null) return 'ready';
  if (s.clip_error !== null) return `unavailable: ${s.clip_error}`;
  if (s.status === 'active' && isIndexing(s)) return 'indexing…';
  return '—';
}

function timings(s: Snapshot): string {
  const parts = (['precopy', 'pause', 'commit', 'push', 'index'] as const)
    .map((phase) => [phase, s.timings[`${phase}_ms`]] as const)
    .filter((entry): entry is readonly [typeof entry[0], number] => entry[1] !== null)
    .map(([phase, ms]) => `${phase} ${ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`}`);
  return parts.length === 0 ? '—' : parts.join(', ');
}
