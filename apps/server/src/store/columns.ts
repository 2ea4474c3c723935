/** Decoding of the JSON columns: what went into SQLite as JSON comes back checked, not cast. */
import { z } from 'zod';

export function decodeJson<T>(schema: z.ZodType<T>, text: string, column: string): T {
  const parsed = schema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`column ${column} holds unexpected JSON: ${parsed.error.message}`);
  return parsed.data;
}

export function decodeJsonOrNull<T>(schema: z.ZodType<T>, text: string | null, column: string): T | null {
  return text === null ? null : decodeJson(schema, text, column);
}

export const StringMapSchema = z.record(z.string(), z.string());
export const StringListSchema = z.array(z.string());
