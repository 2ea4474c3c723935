import type { Database } from '../db/database';

/** Namespaces are created on first use. */
export class NamespaceStore {
  constructor(private readonly db: Database) {}

  ensure(name: string, now: number): void {
    this.db.prepare('INSERT OR IGNORE INTO namespaces (name, created_at) VALUES (?, ?)').run(name, now);
  }
}
