/** Response schemas shared by the route plugins, for validation of replies and for /docs. */
import { z } from 'zod';
import { ErrorBodySchema } from '@cryo/snapshot';

type ErrorStatus = 400 | 401 | 404 | 409 | 410 | 422 | 429 | 503 | 504;

/** The error replies a route documents; all share one body shape. */
export function errorReplies<S extends ErrorStatus>(...statuses: S[]): Record<S, typeof ErrorBodySchema> {
  return Object.fromEntries(statuses.map((s) => [s, ErrorBodySchema])) as Record<S, typeof ErrorBodySchema>;
}

export const AckSchema = z.object({
  ignored: z.boolean(),
  reason: z.string().nullable(),
});

/** A body whose fields are all optional may be left out: fastify validates a missing body as null. */
export function optionalBody<T extends z.ZodObject>(schema: T) {
  return schema.nullish().transform((body) => body ?? {});
}
