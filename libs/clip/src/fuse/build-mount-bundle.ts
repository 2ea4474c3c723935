/**
 * `npm run build:mount -w @cryo/clip` (scripts/setup.sh runs it): build the mount process bundle
 * when it is missing or any of its inputs changed (mount-bundle.ts). Exits 1 when it cannot.
 */
import { ensureMountBundle } from './mount-bundle';

const state = await ensureMountBundle();
if (state.bundle === undefined) {
  console.error(`mount bundle: ${state.detail}`);
  process.exit(1);
}
if (!state.detail.endsWith('up to date')) console.log(`mount bundle: ${state.detail}`);
