// FUSE mounts of clip indexes (`@cryo/clip/fuse`): kept apart from the main entry so that
// importing @cryo/clip never loads the native addon.
export { ClipFilesystem, Errno, METADATA_TTL_SECS, errnoOf, makedev, toFuseStat } from './clip-fs.js';
export type { ClipFsLog, ClipFsOptions, ClipFsStats } from './clip-fs.js';
export { bundledLibfuse, fuseNativeStatus, loadFuse } from './native.js';
export type { FuseNativeStatus, FuseOperations, FuseStat } from './native.js';
export { fuseMountOptions, mountClip } from './mount.js';
export type { ClipMount, MountClipOptions } from './mount.js';
export {
  CLIP_FSTYPE,
  cleanupStaleMount,
  isStaleMount,
  listMounts,
  mountsAt,
  mountsUnder,
  parseMounts,
  sweepStaleClipMounts,
  unmountFuse,
  unmountPath,
} from './mounts.js';
export type { MountEntry } from './mounts.js';
export { readMountStatus, writeMountStatus } from './mount-status.js';
export type { MountState, MountStatus } from './mount-status.js';
export { MOUNT_MAIN, isMountProcess, mountProcessCommand, processAlive, startMountProcess, stopMountProcess } from './mount-process.js';
export type { MountProcessOptions } from './mount-process.js';
export {
  REGISTRY_CONFIG_ENV,
  REGISTRY_INLINE_ENV,
  RefreshingRegistrySource,
  RegistryAccessConfigSchema,
  loadRegistryAccess,
  parseRegistryAccess,
  resolveAccess,
} from './registry-access.js';
export type { RegistryAccessConfig, ResolvedAccess } from './registry-access.js';
