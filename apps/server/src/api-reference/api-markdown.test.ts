import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { API_MD_PATH, apiMarkdown, openApiDocument } from './api-document';
import { constraints, renderApiMarkdown, typeOf } from './api-markdown';

describe('docs/api.md', () => {
  it('is what the route schemas say (run `npm run docs:api` after changing a route or schema)', async () => {
    const expected = await apiMarkdown();
    const actual = readFileSync(API_MD_PATH, 'utf8');
    if (actual !== expected) {
      const lines = actual.split('\n');
      const first = expected.split('\n').findIndex((line, i) => line !== lines[i]);
      expect.fail(`docs/api.md differs from the route schemas from line ${first + 1} on; run \`npm run docs:api\` and commit it`);
    }
  });

  it('covers every operation of the OpenAPI document and names its schemas', async () => {
    const doc = await openApiDocument() as { paths: Record<string, Record<string, unknown>>; components: { schemas: Record<string, unknown> } };
    const markdown = renderApiMarkdown(doc);
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) expect(markdown).toContain(`### \`${method.toUpperCase()} ${path}\``);
    }
    expect(Object.keys(doc.components.schemas).sort()).toEqual(['Error', 'Executor', 'Sandbox', 'Snapshot']);
    expect(markdown).toContain('Answers **200** with [Snapshot](#schema-snapshot).');
  });
});

describe('rendering', () => {
  it('writes types the way a reader says them', () => {
    expect(typeOf({ type: 'string', nullable: true })).toBe('string or null');
    expect(typeOf({ type: ['integer', 'null'] })).toBe('integer or null');
    expect(typeOf({ type: 'array', items: { $ref: '#/components/schemas/Snapshot' } })).toBe('array of [Snapshot](#schema-snapshot)');
    expect(typeOf({ type: 'object', additionalProperties: { type: 'string' } })).toBe('map of string');
    expect(typeOf({ anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] })).toBe('string or array of string');
    expect(typeOf({ anyOf: [{ type: 'number' }, { type: 'null' }] })).toBe('number or null');
    expect(typeOf({ const: 'ok' })).toBe('`"ok"`');
    expect(typeOf({})).toBe('any');
  });

  it('turns constraints into words and leaves out the safe-integer bounds zod adds', () => {
    expect(constraints({ type: 'integer', minimum: 0, maximum: 500, default: 50 })).toEqual(['≥ 0', '≤ 500', 'default `50`']);
    expect(constraints({ type: 'number', minimum: 0, exclusiveMinimum: true, maximum: 256 })).toEqual(['> 0', '≤ 256']);
    expect(constraints({ type: 'integer', exclusiveMinimum: 0 })).toEqual(['> 0']);
    expect(constraints({ type: 'integer', minimum: -9007199254740991, maximum: 9007199254740991 })).toEqual([]);
    expect(constraints({ type: 'string', minLength: 1, maxLength: 64, pattern: '^a|b$' })).toEqual(['1–64 characters', 'matches `^a|b$`']);
    expect(constraints({ type: 'string', enum: ['eager', 'lazy'] })).toEqual(['one of `eager`, `lazy`']);
    expect(constraints({ type: 'array', minItems: 1 })).toEqual(['at least 1 item']);
  });

  it('flattens nested fields, escapes table cells and says which bodies are strict', () => {
    const markdown = renderApiMarkdown({
      info: { title: 't', version: '1' },
      paths: {
        '/v1/things/{id}': {
          post: {
            tags: ['things'],
            summary: 'Make a thing',
            parameters: [{ in: 'path', name: 'id', required: true, schema: { type: 'string', pattern: 'a|b' } }],
            requestBody: {
              required: true,
              content: { 'application/json': { schema: {
                type: 'object',
                additionalProperties: false,
                required: ['spec'],
                properties: {
                  spec: { type: 'object', properties: { size: { type: 'integer' } }, required: ['size'] },
                  parts: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' } } } },
                },
              } } },
            },
            responses: {
              202: { content: { 'application/json': { schema: { $ref: '#/components/schemas/Thing' } } } },
              404: { content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
            },
          },
        },
      },
      components: { schemas: { Thing: { type: 'object', properties: { id: { type: 'string' } } } } },
    });
    expect(markdown).toContain('| `id` | string | yes | matches `a\\|b` |');
    expect(markdown).toContain('| `spec.size` | integer | yes |  |');
    expect(markdown).toContain('| `parts[].name` | string | no |  |');
    expect(markdown).toContain('Other fields are rejected (400).');
    expect(markdown).toContain('Answers **202** with [Thing](#schema-thing).');
    expect(markdown).toContain('Errors: **404** with [Error](#schema-error).');
    expect(markdown).toContain('<a id="schema-thing"></a>');
  });
});
