/** Tag listing (`GET /v2/<name>/tags/list`), following `Link: <...>; rel="next"` pagination. */
import type { RegistryError } from '@cryo/registry-auth';
import { pullScope } from './scopes';
import { headerValue, readBody, type RegistryResponse, type RegistryTransport } from './transport';

const TAG_LIST_LIMIT = 16 * 1024 * 1024;
const MAX_PAGES = 10_000;

/** All tags of `repository` (checked by the caller), page by page. */
export async function listTags(transport: RegistryTransport, repository: string): Promise<string[]> {
  const tags: string[] = [];
  let path: string | URL = `/v2/${repository}/tags/list?n=1000`;
  for (let page = 0; page < MAX_PAGES; page++) {
    const response: RegistryResponse = await transport.send({ method: 'GET', path, scope: pullScope(repository) });
    if (response.status !== 200) throw await transport.failure(response, { what: `repository ${repository}`, repository }, 'listing tags');
    const body = await readBody(response, TAG_LIST_LIMIT, `tags of ${repository}`, transport.host);
    tags.push(...parseTagList(body, () => transport.badResponse(`sent an unreadable tag list for ${repository}`, 200)));
    const next = nextLink(headerValue(response.headers, 'link'));
    if (next === undefined) return tags;
    path = new URL(next, response.url);
  }
  return tags;
}

function parseTagList(body: Buffer, invalid: () => RegistryError): string[] {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw invalid();
  }
  if (typeof json !== 'object' || json === null || !('tags' in json)) throw invalid();
  const tags = json.tags;
  if (tags === null) return [];
  if (!Array.isArray(tags) || !tags.every((tag): tag is string => typeof tag === 'string')) throw invalid();
  return tags;
}

/** `<https://host/v2/repo/tags/list?last=x&n=1000>; rel="next"` -> the URL */
function nextLink(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(',')) {
    const match = /<([^>]+)>\s*;\s*rel="?next"?/i.exec(part);
    if (match?.[1] !== undefined) return match[1];
  }
  return undefined;
}
