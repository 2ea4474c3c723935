/**
 * The OpenAPI document exactly as a running server serves it at /docs/json, built in process
 * (a throwaway server on a temporary database; nothing listens) for docs/api.md.
 */
import { fileURLToPath } from 'node:url';
import { Harness } from '../testing/harness';
import { renderApiMarkdown } from './api-markdown';

/** docs/api.md of this checkout. */
export const API_MD_PATH = fileURLToPath(new URL('../../../../docs/api.md', import.meta.url));

export async function openApiDocument(): Promise<unknown> {
  const harness = await Harness.start();
  try {
    return harness.server.app.swagger();
  } finally {
    await harness.close();
  }
}

/** What docs/api.md must contain for the current route schemas. */
export async function apiMarkdown(): Promise<string> {
  return renderApiMarkdown(await openApiDocument());
}
