/**
 * The dashboard: sign-in, then three pages (sandboxes, snapshots, executors) kept current by
 * polling the API: every second while something moves (a push, an index build, a restore),
 * every few seconds otherwise, and not at all while the tab is hidden.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, CryoApi, type Credentials, type ExecutorView, type Sandbox, type Snapshot } from './api';
import type { Notice } from './components/action-bar';
import { formatAge } from './format';
import { ExecutorsPage } from './pages/executors';
import { SandboxesPage } from './pages/sandboxes';
import { SignIn } from './pages/sign-in';
import { SnapshotsPage } from './pages/snapshots';
import { inFlight } from './progress';
import { clearSession, loadSession, saveSession } from './session';

const FAST_POLL_MS = 1000;
const SLOW_POLL_MS = 3000;

const PAGES = ['sandboxes', 'snapshots', 'executors'] as const;
type PageName = (typeof PAGES)[number];

function pageFromHash(): PageName {
  const name = window.location.hash.replace(/^#\/?/, '');
  return PAGES.find((p) => p === name) ?? 'sandboxes';
}

export function App() {
  const [session, setSession] = useState<Credentials | null>(() => loadSession());
  const [signedOutReason, setSignedOutReason] = useState<string | null>(null);
  if (session === null) {
    return (
      <SignIn
        reason={signedOutReason}
        onSignedIn={(credentials) => {
          saveSession(credentials);
          setSignedOutReason(null);
          setSession(credentials);
        }}
      />
    );
  }
  return (
    <Dashboard
      credentials={session}
      onSignOut={(reason) => {
        clearSession();
        setSignedOutReason(reason);
        setSession(null);
      }}
    />
  );
}

interface Lists {
  sandboxes: Sandbox[];
  snapshots: Snapshot[];
  executors: ExecutorView[];
  updatedAt: number;
}

function Dashboard({ credentials, onSignOut }: { credentials: Credentials; onSignOut: (reason: string | null) => void }) {
  const api = useMemo(() => new CryoApi(credentials), [credentials]);
  const [page, setPage] = useState<PageName>(pageFromHash);
  const [lists, setLists] = useState<Lists | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [notice, setNotice] = useState<Notice | null>(null);
  const now = useNow(1000);
  const refresh = usePolling(api, setLists, setLoadError, onSignOut);
  useEffect(() => {
    const onHash = (): void => setPage(pageFromHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  const onDone = useCallback((n: Notice): void => {
    setNotice(n);
    refresh();
  }, [refresh]);

  const counts: Record<PageName, number | null> = {
    sandboxes: lists === null ? null : lists.sandboxes.filter((s) => s.status !== 'terminated').length,
    snapshots: lists === null ? null : lists.snapshots.filter((s) => s.status !== 'deleted' && s.status !== 'expired').length,
    executors: lists === null ? null : lists.executors.length,
  };

  return (
    <div class="shell">
      <nav class="topbar">
        <span class="brand">cryo</span>
        {PAGES.map((p) => (
          <a key={p} href={`#/${p}`} class={p === page ? 'current' : ''} aria-current={p === page ? 'page' : undefined}>
            {p[0]?.toUpperCase()}{p.slice(1)}
            {counts[p] !== null && <span class="count">{counts[p]}</span>}
          </a>
        ))}
        <span class="spacer" />
        <span class="detail" data-testid="updated">
          namespace <b>{api.namespace}</b>
          {lists !== null && ` · updated ${formatAge(new Date(lists.updatedAt).toISOString(), Math.max(now, lists.updatedAt))}`}
        </span>
        <a href="/docs" target="_blank" rel="noreferrer">API</a>
        <button type="button" class="link" onClick={() => onSignOut(null)}>Sign out</button>
      </nav>
      <main>
        {loadError !== null && <p class="notice notice-error" role="alert">Cannot load: {loadError}</p>}
        {notice !== null && (
          <p class={`notice notice-${notice.kind}`} role={notice.kind === 'error' ? 'alert' : 'status'}>
            <span class="notice-text">{notice.text}</span>
            <button type="button" class="link" aria-label="Dismiss" onClick={() => setNotice(null)}>×</button>
          </p>
        )}
        {lists === null
          ? <p class="empty">Loading…</p>
          : page === 'sandboxes'
            ? <SandboxesPage api={api} sandboxes={lists.sandboxes} now={now} onDone={onDone} />
            : page === 'snapshots'
              ? <SnapshotsPage api={api} snapshots={lists.snapshots} now={now} onDone={onDone} />
              : <ExecutorsPage executors={lists.executors} now={now} />}
      </main>
    </div>
  );
}

/**
 * Loads the three lists now and again after each answer: soon while something is in flight,
 * later otherwise; only the newest answer counts. Returns a function that reloads at once.
 */
function usePolling(
  api: CryoApi,
  setLists: (lists: Lists) => void,
  setError: (error: string | null) => void,
  onSignOut: (reason: string) => void,
): () => void {
  const signOut = useRef(onSignOut);
  signOut.current = onSignOut;
  const wake = useRef<() => void>(() => undefined);
  useEffect(() => {
    let stopped = false;
    let generation = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async (): Promise<void> => {
      const mine = ++generation;
      clearTimeout(timer);
      let delay = SLOW_POLL_MS;
      if (!document.hidden) {
        try {
          const [sandboxes, snapshots, executors] = await Promise.all([api.listSandboxes(), api.listSnapshots(), api.listExecutors()]);
          if (stopped || mine !== generation) return;
          setLists({ sandboxes: sandboxes.items, snapshots: snapshots.items, executors: executors.items, updatedAt: Date.now() });
          setError(null);
          if (inFlight(sandboxes.items, snapshots.items)) delay = FAST_POLL_MS;
        } catch (err) {
          if (stopped || mine !== generation) return;
          if (err instanceof ApiError && err.status === 401) {
            signOut.current('The server no longer accepts this API key; sign in again.');
            return;
          }
          setError(err instanceof Error ? err.message : String(err));
        }
      }
      if (!stopped) timer = setTimeout(() => void tick(), delay);
    };
    const onVisible = (): void => {
      if (!document.hidden) void tick();
    };
    wake.current = () => void tick();
    document.addEventListener('visibilitychange', onVisible);
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [api, setLists, setError]);
  return useCallback(() => wake.current(), []);
}

/** The current time, re-read every `ms` (TTL countdowns and ages tick without a reload). */
function useNow(ms: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(id);
  }, [ms]);
  return now;
}
