import { describe, expect, it } from 'vitest';
import { clearSession, loadSession, saveSession } from './session';

/** The Storage interface over a Map: what sessionStorage is to these functions. */
class MemoryStorage implements Storage {
  private readonly items = new Map<string, string>();
  get length(): number { return this.items.size; }
  clear(): void { this.items.clear(); }
  getItem(key: string): string | null { return this.items.get(key) ?? null; }
  key(index: number): string | null { return [...this.items.keys()][index] ?? null; }
  removeItem(key: string): void { this.items.delete(key); }
  setItem(key: string, value: string): void { this.items.set(key, value); }
}

describe('session', () => {
  it('keeps the API key and namespace until signed out', () => {
    const storage = new MemoryStorage();
    expect(loadSession(storage)).toBeNull();
    saveSession({ apiKey: 'k-123', namespace: 'team-a' }, storage);
    expect(loadSession(storage)).toEqual({ apiKey: 'k-123', namespace: 'team-a' });
    clearSession(storage);
    expect(loadSession(storage)).toBeNull();
    expect(storage.length).toBe(0);
  });

  it('drops a damaged entry instead of failing', () => {
    const storage = new MemoryStorage();
    for (const bad of ['{', '"text"', '{"apiKey": 1, "namespace": "x"}', 'null']) {
      storage.setItem('cryo.session', bad);
      expect(loadSession(storage)).toBeNull();
      expect(storage.length).toBe(0);
    }
  });
});
