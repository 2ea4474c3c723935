/** Options and helpers that several commands share, so they read and behave the same everywhere. */
import type { Command } from 'commander';
import { collectKeyValue, parseInteger } from '../args';
import type { Output } from '../cli';
import { collectPages, type ListOptions, type Page } from '../client';

export function examples(lines: readonly string[]): string {
  return `\nExamples:\n${lines.map((line) => `  $ ${line}`).join('\n')}\n`;
}

export interface WaitFlags {
  wait?: boolean;
  waitTimeoutSecs?: number;
}

export function addWaitOptions(cmd: Command, until: string): Command {
  return cmd
    .option('--wait', `wait ${until}`)
    .option(
      '--wait-timeout-secs <n>',
      'with --wait: give up (exit 1) after this many seconds; by default it waits as long as it takes',
      parseInteger(1),
    );
}

export function waitTimeoutMs(flags: WaitFlags): number | undefined {
  return flags.waitTimeoutSecs === undefined ? undefined : flags.waitTimeoutSecs * 1000;
}

export interface ListFlags {
  label?: Record<string, string>;
  limit?: number;
  cursor?: string;
  all?: boolean;
  status?: string;
}

export function addListOptions(cmd: Command, noun: string): Command {
  return cmd
    .option('-l, --label <KEY=VALUE>', `only ${noun} with this label (repeatable: all must match)`, collectKeyValue)
    .option('--limit <n>', 'page size, 1-500 (server default 50)', parseInteger(1, 500))
    .option('--cursor <cursor>', 'start at this page (a next_cursor printed before)')
    .option('--all', 'follow the cursors through every page');
}

/**
 * One page, or with --all every page from --cursor on, as one page without a next cursor
 * (that is also what --json prints for --all).
 */
export async function listPage<T>(
  flags: ListFlags,
  fetchPage: (options: ListOptions) => Promise<Page<T>>,
): Promise<Page<T>> {
  const options: ListOptions = { limit: flags.limit, status: flags.status, labels: flags.label };
  if (flags.all !== true) return fetchPage({ ...options, cursor: flags.cursor });
  const items = await collectPages((cursor) => fetchPage({ ...options, cursor }), flags.cursor);
  return { items, next_cursor: null };
}

/** A list for people (a table, or "no <noun>"), ids with --quiet, the page with --json; a note if more pages exist. */
export function printPage<T>(
  out: Output,
  page: Page<T>,
  view: { noun: string; id: (item: T) => string; table: (items: readonly T[]) => string },
): void {
  out.result(page, {
    ids: page.items.map(view.id),
    human: () => (page.items.length === 0 ? `no ${view.noun}` : view.table(page.items)),
  });
  if (page.next_cursor !== null) out.note(`more ${view.noun}: add --all, or --cursor ${page.next_cursor}`);
}
