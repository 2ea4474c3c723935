/**
 * Keyset pagination: lists are ordered newest first by (created_at, id), and the cursor is the
 * position of the last item returned, base64url-encoded so clients treat it as opaque. Rows
 * inserted while a client pages never shift the pages it has not read yet.
 */
import { z } from 'zod';
import { sql, type RawBuilder, type SqlBool } from 'kysely';
import { CryoError, parseLabelFilters } from '@cryo/snapshot';
import type { Dialect } from '../db/migrations';
import { jsonText } from './sql-dialect';

const CursorSchema = z.object({ t: z.number().int(), id: z.string() });
export type Cursor = z.infer<typeof CursorSchema>;

export function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

export function decodeCursor(text: string): Cursor {
  try {
    return CursorSchema.parse(JSON.parse(Buffer.from(text, 'base64url').toString('utf8')));
  } catch {
    throw new CryoError('INVALID_REQUEST', 'querystring.cursor: not a cursor returned by this server');
  }
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

const LABEL_KEY = /^[A-Za-z0-9._/-]{1,63}$/;

/**
 * Adds the filters every list shares: `status` (one value or a comma-separated list, checked
 * against the resource's states), `label` (k=v, repeatable, all must match) and the cursor.
 */
export function listFilters(
  dialect: Dialect,
  query: { status?: string | undefined; label?: string | string[] | undefined; cursor?: string | undefined },
  statuses: readonly string[],
): Array<RawBuilder<SqlBool>> {
  const out: Array<RawBuilder<SqlBool>> = [];
  if (query.status !== undefined) {
    const wanted = query.status.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    const unknown = wanted.filter((s) => !statuses.includes(s));
    if (wanted.length === 0 || unknown.length > 0) {
      throw new CryoError(
        'INVALID_REQUEST',
        `querystring.status: unknown status "${unknown.join(',') || query.status}"; expected one of ${statuses.join(', ')}`,
      );
    }
    out.push(sql<SqlBool>`status IN (${sql.join(wanted)})`);
  }
  let labels: Array<[string, string]>;
  try {
    labels = parseLabelFilters(query.label);
  } catch (err) {
    throw new CryoError('INVALID_REQUEST', `querystring.label: ${err instanceof Error ? err.message : String(err)}`);
  }
  for (const [key, value] of labels) {
    if (!LABEL_KEY.test(key)) {
      throw new CryoError('INVALID_REQUEST', `querystring.label: "${key}" is not a valid label key`);
    }
    out.push(sql<SqlBool>`${jsonText(dialect, 'labels', key)} = ${value}`);
  }
  if (query.cursor !== undefined) {
    const cursor = decodeCursor(query.cursor);
    out.push(sql<SqlBool>`(created_at < ${cursor.t} OR (created_at = ${cursor.t} AND id < ${cursor.id}))`);
  }
  return out;
}

/** Turns `limit + 1` fetched rows into a page and the cursor to the next one. */
export function toPage<R extends { id: string; created_at: number }, T>(
  rows: R[],
  limit: number,
  view: (row: R) => T,
): Page<T> {
  const more = rows.length > limit;
  const shown = more ? rows.slice(0, limit) : rows;
  const last = shown.at(-1);
  return {
    items: shown.map(view),
    next_cursor: more && last !== undefined ? encodeCursor({ t: last.created_at, id: last.id }) : null,
  };
}
