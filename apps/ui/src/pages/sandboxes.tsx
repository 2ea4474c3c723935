import { useState } from 'preact/hooks';
import { createSandbox, SANDBOX_ACTIONS } from '../actions';
import type { CryoApi, Sandbox } from '../api';
import { ActionBar, type Notice } from '../components/action-bar';
import { ProgressBar } from '../components/progress-bar';
import { EndedToggle, StatusBadge, Table } from '../components/status';
import { formatAge, formatCountdown } from '../format';
import { sandboxProgress } from '../progress';

interface Props {
  api: CryoApi;
  sandboxes: Sandbox[];
  now: number;
  onDone: (notice: Notice) => void;
}

export function SandboxesPage({ api, sandboxes, now, onDone }: Props) {
  const [showEnded, setShowEnded] = useState(false);
  const ended = sandboxes.filter((s) => s.status === 'terminated');
  const shown = showEnded ? sandboxes : sandboxes.filter((s) => s.status !== 'terminated');
  return (
    <section>
      <header class="page-header">
        <h1>Sandboxes</h1>
        <EndedToggle count={ended.length} shown={showEnded} onChange={setShowEnded} />
      </header>
      <CreateSandboxForm api={api} onDone={onDone} />
      <Table
        empty={shown.length === 0 ? 'No sandboxes yet: create one from an image above.' : null}
        headers={['Sandbox', 'Image', 'Status', 'Executor', 'Restored from', 'Created', 'Timeout', '']}
      >
        {shown.map((s) => {
          const progress = sandboxProgress(s);
          return (
            <tr key={s.sandbox_id} data-sandbox={s.sandbox_id}>
              <td class="mono">{s.sandbox_id}</td>
              <td class="mono">{s.image}</td>
              <td>
                <StatusBadge status={s.status} />
                {progress !== null && <ProgressBar view={progress} />}
                {s.outcome !== null && <div class="detail">{s.outcome.kind}{s.outcome.reason === undefined ? '' : `: ${s.outcome.reason}`}</div>}
              </td>
              <td>{s.executor_id ?? '—'}</td>
              <td class="mono">{s.restored_from_snapshot === null ? '—' : `${s.restored_from_snapshot} (${s.restore_mode ?? 'eager'})`}</td>
              <td title={s.created_at}>{formatAge(s.created_at, now)}</td>
              <td>{s.status === 'terminated' ? '—' : formatCountdown(s.expires_at, now)}</td>
              <td><ActionBar item={s} actions={SANDBOX_ACTIONS} api={api} onDone={onDone} /></td>
            </tr>
          );
        })}
      </Table>
    </section>
  );
}

function CreateSandboxForm({ api, onDone }: { api: CryoApi; onDone: (notice: Notice) => void }) {
  const [image, setImage] = useState('');
  const [command, setCommand] = useState('');
  const [timeout, setTimeoutText] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <form
      class="create-form"
      aria-label="Create sandbox"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try {
          onDone({ kind: 'info', text: await createSandbox(api, image, command, timeout) });
          setImage('');
          setCommand('');
          setTimeoutText('');
        } catch (err) {
          onDone({ kind: 'error', text: `Create failed: ${err instanceof Error ? err.message : String(err)}` });
        } finally {
          setBusy(false);
        }
      }}
    >
      <label>
        <span>Image</span>
        <input name="image" required value={image} placeholder="busybox:latest" onInput={(e) => setImage(e.currentTarget.value)} />
      </label>
      <label>
        <span>Command</span>
        <input name="command" value={command} placeholder="(the image's own) e.g. sleep 3600" onInput={(e) => setCommand(e.currentTarget.value)} />
      </label>
      <label>
        <span>Timeout</span>
        <input name="timeout" value={timeout} placeholder="default" title="e.g. 30m, 12h; 0 = none" onInput={(e) => setTimeoutText(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={busy || image.trim() === ''}>Create sandbox</button>
    </form>
  );
}
