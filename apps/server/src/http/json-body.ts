/**
 * How request bodies and query strings become values: exactly what the client sent, or a 400
 * naming where it is wrong. Nothing is changed on the way in:
 *
 * - bytes that are not UTF-8 are refused (decoding would turn them into U+FFFD);
 * - strings and keys holding a lone UTF-16 surrogate (`"\ud800"`) are refused: they are not
 *   Unicode text, and would be stored changed;
 * - `__proto__` keys and `constructor: {prototype: ...}` are refused, as fastify's own parser
 *   (secure-json-parse) does: copied into an object, such a key changes its prototype and vanishes;
 * - nesting deeper than MAX_JSON_DEPTH is refused (no cryo body nests more than four levels).
 */
import { isUtf8 } from 'node:buffer';
import { CryoError } from '@cryo/snapshot';

export const MAX_JSON_DEPTH = 32;

const LONE_SURROGATE = /\p{Surrogate}/u;

const refuse = (where: string, problem: string): CryoError => new CryoError('INVALID_REQUEST', `${where}: ${problem}`);

/** Parses a JSON request body; an empty body is `undefined` (a route whose fields are all optional). */
export function parseJsonBody(raw: Buffer): unknown {
  if (!isUtf8(raw)) throw refuse('body', 'not valid UTF-8; send JSON encoded as UTF-8');
  const text = raw.toString('utf8');
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw refuse('body', `not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  checkJsonValue(value, 'body');
  return value;
}

/**
 * Throws a CryoError naming the first place (`body.labels.__proto__`) where `value`, as parsed
 * by JSON.parse, holds a string that is not well-formed Unicode, a prototype-poisoning key, or
 * nests deeper than MAX_JSON_DEPTH. Iterative, so no input can overflow the stack.
 */
export function checkJsonValue(value: unknown, root: string): void {
  const stack: Array<{ value: unknown; where: string; depth: number }> = [{ value, where: root, depth: 0 }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { value: v, where, depth } = item;
    if (typeof v === 'string') {
      if (LONE_SURROGATE.test(v)) throw refuse(where, 'holds a lone UTF-16 surrogate; strings must be valid Unicode');
      continue;
    }
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= MAX_JSON_DEPTH) throw refuse(where, `nested deeper than ${MAX_JSON_DEPTH} levels`);
    if (Array.isArray(v)) {
      v.forEach((element, index) => stack.push({ value: element, where: `${where}.${index}`, depth: depth + 1 }));
      continue;
    }
    for (const [key, element] of Object.entries(v)) {
      const at = `${where}.${key}`;
      if (LONE_SURROGATE.test(key)) throw refuse(at, 'the key holds a lone UTF-16 surrogate; keys must be valid Unicode');
      if (key === '__proto__') throw refuse(at, 'the key "__proto__" is not allowed (prototype poisoning)');
      if (key === 'constructor' && typeof element === 'object' && element !== null && Object.hasOwn(element, 'prototype')) {
        throw refuse(at, 'a "constructor" object with a "prototype" key is not allowed (prototype poisoning)');
      }
      stack.push({ value: element, where: at, depth: depth + 1 });
    }
  }
}

/** Where parseQueryString leaves its refusal: it runs inside the router, which must not throw. */
export const QUERY_ERROR: unique symbol = Symbol('cryo.query-error');
export type ParsedQuery = Record<string, string | string[]> & { [QUERY_ERROR]?: CryoError };

/**
 * Parses a query string (`a=1&label=x&label=y`) strictly: `+` is a space, percent-escapes must
 * decode to UTF-8 (fastify's default parser keeps a malformed escape as literal text, so
 * `label=k=%FF` would silently filter on "%FF"), a repeated key becomes an array. The result has
 * no prototype, so no key can reach Object.prototype. A malformed query is not thrown (the
 * router calls this) but left under QUERY_ERROR for a hook to answer with.
 */
export function parseQueryString(text: string): ParsedQuery {
  const out = Object.create(null) as ParsedQuery;
  for (const part of text.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decodeQueryComponent(eq < 0 ? part : part.slice(0, eq));
    const value = eq < 0 ? '' : decodeQueryComponent(part.slice(eq + 1));
    if (key === null || value === null) {
      out[QUERY_ERROR] ??= refuse('querystring', `"${part.slice(0, 100)}" is not valid percent-encoded UTF-8`);
      continue;
    }
    const seen = out[key];
    if (seen === undefined) out[key] = value;
    else if (Array.isArray(seen)) seen.push(value);
    else out[key] = [seen, value];
  }
  return out;
}

function decodeQueryComponent(text: string): string | null {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch {
    return null;
  }
}
