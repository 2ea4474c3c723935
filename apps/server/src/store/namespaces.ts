import type { Database } from '../db/database';
import { statement } from '../db/statements';

/** Namespaces are created on first use. */
export class NamespaceStore {
  constructor(private readonly db: Database) {}

  ensure(name: string, now: number): void {
    statement(this.db, 'INSERT OR IGNORE INTO namespaces (name, created_at) VALUES (?, ?)').run(name, now);
  }
}
