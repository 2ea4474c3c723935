export { Executor } from './executor';
export { DataplaneConfigSchema, loadDataplaneConfig, type DataplaneConfig } from './config';
