/**
 * The OpenAPI document and its reference UI, from the route schemas (zod, via
 * fastify-type-provider-zod): the document at /docs/json (and /docs/yaml), Swagger UI at /docs
 * served from @fastify/swagger-ui's own files (no CDN). The API's main shapes are named
 * components (`#/components/schemas/Snapshot`, ...), so the UI, docs/api.md and client
 * generators show them once by name.
 */
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { createJsonSchemaTransform, createJsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { documentOptionalBodies } from '../http/openapi';
import { ErrorBodySchema, ExecutorViewSchema, SandboxSchema, SnapshotSchema } from '@cryo/snapshot';

/** Named schemas of the public API; everything else stays inline where it is used. */
const COMPONENTS = {
  Sandbox: SandboxSchema,
  Snapshot: SnapshotSchema,
  Executor: ExecutorViewSchema,
  Error: ErrorBodySchema,
};

// The names go into zod's global registry, where the schemas' own metadata (descriptions,
// maxProperties of labels and env) already lives: a separate registry would publish the names but
// drop that metadata, and the document would no longer say what the server enforces.
const components = z.globalRegistry;
for (const [id, schema] of Object.entries(COMPONENTS)) components.add(schema, { ...components.get(schema), id });

// OpenAPI 3.1 (JSON Schema 2020-12) like the route schemas: the key rules of labels and env
// (propertyNames) survive, which 3.0 cannot express.
const namedSchemas = createJsonSchemaTransformObject({ schemaRegistry: components });

/**
 * The transform adds an input and an output variant of every named schema; drop the ones the
 * document never refers to (directly or through another kept schema).
 */
export function pruneUnusedSchemas(doc: object, schemas: Record<string, unknown>): void {
  const refsIn = (value: unknown): string[] =>
    [...JSON.stringify(value).matchAll(/"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1] ?? '');
  const used = new Set(refsIn({ ...doc, components: {} }));
  for (let grew = true; grew;) {
    grew = false;
    for (const name of [...used]) {
      for (const ref of refsIn(schemas[name])) {
        if (!used.has(ref)) {
          used.add(ref);
          grew = true;
        }
      }
    }
  }
  for (const name of Object.keys(schemas)) if (!used.has(name)) delete schemas[name];
}

/** Swagger UI sets inline styles; everything else is same-origin. */
const DOCS_CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'";

/** Registers the OpenAPI generator (before any route, so it sees them all) and /docs. */
export async function registerApiReference(app: FastifyInstance, version: string): Promise<void> {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'cryo server',
        description: 'Sandboxes, snapshots in an OCI registry, and the executor protocol.',
        version,
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: createJsonSchemaTransform({ schemaRegistry: components }),
    transformObject: (input) => {
      const doc = namedSchemas(input);
      if ('components' in doc && doc.components?.schemas !== undefined) pruneUnusedSchemas(doc, doc.components.schemas);
      return documentOptionalBodies(doc);
    },
  });
  await app.register(fastifySwaggerUi, {
    routePrefix: '/docs',
    uiConfig: { validatorUrl: null, deepLinking: true },
    staticCSP: DOCS_CSP,
  });
}
