import type { ComponentChildren } from 'preact';

/** A status word with a colour per meaning (ok, busy, bad, gone). */
export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${toneOf(status)}`} data-status={status}>{status}</span>;
}

function toneOf(status: string): string {
  if (['running', 'active', 'ready'].includes(status)) return 'ok';
  if (['pending', 'creating', 'snapshotting', 'restoring', 'deleting', 'draining'].includes(status)) return 'busy';
  if (['failed', 'lost'].includes(status)) return 'bad';
  return 'gone';
}

/** A table, or a line saying there is nothing to show. */
export function Table({ empty, headers, children }: { empty: string | null; headers: string[]; children: ComponentChildren }) {
  if (empty !== null) return <p class="empty">{empty}</p>;
  return (
    <table>
      <thead><tr>{headers.map((h) => <th key={h}>{h}</th>)}</tr></thead>
      <tbody>{children}</tbody>
    </table>
  );
}

/** Shows rows that have ended only when asked; most of the time people look at what is live. */
export function EndedToggle({ count, shown, onChange }: { count: number; shown: boolean; onChange: (v: boolean) => void }) {
  if (count === 0) return null;
  return (
    <label class="toggle">
      <input type="checkbox" checked={shown} onChange={(e) => onChange(e.currentTarget.checked)} />
      show ended ({count})
    </label>
  );
}
