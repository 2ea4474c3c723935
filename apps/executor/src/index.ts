export { Executor } from './executor';
export { ExecutorConfigSchema, loadExecutorConfig, type ExecutorConfig } from './config';
