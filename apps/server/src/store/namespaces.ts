import type { SqlContext } from './sql';

/** Namespaces are created on first use. */
export class NamespaceStore {
  constructor(private readonly ctx: SqlContext) {}

  async ensure(name: string, now: number): Promise<void> {
    await this.ctx.db.insertInto('namespaces').values({ name, created_at: now })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
  }
}
