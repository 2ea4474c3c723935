import { useState } from 'preact/hooks';
import { ApiError, CryoApi, type Credentials } from '../api';
import { DEFAULT_NAMESPACE } from '../session';

/**
 * Sign-in with an API key (one of the server's `auth.api_keys`). The key is checked against
 * the server before it is kept; the form posts nowhere, so the key never lands in a URL.
 */
export function SignIn({ onSignedIn, reason }: { onSignedIn: (c: Credentials) => void; reason: string | null }) {
  const [apiKey, setApiKey] = useState('');
  const [namespace, setNamespace] = useState(DEFAULT_NAMESPACE);
  const [error, setError] = useState<string | null>(reason);
  const [busy, setBusy] = useState(false);
  return (
    <main class="sign-in">
      <h1>cryo</h1>
      <p>Sandboxes, snapshots and executors of this cryo server.</p>
      <form
        method="post"
        action="#"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          const credentials = { apiKey: apiKey.trim(), namespace: namespace.trim() };
          try {
            await new CryoApi(credentials).listSandboxes();
            onSignedIn(credentials);
          } catch (err) {
            setError(!(err instanceof ApiError && err.status === 401)
              ? err instanceof Error ? err.message : String(err)
              : credentials.apiKey === '' ? 'This server requires an API key.' : 'The server rejected this API key.');
          } finally {
            setBusy(false);
          }
        }}
      >
        <label>
          <span>API key</span>
          <input
            type="password"
            name="api-key"
            autocomplete="current-password"
            placeholder="empty if the server has no auth.api_keys"
            value={apiKey}
            onInput={(e) => setApiKey(e.currentTarget.value)}
          />
        </label>
        <label>
          <span>Namespace</span>
          <input name="namespace" required value={namespace} onInput={(e) => setNamespace(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={busy}>Sign in</button>
        {error !== null && <p class="notice notice-error" role="alert">{error}</p>}
      </form>
      <p class="detail">The key is kept in this tab's session storage only. <a href="/docs">API reference</a></p>
    </main>
  );
}
