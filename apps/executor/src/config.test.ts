import { describe, expect, it } from 'vitest';
import { ExecutorConfigSchema, isLoopbackListen, parseListen } from './config';

const base = { token: 't' };

describe('metrics.listen', () => {
  it('is off without the block, and takes loopback addresses', () => {
    expect(ExecutorConfigSchema.parse(base).metrics).toBeUndefined();
    for (const listen of ['127.0.0.1:9101', 'localhost:9101', '[::1]:9101', '127.0.0.2:1']) {
      expect(ExecutorConfigSchema.parse({ ...base, metrics: { listen } }).metrics).toEqual({ listen, allow_non_loopback: false });
    }
    expect(parseListen('[::1]:9101')).toEqual({ host: '::1', port: 9101 });
  });

  it('refuses any other address unless allow_non_loopback, naming the key and what to do', () => {
    const refused = ExecutorConfigSchema.safeParse({ ...base, metrics: { listen: '0.0.0.0:9101' } });
    expect(refused.success).toBe(false);
    expect(refused.error?.issues[0]?.path).toEqual(['metrics', 'listen']);
    expect(refused.error?.issues[0]?.message).toMatch(/not a loopback address.*allow_non_loopback: true/);
    expect(ExecutorConfigSchema.parse({ ...base, metrics: { listen: '10.0.0.5:9101', allow_non_loopback: true } }).metrics?.listen).toBe('10.0.0.5:9101');
    expect(isLoopbackListen('128.0.0.1:80')).toBe(false);
    expect(ExecutorConfigSchema.safeParse({ ...base, metrics: { listen: '9101' } }).success).toBe(false);
  });
});
