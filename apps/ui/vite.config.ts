/**
 * The dashboard is a static build served by cryo-server at /ui (apps/server/src/routes/ui.ts):
 * asset URLs are under /ui/, and everything ships in the build (no CDN at run time).
 */
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/ui/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // The dashboard is small; a single chunk keeps the page one request deep.
    chunkSizeWarningLimit: 300,
  },
  server: {
    // `npx vite` in apps/ui during development: the API comes from a local cryo-server.
    proxy: { '/v1': 'http://127.0.0.1:8900' },
  },
});
