import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { UI_CSP, uiRoutes } from './ui';

let app: FastifyInstance;
let dir: string;

async function serve(files: Record<string, string>): Promise<void> {
  dir = mkdtempSync(join(tmpdir(), 'cryo-ui-test-'));
  for (const [name, body] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), body);
  }
  app = Fastify();
  await app.register(uiRoutes, { dir });
  await app.ready();
}

afterEach(async () => {
  await app.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('/ui', () => {
  it('serves the built page with a same-origin CSP, and hashed assets for good', async () => {
    await serve({ 'index.html': '<!doctype html><div id="app"></div>', 'assets/index-abc123.js': 'console.log(1)' });
    const bare = await app.inject({ url: '/ui' });
    expect(bare.statusCode).toBe(301);
    expect(bare.headers.location).toBe('/ui/');
    const page = await app.inject({ url: '/ui/' });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('<div id="app">');
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toBe(UI_CSP);
    expect(page.headers['cache-control']).toBe('no-cache');
    const asset = await app.inject({ url: '/ui/assets/index-abc123.js' });
    expect(asset.statusCode).toBe(200);
    expect(asset.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect((await app.inject({ url: '/ui/assets/missing.js' })).statusCode).toBe(404);
    expect((await app.inject({ url: '/ui/../package.json' })).statusCode).toBe(404);
  });

  it('answers 503 naming the command to run when the dashboard is not built', async () => {
    await serve({});
    for (const url of ['/ui', '/ui/', '/ui/assets/index.js']) {
      const reply = await app.inject({ url });
      expect(reply.statusCode, url).toBe(503);
      expect(reply.body).toContain('npm run build:ui');
    }
  });
});
