/** Busy marks: counted per sandbox, released also on failure, and forgotten once no operation holds them. */
import { describe, expect, it } from 'vitest';
import { BusySandboxes } from './busy-sandboxes';

describe('BusySandboxes', () => {
  it('is busy while any holder runs, then forgets the sandbox (no entry per sandbox ever seen)', async () => {
    const busy = new BusySandboxes();
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const long = busy.hold('sbx-1', () => gate);
    await busy.hold('sbx-1', async () => {
      expect(busy.has('sbx-1')).toBe(true);
    });
    expect(busy.has('sbx-1')).toBe(true);
    release();
    await long;
    expect(busy.has('sbx-1')).toBe(false);
    await expect(busy.hold('sbx-2', async () => { throw new Error('create failed'); })).rejects.toThrow('create failed');
    expect(busy.has('sbx-2')).toBe(false);
    expect(busy.size).toBe(0);
  });
});
