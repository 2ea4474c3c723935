import { describe, expect, it } from 'vitest';
import { ProgressLine } from './progress';

function stream(isTTY: boolean): { isTTY: boolean; text: string; write(chunk: string): void } {
  return {
    isTTY,
    text: '',
    write(chunk: string) {
      this.text += chunk;
    },
  };
}

describe('ProgressLine', () => {
  it('redraws one line in place on a terminal and ends it with a newline', () => {
    const tty = stream(true);
    const line = new ProgressLine(tty);
    line.update('snap-1 creating: committing');
    line.update('snap-1 creating: committing');
    line.update('snap-1 active');
    line.finish();
    expect(tty.text).toBe('\r\x1b[2Ksnap-1 creating: committing\r\x1b[2Ksnap-1 active\n');
  });

  it('writes each change as a plain line elsewhere', () => {
    const pipe = stream(false);
    const line = new ProgressLine(pipe);
    line.update('a');
    line.update('a');
    line.update('b');
    line.finish();
    expect(pipe.text).toBe('a\nb\n');
  });

  it('writes nothing when disabled (--quiet)', () => {
    const pipe = stream(true);
    const line = new ProgressLine(pipe, false);
    line.update('a');
    line.finish();
    expect(pipe.text).toBe('');
  });
});
