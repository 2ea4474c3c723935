export * from './api';
export * from './protocol';
export * from './errors';
export * from './ids';
export * from './naming';
