export * from './api';
export * from './api-lifecycle';
export * from './protocol';
export * from './errors';
export * from './ids';
export * from './naming';
