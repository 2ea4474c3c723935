import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { ObservedSandbox } from '@cryo/snapshot';
import { Reconciler } from './reconciler';

function observed(id: string): ObservedSandbox {
  return { sandbox_id: id, container_id: `c-${id}`, state: 'running', exit_code: null, runtime: 'docker' };
}

describe('Reconciler', () => {
  it('removes unwanted sandboxes only after the grace period, and never busy ones', async () => {
    let now = 0;
    const present = new Set(['keep', 'drop', 'busy']);
    const removed: string[] = [];
    const target = {
      observe: async () => [...present].map(observed),
      remove: async (id: string) => { removed.push(id); present.delete(id); return true; },
    };
    const r = new Reconciler(target, (id) => id === 'busy', pino({ level: 'silent' }), 1000, () => now);
    expect(await r.reconcile(['keep'])).toEqual([]);
    now = 500;
    expect(await r.reconcile(['keep'])).toEqual([]);
    now = 1000;
    expect(await r.reconcile(['keep'])).toEqual(['drop']);
    expect(removed).toEqual(['drop']);
    expect(present.has('busy')).toBe(true);
  });

  it('forgets a sandbox that became wanted again', async () => {
    let now = 0;
    const target = { observe: async () => [observed('x')], remove: async () => true };
    const r = new Reconciler(target, () => false, pino({ level: 'silent' }), 1000, () => now);
    await r.reconcile([]);
    now = 900;
    await r.reconcile(['x']);
    now = 1500;
    expect(await r.reconcile([])).toEqual([]);
  });
});
