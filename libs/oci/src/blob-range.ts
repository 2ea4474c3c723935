/**
 * Range reads of blobs (`GET /v2/<name>/blobs/<digest>` with `Range`), and what to do with
 * registries and proxies that answer them in other ways than the spec says.
 */
import { RegistryError } from '@cryo/registry-auth';
import { blobSubject, pullScope } from './scopes';
import { abandon, discard, headerValue, readBody, type RegistryResponse, type RegistryTransport } from './transport';

export interface BlobRangeOptions {
  /** the blob's size, when known (a manifest's descriptor): a 200 is checked against it */
  blobSize?: number;
  /** a 200 (the whole blob) to a range request: keep the range from it (default), or refuse it unread */
  wholeBlob?: 'keep-range' | 'refuse';
}

export interface RangeContext {
  transport: RegistryTransport;
  /** tells the client's owner, once per kind, about a registry that works but misbehaves */
  warnOnce: (kind: string, message: string) => void;
}

/**
 * Bytes `start..endInclusive` of a blob (fewer when the blob ends earlier), with one
 * `Range` request. A server that ignores Range and answers 200 with the whole blob still
 * works: the body is streamed, the window kept, the rest discarded (reading stops after the
 * window), and `onWarning` hears about it once per client. An answer that is neither the range
 * (206) nor the whole blob — e.g. 200 with only the requested part, or a 206 cut short — is a
 * REGISTRY_BAD_RESPONSE naming the registry, the range asked for and what came back.
 * `options.blobSize` (when the caller knows it, e.g. from a manifest) lets a 200 be checked to
 * really be the whole blob. With `options.wholeBlob: 'refuse'` a 200 is not read at all: the
 * connection is closed at once and the answer is a REGISTRY_BAD_RESPONSE with status 200 — what a
 * caller with another source wants from a pull-through cache that does not hold the blob yet
 * (distribution's proxy then streams the whole blob from upstream, ignoring Range).
 */
export async function getBlobRange(
  ctx: RangeContext,
  repository: string,
  digest: string,
  start: number,
  endInclusive: number,
  options: BlobRangeOptions = {},
): Promise<Buffer> {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(endInclusive) || start < 0 || endInclusive < start) {
    throw new RangeError(`invalid byte range ${start}-${endInclusive}`);
  }
  const subject = blobSubject(repository, digest);
  const response = await ctx.transport.send({
    method: 'GET',
    path: `/v2/${repository}/blobs/${digest}`,
    scope: pullScope(repository),
    headers: { range: `bytes=${start}-${endInclusive}` },
  });
  const wanted = endInclusive - start + 1;
  const asked = `a range request for bytes ${start}-${endInclusive} of ${subject.what}`;
  if (response.status === 206) {
    const range = parseContentRange(headerValue(response.headers, 'content-range'));
    if (range !== undefined && range.start !== start) {
      await discard(response);
      throw ctx.transport.badResponse(`answered range ${start}-${endInclusive} of ${subject.what} from offset ${range.start}`, 206);
    }
    const body = await readBody(response, wanted, subject.what, ctx.transport.host);
    // Fewer bytes than asked are fine only where the blob ends.
    const blobEnd = range?.size ?? options.blobSize;
    if (body.length < wanted && blobEnd !== undefined && start + body.length < blobEnd) {
      throw ctx.transport.badResponse(`answered ${asked} with ${body.length} bytes (HTTP 206), but the blob has ${blobEnd} bytes`, 206);
    }
    return body;
  }
  if (response.status === 200 && options.wholeBlob === 'refuse') {
    abandon(response);
    const length = headerValue(response.headers, 'content-length');
    throw ctx.transport.badResponse(`answered 200 (the whole blob${length === undefined ? '' : `, ${length} bytes`}) to ${asked}: it serves no ranges of this blob (yet)`, 200);
  }
  if (response.status === 200) return rangeOfWholeBlob(ctx, response, start, wanted, asked, options.blobSize);
  if (response.status === 416) {
    const range = parseContentRange(headerValue(response.headers, 'content-range'));
    await discard(response);
    const size = range?.size !== undefined ? ` (its size is ${range.size})` : '';
    throw ctx.transport.badResponse(`cannot serve bytes ${start}-${endInclusive} of ${subject.what}${size} (HTTP 416)`, 416);
  }
  throw await ctx.transport.failure(response, subject, 'a blob range read');
}

/** A 200 to a range request must be the whole blob: keep the window, discard the rest, stop reading after it. */
async function rangeOfWholeBlob(
  ctx: RangeContext,
  response: RegistryResponse,
  start: number,
  wanted: number,
  asked: string,
  blobSize: number | undefined,
): Promise<Buffer> {
  const declared = Number(headerValue(response.headers, 'content-length'));
  const length = Number.isSafeInteger(declared) && declared >= 0 ? declared : undefined;
  const contentRange = headerValue(response.headers, 'content-range');
  const bytes = length === undefined ? 'a body of unknown length' : `${length} bytes`;
  if (contentRange !== undefined || (length !== undefined && blobSize !== undefined && length !== blobSize)) {
    await discard(response);
    const what = contentRange !== undefined ? ` and Content-Range "${contentRange}"` : `, but the blob has ${blobSize} bytes`;
    throw ctx.transport.badResponse(
      `answered 200 to ${asked} with ${bytes}${what}: a partial answer must be 206, a 200 must be the whole blob (is a proxy between cryo and the registry rewriting answers?)`,
      200,
    );
  }
  const out = Buffer.alloc(wanted);
  let filled = 0;
  let offset = 0;
  try {
    for await (const piece of response.body) {
      const chunk = Buffer.isBuffer(piece) ? piece : Buffer.from(String(piece));
      const from = Math.max(start - offset, 0);
      const to = Math.min(chunk.length, start + wanted - offset);
      if (to > from) filled += chunk.copy(out, filled, from, to);
      offset += chunk.length;
      if (filled === wanted) break;
    }
  } catch (error) {
    throw new RegistryError('REGISTRY_UNREACHABLE', `registry ${ctx.transport.host} is unreachable: connection lost while reading the answer to ${asked}`, {
      host: ctx.transport.host,
      cause: error,
    });
  } finally {
    abandon(response);
  }
  const ended = filled < wanted; // the body ended before the window did
  const total = ended ? offset : length;
  if (offset <= start || (ended && blobSize !== undefined && offset < blobSize) || (ended && length !== undefined && offset < length)) {
    throw ctx.transport.badResponse(`answered 200 to ${asked} with ${offset} bytes${length !== undefined ? ` (Content-Length ${length})` : ''}`, 200);
  }
  ctx.warnOnce(
    'range-ignored',
    `registry ${ctx.transport.host} ignores Range: it answered 200 with the whole blob (${total === undefined ? 'length not given' : `${total} bytes`}) to ${asked}; ` +
      'the bytes needed are kept and the rest discarded, but every read downloads the blob up to its end',
  );
  return out.subarray(0, filled);
}

function parseContentRange(value: string | undefined): { start: number; end: number | undefined; size: number | undefined } | undefined {
  if (value === undefined) return undefined;
  const match = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(value.trim());
  if (!match) return undefined;
  const size = match[3] === undefined || match[3] === '*' ? undefined : Number(match[3]);
  if (match[1] === undefined || match[2] === undefined) return { start: -1, end: undefined, size };
  return { start: Number(match[1]), end: Number(match[2]), size };
}
