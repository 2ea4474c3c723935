import { sql, type SqlBool } from 'kysely';
import { changedRows, type SqlContext } from './sql';

/**
 * Leases: a named duty held by one replica until `expires_at` (milliseconds, the replicas'
 * clocks, which must be kept in sync as for every other timestamp). Taking one is a single
 * compare-and-set: the row is free, expired, or already ours.
 */
export class LeaseStore {
  constructor(private readonly ctx: SqlContext) {}

  /**
   * Takes or renews the lease; true when `holder` holds it until `expiresAt`. `takeOver` takes it
   * from any holder (a database only one server can use: the holder is a crashed predecessor).
   */
  async acquire(name: string, holder: string, now: number, expiresAt: number, takeOver = false): Promise<boolean> {
    const row = await this.ctx.db.insertInto('leases')
      .values({ name, holder, acquired_at: now, expires_at: expiresAt })
      .onConflict((oc) => oc.column('name').doUpdateSet((eb) => ({
        holder: eb.ref('excluded.holder'),
        expires_at: eb.ref('excluded.expires_at'),
        acquired_at: eb.case().when('leases.holder', '=', holder).then(eb.ref('leases.acquired_at'))
          .else(eb.ref('excluded.acquired_at')).end(),
      })).where((eb) => (takeOver ? sql<SqlBool>`1 = 1` : eb.or([eb('leases.holder', '=', holder), eb('leases.expires_at', '<', now)]))))
      .returning('holder')
      .executeTakeFirst();
    return row?.holder === holder;
  }

  /** Gives the lease up at once (a clean shutdown), if `holder` has it. */
  async release(name: string, holder: string): Promise<boolean> {
    const result = await this.ctx.db.deleteFrom('leases').where('name', '=', name).where('holder', '=', holder).executeTakeFirst();
    return changedRows(result) === 1;
  }

  get(name: string): Promise<{ holder: string; acquired_at: number; expires_at: number } | undefined> {
    return this.ctx.db.selectFrom('leases').select(['holder', 'acquired_at', 'expires_at']).where('name', '=', name).executeTakeFirst();
  }
}
