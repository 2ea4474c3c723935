/**
 * vitest global setup of the `unit-pg` project: one real PostgreSQL for the run (fsync off: test
 * data need not survive a power cut), its URL provided to the tests, stopped at the end. Each
 * test server works in its own schema (harness.ts).
 */
import type { TestProject } from 'vitest/node';
import { startPostgres } from './postgres';

declare module 'vitest' {
  export interface ProvidedContext {
    cryoPostgresUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await startPostgres({ settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' } });
  project.provide('cryoPostgresUrl', postgres.url);
  return () => postgres.stop();
}
