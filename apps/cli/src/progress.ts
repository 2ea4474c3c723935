import type { OutStream } from './cli';

/**
 * A status line that changes while something runs: on a terminal it is redrawn in place, into a
 * log or a pipe each change is a line of its own (so a CI log shows every phase once).
 */
export class ProgressLine {
  private last: string | undefined;
  private drawn = false;

  constructor(
    private readonly stream: OutStream,
    private readonly enabled = true,
  ) {}

  update(text: string): void {
    if (!this.enabled || text === this.last) return;
    this.last = text;
    if (this.stream.isTTY === true) {
      this.stream.write(`\r\x1b[2K${text}`);
      this.drawn = true;
    } else {
      this.stream.write(text + '\n');
    }
  }

  /** Ends the redrawn line so that what follows starts on a line of its own. */
  finish(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
