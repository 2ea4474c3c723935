/**
 * The actions the dashboard offers on a sandbox or a snapshot, as data: a label, when it
 * applies, the fields it asks for, and the API call it makes. The action bar renders any list
 * of these, so a new action (fork, rollback: issue 12) is one more entry here.
 */
import type { CryoApi, ForkResponse, RestoreMode, Sandbox, Snapshot } from './api';
import { durationInput, formatCountdown, formatDuration, parseDuration } from './format';

export type FieldSpec<T> =
  | { name: string; label: string; kind: 'select'; options: readonly string[]; initial: (item: T) => string }
  | { name: string; label: string; kind: 'text'; initial: (item: T) => string; placeholder?: string; hint?: string };

export type FieldValues = Record<string, string>;

export interface Action<T> {
  /** Stable id, also the button's data-action attribute. */
  id: string;
  label: string;
  /** null when the action applies to the item, else why not (the disabled button's tooltip). */
  unavailable(item: T): string | null;
  /** Asked for in a small form before running; none = runs on click. */
  fields?: ReadonlyArray<FieldSpec<T>>;
  /** Destructive: a second click confirms. */
  danger?: boolean;
  /** Calls the API; resolves with what to tell the user. Errors are shown as they come. */
  run(api: CryoApi, item: T, values: FieldValues): Promise<string>;
}

const RESTORE_MODES: readonly RestoreMode[] = ['eager', 'lazy'];

const ttlField = <T>(initial: (item: T) => string): FieldSpec<T> => ({
  name: 'ttl', label: 'TTL', kind: 'text', initial, placeholder: '1h', hint: 'e.g. 90s, 30m, 12h, 7d; 0 = never',
});

const modeField = <T>(initial: (item: T) => string): FieldSpec<T> => ({
  name: 'mode', label: 'Mode', kind: 'select', options: RESTORE_MODES, initial,
});

const countField = <T>(): FieldSpec<T> => ({
  name: 'count', label: 'Count', kind: 'text', initial: () => '2', placeholder: '2', hint: '1-100 sandboxes',
});

function restoreMode(text: string | undefined): RestoreMode {
  return RESTORE_MODES.find((m) => m === text) ?? 'eager';
}

/** A whole number 1..100, or an error a person can act on. */
function forkCount(text: string | undefined): number {
  const n = Number((text ?? '').trim());
  if (!Number.isInteger(n) || n < 1 || n > 100) throw new Error(`count must be a whole number from 1 to 100, got "${text ?? ''}"`);
  return n;
}

/** "3 forks of snap-1 started on exec-a, exec-b (1 could not be placed)". */
function forkSummary(answer: ForkResponse): string {
  const executors = [...new Set(answer.sandboxes.flatMap((s) => (s.executor_id === null ? [] : [s.executor_id])))];
  const unplaced = answer.sandboxes.filter((s) => s.status === 'terminated').length;
  return `${answer.sandboxes.length} forks of ${answer.snapshot_id} started on ${executors.join(', ') || 'no executor'}` +
    (unplaced > 0 ? ` (${unplaced} could not be placed)` : '') +
    (answer.fallback === undefined ? '' : `; ${answer.fallback.reason}`);
}

/** "" = the server's default TTL. */
function ttlBody(text: string | undefined): { ttl_secs?: number } {
  if (text === undefined || text.trim() === '') return {};
  return { ttl_secs: parseDuration(text) };
}

export const SANDBOX_ACTIONS: ReadonlyArray<Action<Sandbox>> = [
  {
    id: 'snapshot',
    label: 'Snapshot',
    unavailable: (s) => (s.status === 'running' ? null : `the sandbox is ${s.status}; only a running sandbox can be snapshotted`),
    fields: [ttlField(() => '')],
    async run(api, s, values) {
      const created = await api.createSnapshot(s.sandbox_id, ttlBody(values.ttl));
      return `snapshot ${created.snapshot_id} of ${s.sandbox_id} started`;
    },
  },
  {
    id: 'fork',
    label: 'Fork',
    unavailable: (s) => (s.status === 'running' ? null : `the sandbox is ${s.status}; only a running sandbox can be forked`),
    fields: [countField(), modeField(() => 'eager')],
    async run(api, s, values) {
      const answer = await api.forkSandbox(s.sandbox_id, { count: forkCount(values.count), mode: restoreMode(values.mode) });
      return `snapshot ${answer.snapshot_id} of ${s.sandbox_id} taken; ${forkSummary(answer)} once it is active`;
    },
  },
  {
    id: 'rollback',
    label: 'Roll back',
    danger: true,
    unavailable: (s) => (s.status === 'running' ? null : `the sandbox is ${s.status}; only a running sandbox can be rolled back`),
    fields: [
      { name: 'snapshot', label: 'Snapshot', kind: 'text', initial: () => '', placeholder: 'snap-…', hint: 'an active snapshot of this namespace' },
      modeField((s) => s.restore_mode ?? 'eager'),
    ],
    async run(api, s, values) {
      const snapshotId = (values.snapshot ?? '').trim();
      if (snapshotId === '') throw new Error('name the snapshot to roll back to');
      const answer = await api.rollbackSandbox(s.sandbox_id, { snapshot_id: snapshotId, mode: restoreMode(values.mode) });
      return `sandbox ${s.sandbox_id} is ${answer.status}: rolling back to ${answer.snapshot_id} (${answer.restore_mode})`;
    },
  },
  {
    id: 'delete',
    label: 'Delete',
    danger: true,
    unavailable: (s) => (s.status === 'terminated' ? 'the sandbox has ended' : null),
    async run(api, s) {
      await api.deleteSandbox(s.sandbox_id);
      return `sandbox ${s.sandbox_id} deleted`;
    },
  },
];

export const SNAPSHOT_ACTIONS: ReadonlyArray<Action<Snapshot>> = [
  {
    id: 'restore',
    label: 'Restore',
    unavailable: (s) => (s.status === 'active' ? null : `the snapshot is ${s.status}; only an active snapshot can be restored`),
    fields: [modeField((s) => (s.clip_index_ref === null ? 'eager' : 'lazy'))],
    async run(api, s, values) {
      const mode = restoreMode(values.mode);
      const restored = await api.restoreSnapshot(s.snapshot_id, { mode });
      return `restoring ${s.snapshot_id} (${mode}) as sandbox ${restored.sandbox_id}`;
    },
  },
  {
    id: 'fork',
    label: 'Fork',
    unavailable: (s) => (s.status === 'active' ? null : `the snapshot is ${s.status}; only an active snapshot can be forked`),
    fields: [countField(), modeField((s) => (s.clip_index_ref === null ? 'eager' : 'lazy'))],
    async run(api, s, values) {
      return forkSummary(await api.forkSnapshot(s.snapshot_id, { count: forkCount(values.count), mode: restoreMode(values.mode) }));
    },
  },
  {
    id: 'ttl',
    label: 'Change TTL',
    unavailable: (s) => (['creating', 'active', 'failed'].includes(s.status) ? null : `the snapshot is ${s.status}`),
    fields: [ttlField((s) => durationInput(s.ttl_secs))],
    async run(api, s, values) {
      const ttl = parseDuration(values.ttl ?? '');
      const updated = await api.setSnapshotTtl(s.snapshot_id, ttl);
      return `TTL of ${s.snapshot_id} is now ${ttl === 0 ? 'unlimited' : formatDuration(ttl)}; expires ${formatCountdown(updated.expires_at, Date.now())}`;
    },
  },
  {
    id: 'delete',
    label: 'Delete',
    danger: true,
    unavailable: (s) => (['deleting', 'deleted', 'expired'].includes(s.status) ? `the snapshot is ${s.status}` : null),
    async run(api, s) {
      await api.deleteSnapshot(s.snapshot_id);
      return `snapshot ${s.snapshot_id} is being deleted from the registry and every executor`;
    },
  },
];

/** Creating a sandbox from an image: the form above the sandboxes table. */
export async function createSandbox(api: CryoApi, image: string, command: string, timeout: string): Promise<string> {
  const argv = command.trim() === '' ? undefined : splitCommand(command);
  const body = {
    image: image.trim(),
    ...(argv === undefined ? {} : { command: argv }),
    ...(timeout.trim() === '' ? {} : { timeout_secs: parseDuration(timeout) }),
  };
  const created = await api.createSandbox(body);
  return `sandbox ${created.sandbox_id} is ${created.status}`;
}

/** Splits a command line on spaces, keeping "double" or 'single' quoted words whole. */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  for (const match of line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) words.push(match[1] ?? match[2] ?? match[3] ?? '');
  return words;
}
