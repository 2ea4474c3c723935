/**
 * The web dashboard at /ui: the static build of apps/ui (Vite), served from disk with
 * @fastify/static. The page talks to /v1 with the API key the user signs in with; nothing is
 * loaded from elsewhere, which the Content-Security-Policy below enforces in the browser.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';

/** Where `npm run build -w @cryo/ui` writes the dashboard. */
export const DEFAULT_UI_DIR = fileURLToPath(new URL('../../../ui/dist', import.meta.url));

/** Same-origin only: scripts, styles, API calls; no inline script, no framing. */
export const UI_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export interface UiRoutesOptions {
  /** The built dashboard (index.html and assets/). */
  dir: string;
}

export const uiRoutes: FastifyPluginAsync<UiRoutesOptions> = async (app, { dir }) => {
  app.addHook('onSend', async (_request, reply) => {
    reply.header('content-security-policy', UI_CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
  });

  if (!existsSync(join(dir, 'index.html'))) {
    const notBuilt = async (_request: unknown, reply: FastifyReply) =>
      reply.code(503).type('text/plain; charset=utf-8').send(
        `The dashboard is not built (no ${join(dir, 'index.html')}). Run \`npm run build:ui\` (scripts/setup.sh does it), then restart the server.\n`,
      );
    app.get('/ui', { schema: { hide: true } }, notBuilt);
    app.get('/ui/*', { schema: { hide: true } }, notBuilt);
    return;
  }

  await app.register(fastifyStatic, {
    root: dir,
    prefix: '/ui', // and with redirect, /ui answers 301 to /ui/
    redirect: true,
    decorateReply: false,
    cacheControl: false, // set below, per file
    // Vite names assets by content hash: cache them for good, but always revalidate the page.
    setHeaders(res, path) {
      res.setHeader('cache-control', path.includes('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache');
    },
  });
};
