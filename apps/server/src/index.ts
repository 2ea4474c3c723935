export { startServer, CryoServer, type RunningServer, type ServerOptions } from './server';
export { loadServerConfig, serverConfig, ServerConfigSchema, type ServerConfig, type ServerConfigInput } from './config';
export { ManualClock, systemClock, type Clock } from './clock';
export type { SnapshotImageRegistry } from './services/snapshot-registry';
