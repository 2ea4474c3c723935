import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['libs/*/src/**/*.test.ts', 'apps/*/src/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        // The server's unit and API tests again, against a real PostgreSQL (each server its own schema).
        test: {
          name: 'unit-pg',
          include: ['apps/server/src/**/*.test.ts'],
          env: { CRYO_TEST_DATABASE: 'postgres' },
          globalSetup: ['apps/server/src/testing/postgres-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          // e2e suites share Docker engines and ports; run files one at a time.
          fileParallelism: false,
        },
      },
    ],
  },
});
