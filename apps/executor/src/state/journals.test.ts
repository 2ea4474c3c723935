import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { PauseJournal } from './pause-journal';
import { OpJournal } from './op-journal';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function journalDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cryo-journal-'));
  dirs.push(dir);
  return dir;
}

describe('on-disk journals', () => {
  it('remembers paused containers until they are unpaused, across instances', () => {
    const dir = journalDir();
    const a = new PauseJournal(dir);
    a.willPause({ container_id: 'c1', sandbox_id: 's1', op_id: 'op-1', paused_at: 'now', pid: 1 });
    a.willPause({ container_id: 'c2', sandbox_id: 's2', op_id: 'op-2', paused_at: 'now', pid: 1 });
    a.unpaused('c1');
    const b = new PauseJournal(dir);
    expect(b.pending().map((r) => r.container_id)).toEqual(['c2']);
    expect(readdirSync(join(dir, 'paused')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('keeps operation outcomes so a repeated op id is not redone', () => {
    const dir = journalDir();
    const j = new OpJournal(dir);
    j.started('op-abc', 'snapshot', 'sbx-1');
    expect(j.get('op-abc')?.state).toBe('running');
    j.finished('op-abc', 'snapshot', { ok: false, error: { code: 'X', message: 'boom' } }, false);
    const again = new OpJournal(dir).get('op-abc');
    expect(again).toMatchObject({ state: 'done', reported: false, result: { ok: false } });
  });

  it('refuses keys that could escape the journal directory', () => {
    const j = new OpJournal(journalDir());
    expect(() => j.started('../evil', 'exec', null)).toThrow(/invalid journal key/);
  });
});
