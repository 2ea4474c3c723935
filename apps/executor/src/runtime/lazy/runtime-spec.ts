/**
 * The OCI runtime bundle config (config.json) of a lazy sandbox: what `docker run` would give the
 * same image — its env, working dir, user, entrypoint + cmd (the sandbox's command replacing cmd,
 * its env overriding the image's), fresh pid/net/ipc/uts/mount namespaces, Docker's default
 * mounts, capabilities, masked and read-only /proc paths, and the sandbox's cpu/memory limits.
 * Nothing secret goes in: the registry is the mount process's business, not the bundle's.
 */
import { CryoError } from '@cryo/snapshot';
import type { ImageUser } from './image-user';

/** Docker's default capability set (moby oci/caps/defaults.go). */
export const DOCKER_DEFAULT_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
] as const;

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** What the image config says (from the clip index). */
export interface ImageRuntimeSettings {
  env: string[];
  cmd: string[] | null;
  entrypoint: string[] | null;
  workingDir: string;
}

export interface RuntimeSpecInput {
  image: ImageRuntimeSettings;
  user: ImageUser;
  /** the sandbox's command (replaces the image's cmd, keeps its entrypoint), or null */
  command: string[] | null;
  /** the sandbox's env (overrides the image's) */
  env: Record<string, string>;
  hostname: string;
  /** absolute path of the merged overlay root */
  rootfs: string;
  /** files bind-mounted at /etc/hostname and /etc/hosts */
  hostnameFile: string;
  hostsFile: string;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  /** cgroup path, e.g. /cryo-lazy/<executor group>/<sandbox> (lazy/cgroups.ts) */
  cgroupsPath: string;
  annotations: Record<string, string>;
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface OciSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  annotations: Record<string, string>;
  linux: {
    namespaces: Array<{ type: string }>;
    cgroupsPath: string;
    resources: {
      devices: Array<{ allow: boolean; access: string }>;
      memory?: { limit: number };
      cpu?: { quota: number; period: number };
    };
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

/** `KEY=VALUE` list: image env first, the sandbox's keys replacing the image's in place. */
export function mergeEnv(imageEnv: string[], overrides: Record<string, string>, extra: Record<string, string> = {}): string[] {
  const out = new Map<string, string>();
  for (const item of imageEnv) {
    const eq = item.indexOf('=');
    if (eq > 0) out.set(item.slice(0, eq), item.slice(eq + 1));
  }
  for (const [k, v] of Object.entries({ ...extra, ...overrides })) out.set(k, v);
  return [...out].map(([k, v]) => `${k}=${v}`);
}

/** entrypoint + (the sandbox's command, else the image's cmd) — Docker's rule. */
export function processArgs(image: ImageRuntimeSettings, command: string[] | null): string[] {
  const args = [...(image.entrypoint ?? []), ...(command ?? image.cmd ?? [])];
  if (args.length === 0) throw new CryoError('UNPROCESSABLE', 'no command: the image has no entrypoint or cmd and the sandbox gives none');
  return args;
}

/** A hostname the kernel accepts, from the sandbox id. */
export function sandboxHostname(sandboxId: string): string {
  const name = sandboxId.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+/, '').slice(0, 63);
  return name === '' ? 'sandbox' : name;
}

export function hostsFileText(hostname: string): string {
  return [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'ff00::0\tip6-mcastprefix',
    'ff02::1\tip6-allnodes',
    'ff02::2\tip6-allrouters',
    `127.0.1.1\t${hostname}`,
    '',
  ].join('\n');
}

export function buildRuntimeSpec(input: RuntimeSpecInput): OciSpec {
  const { user } = input;
  const env = mergeEnv(input.image.env, input.env, {});
  const keys = new Set(env.map((e) => e.slice(0, e.indexOf('='))));
  // Docker adds PATH when the image has none, and HOSTNAME; runc adds HOME only for its own lookups.
  const defaults = [
    ...(keys.has('PATH') ? [] : [`PATH=${DEFAULT_PATH}`]),
    ...(keys.has('HOSTNAME') ? [] : [`HOSTNAME=${input.hostname}`]),
    ...(keys.has('HOME') ? [] : [`HOME=${user.home}`]),
  ];
  const caps = [...DOCKER_DEFAULT_CAPABILITIES];
  // Like Docker (20.10+): a non-root user gets the bounding set only, nothing effective.
  const root = user.uid === 0;
  const resources: OciSpec['linux']['resources'] = { devices: [{ allow: false, access: 'rwm' }] };
  if (input.resources.memory_mb !== undefined) resources.memory = { limit: input.resources.memory_mb * 1024 * 1024 };
  if (input.resources.cpus !== undefined) resources.cpu = { quota: Math.round(input.resources.cpus * 100_000), period: 100_000 };
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: user.uid, gid: user.gid, ...(user.additionalGids.length > 0 ? { additionalGids: user.additionalGids } : {}) },
      args: processArgs(input.image, input.command),
      env: [...defaults, ...env],
      cwd: input.image.workingDir === '' ? '/' : input.image.workingDir,
      capabilities: { bounding: caps, effective: root ? caps : [], permitted: root ? caps : [] },
      // No rlimits: like Docker's default, the sandbox inherits the executor's.
      noNewPrivileges: false,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=67108864'] },
      { destination: '/etc/hostname', type: 'bind', source: input.hostnameFile, options: ['rbind', 'rprivate'] },
      { destination: '/etc/hosts', type: 'bind', source: input.hostsFile, options: ['rbind', 'rprivate'] },
    ],
    annotations: input.annotations,
    linux: {
      // A new network namespace: runc brings up its loopback; the sandbox has no other network.
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      cgroupsPath: input.cgroupsPath,
      resources,
      maskedPaths: [
        '/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats',
        '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/**
 * Paths the runtime mounts over or creates as mountpoints: changes there never reach the upper
 * dir's content, and what runc creates there is not the sandbox's (Docker keeps them in its
 * init layer, which a commit leaves out). A snapshot leaves them out too.
 */
export const RUNTIME_MANAGED_PATHS = ['proc', 'sys', 'dev', 'etc/hostname', 'etc/hosts', 'etc/resolv.conf'] as const;
