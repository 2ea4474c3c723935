/**
 * Operations are idempotent on the executor: the same op id twice does the work once. The
 * journal on disk remembers which ops started and how they ended, across restarts.
 */
import { join } from 'node:path';
import type { OpResultBody, OperationKind } from '@cryo/snapshot';
import { JsonJournal } from './json-journal';

export type OpRecord =
  | { op_id: string; kind: OperationKind; state: 'running'; started_at: string; pid: number; sandbox_id: string | null }
  | { op_id: string; kind: OperationKind; state: 'done'; finished_at: string; result: OpResultBody; reported: boolean };

export class OpJournal {
  private readonly journal: JsonJournal<OpRecord>;
  constructor(stateDir: string) {
    this.journal = new JsonJournal(join(stateDir, 'ops'));
  }
  get(opId: string): OpRecord | undefined {
    return this.journal.read(opId);
  }
  started(opId: string, kind: OperationKind, sandboxId: string | null): void {
    this.journal.write(opId, { op_id: opId, kind, state: 'running', started_at: new Date().toISOString(), pid: process.pid, sandbox_id: sandboxId });
  }
  finished(opId: string, kind: OperationKind, result: OpResultBody, reported: boolean): void {
    this.journal.write(opId, { op_id: opId, kind, state: 'done', finished_at: new Date().toISOString(), result, reported });
  }
  all(): OpRecord[] {
    return this.journal.entries().map(([, r]) => r);
  }
  forget(opId: string): void {
    this.journal.remove(opId);
  }
}
