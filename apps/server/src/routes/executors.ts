/** /v1/executors: what the server observes of each executor. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { ExecutorViewSchema, pageOf } from '@cryo/snapshot';
import type { ExecutorService } from '../services/executor-service';
import { errorReplies } from './schemas';

export const executorRoutes: FastifyPluginAsyncZod<{ executors: ExecutorService }> = async (app, { executors }) => {
  app.get('/executors', {
    schema: {
      summary: 'List executors: state, last heartbeat, capacity, sandboxes, cached snapshot images',
      tags: ['executors'],
      response: { 200: pageOf(ExecutorViewSchema), ...errorReplies(401) },
    },
  }, async () => ({ items: await executors.list(), next_cursor: null }));
};
