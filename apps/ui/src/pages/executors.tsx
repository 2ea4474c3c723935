import type { ExecutorView } from '../api';
import { StatusBadge, Table } from '../components/status';
import { formatAge } from '../format';

export function ExecutorsPage({ executors, now }: { executors: ExecutorView[]; now: number }) {
  return (
    <section>
      <header class="page-header"><h1>Executors</h1></header>
      <Table
        empty={executors.length === 0 ? 'No executor has registered with this server yet.' : null}
        headers={['Executor', 'Host', 'State', 'Last heartbeat', 'Version', 'Lazy restore', 'Capacity', 'Sandboxes', 'Cached snapshot images']}
      >
        {executors.map((e) => (
          <tr key={e.executor_id} data-executor={e.executor_id}>
            <td class="mono">{e.executor_id}</td>
            <td>{e.host}</td>
            <td><StatusBadge status={e.state} /></td>
            <td title={e.last_heartbeat_at}>{formatAge(e.last_heartbeat_at, now)}</td>
            <td>{e.version}</td>
            <td>{e.capabilities.lazy ? 'yes' : `no${e.capabilities.lazy_unavailable_reason === null ? '' : `: ${e.capabilities.lazy_unavailable_reason}`}`}</td>
            <td>{e.capacity.cpus} CPUs, {Math.round(e.capacity.memory_mb / 1024)} GiB</td>
            <td>{e.sandboxes} / {e.capacity.max_sandboxes}</td>
            <td>
              {e.cached_snapshot_images.length === 0
                ? '—'
                : (
                  <details>
                    <summary>{e.cached_snapshot_images.length}</summary>
                    <ul class="mono">{e.cached_snapshot_images.map((ref) => <li key={ref}>{ref}</li>)}</ul>
                  </details>
                )}
            </td>
          </tr>
        ))}
      </Table>
    </section>
  );
}
