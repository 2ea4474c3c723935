/**
 * Corrections to the OpenAPI document @fastify/swagger builds from the route schemas, so that
 * it says what the server enforces. @fastify/swagger marks every request body `required: true`;
 * a route whose body schema admits null (routes/schemas.ts `optionalBody`: an empty body is
 * parsed as none) takes no body at all as well, so its body is published as optional, with the
 * object schema alone.
 */
type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The schema without its null alternative, or null when the schema does not admit null. */
function withoutNull(schema: Json): Json | null {
  const anyOf = schema.anyOf;
  if (!Array.isArray(anyOf)) return null;
  const rest = anyOf.filter((branch) => !(isObject(branch) && branch.type === 'null'));
  if (rest.length === anyOf.length) return null;
  const { anyOf: _alternatives, ...common } = schema;
  const only = rest[0];
  return rest.length === 1 && isObject(only) ? { ...common, ...only } : { ...common, anyOf: rest };
}

/** Rewrites `document` in place (and returns it): optional request bodies become `required: false`. */
export function documentOptionalBodies<T>(document: T): T {
  const paths = isObject(document) ? document.paths : undefined;
  if (!isObject(paths)) return document;
  for (const operations of Object.values(paths)) {
    if (!isObject(operations)) continue;
    for (const operation of Object.values(operations)) {
      const body = isObject(operation) ? operation.requestBody : undefined;
      if (!isObject(body) || !isObject(body.content)) continue;
      for (const media of Object.values(body.content)) {
        if (!isObject(media) || !isObject(media.schema)) continue;
        const schema = withoutNull(media.schema);
        if (schema === null) continue;
        media.schema = schema;
        body.required = false;
      }
    }
  }
  return document;
}
