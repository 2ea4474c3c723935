/**
 * The signed-in session: the API key and namespace, kept in the tab's sessionStorage (gone when
 * the tab closes, never written to a URL, a cookie or localStorage).
 */
import type { Credentials } from './api';

const KEY = 'cryo.session';
export const DEFAULT_NAMESPACE = 'default';

export function loadSession(storage: Storage = sessionStorage): Credentials | null {
  const raw = storage.getItem(KEY);
  if (raw === null) return null;
  try {
    const value: unknown = JSON.parse(raw);
    if (typeof value === 'object' && value !== null && 'apiKey' in value && 'namespace' in value
      && typeof value.apiKey === 'string' && typeof value.namespace === 'string') {
      return { apiKey: value.apiKey, namespace: value.namespace };
    }
  } catch {
    // fall through: a damaged entry is dropped
  }
  storage.removeItem(KEY);
  return null;
}

export function saveSession(credentials: Credentials, storage: Storage = sessionStorage): void {
  storage.setItem(KEY, JSON.stringify(credentials));
}

export function clearSession(storage: Storage = sessionStorage): void {
  storage.removeItem(KEY);
}
