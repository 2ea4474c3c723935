/** `npm run docs:api`: rewrites docs/api.md from the route schemas. */
import { writeFileSync } from 'node:fs';
import { API_MD_PATH, apiMarkdown } from './api-document';

const markdown = await apiMarkdown();
writeFileSync(API_MD_PATH, markdown);
console.log(`wrote ${API_MD_PATH} (${markdown.split('\n').length} lines)`);
