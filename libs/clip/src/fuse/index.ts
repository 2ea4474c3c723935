// FUSE mounts of clip indexes (`@cryo/clip/fuse`): kept apart from the main entry so that
// importing @cryo/clip never loads the native addon.
export { ClipFilesystem, Errno, METADATA_TTL_SECS, errnoOf, makedev, toFuseStat } from './clip-fs';
export type { ClipFsLog, ClipFsOptions, ClipFsStats } from './clip-fs';
export { FUSE_ADDON, fuseNativeStatus, loadFuse } from './native';
export type { FuseNativeStatus, FuseOperations, FuseStat } from './native';
export { fuseMountOptions, mountClip } from './mount';
export type { ClipMount, MountClipOptions } from './mount';
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
} from './mounts';
export type { MountEntry } from './mounts';
export { procStartTicks, readMountStatus, writeMountStatus } from './mount-status';
export type { MountState, MountStatus } from './mount-status';
export {
  MOUNT_MAIN,
  MountLauncher,
  REGISTRY_ACCESS_STDIN,
  isMountProcess,
  isMountProcessOf,
  mountProcessCommand,
  processAlive,
  requestAccessRecord,
  startMountProcess,
  stopMountProcess,
} from './mount-process';
export type { MountAccessOut, MountEntryKind, MountLauncherOptions, MountProcessOptions } from './mount-process';
export { parseMountJob } from './mount-job';
export type { MountJob } from './mount-job';
export { MOUNT_BUNDLE, buildMountBundle, ensureMountBundle, mountBundleFresh } from './mount-bundle';
export type { MountBundleState } from './mount-bundle';
export { RefreshingRegistrySource } from './registry-access';
export type { RefreshingSourceOptions } from './registry-access';
