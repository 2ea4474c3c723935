/**
 * Before the executor pauses a container it writes that down, on disk; after the unpause it
 * removes the note. A restarted executor unpauses every container still noted, so a crash in the
 * middle of a snapshot never leaves a sandbox frozen.
 */
import { join } from 'node:path';
import { JsonJournal } from './json-journal';

export interface PauseRecord {
  container_id: string;
  sandbox_id: string;
  op_id: string;
  paused_at: string;
  pid: number;
}

export class PauseJournal {
  private readonly journal: JsonJournal<PauseRecord>;
  constructor(stateDir: string) {
    this.journal = new JsonJournal(join(stateDir, 'paused'));
  }
  willPause(record: PauseRecord): void {
    this.journal.write(record.container_id, record);
  }
  unpaused(containerId: string): void {
    this.journal.remove(containerId);
  }
  pending(): PauseRecord[] {
    return this.journal.entries().map(([, record]) => record);
  }
}
