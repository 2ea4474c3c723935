import { describe, expect, it } from 'vitest';
import { DEFAULT_PATH, DOCKER_DEFAULT_CAPABILITIES, buildRuntimeSpec, mergeEnv, processArgs, sandboxHostname, type RuntimeSpecInput } from './runtime-spec';

function input(over: Partial<RuntimeSpecInput> = {}): RuntimeSpecInput {
  return {
    image: { env: ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8', 'MODE=image'], cmd: ['/bin/sh'], entrypoint: null, workingDir: '/srv' },
    user: { uid: 0, gid: 0, additionalGids: [], home: '/root' },
    command: null,
    env: {},
    hostname: 'sb-1',
    rootfs: '/state/lazy/sb-1/rootfs',
    hostnameFile: '/state/lazy/sb-1/hostname',
    hostsFile: '/state/lazy/sb-1/hosts',
    resources: {},
    cgroupsPath: '/cryo-lazy/sb-1',
    annotations: { 'dev.cryo.sandbox-id': 'sb-1' },
    ...over,
  };
}

describe('buildRuntimeSpec', () => {
  it('runs the image cmd in its working dir with its env, plus HOSTNAME and HOME', () => {
    const spec = buildRuntimeSpec(input());
    expect(spec.process.args).toEqual(['/bin/sh']);
    expect(spec.process.cwd).toBe('/srv');
    expect(spec.process.env).toEqual(['HOSTNAME=sb-1', 'HOME=/root', 'PATH=/usr/bin:/bin', 'LANG=C.UTF-8', 'MODE=image']);
    expect(spec.process.terminal).toBe(false);
    expect(spec.root).toEqual({ path: '/state/lazy/sb-1/rootfs', readonly: false });
    expect(spec.hostname).toBe('sb-1');
  });

  it('the sandbox command replaces cmd and keeps the entrypoint; its env wins', () => {
    const spec = buildRuntimeSpec(input({
      image: { env: ['MODE=image'], cmd: ['--help'], entrypoint: ['/usr/bin/tini', '--'], workingDir: '' },
      command: ['sleep', '60'],
      env: { MODE: 'sandbox', EXTRA: '1' },
    }));
    expect(spec.process.args).toEqual(['/usr/bin/tini', '--', 'sleep', '60']);
    expect(spec.process.cwd).toBe('/');
    expect(spec.process.env).toContain('MODE=sandbox');
    expect(spec.process.env).not.toContain('MODE=image');
    expect(spec.process.env).toContain('EXTRA=1');
    expect(spec.process.env).toContain(`PATH=${DEFAULT_PATH}`);
  });

  it('uses the resolved user; root gets Docker\'s default capabilities, others only the bounding set', () => {
    const root = buildRuntimeSpec(input());
    expect(root.process.user).toEqual({ uid: 0, gid: 0 });
    expect(root.process.capabilities.effective).toEqual([...DOCKER_DEFAULT_CAPABILITIES]);
    expect(root.process.capabilities.bounding).toContain('CAP_NET_BIND_SERVICE');
    expect(root.process.capabilities.bounding).not.toContain('CAP_SYS_ADMIN');
    const app = buildRuntimeSpec(input({ user: { uid: 1000, gid: 1000, additionalGids: [4, 50], home: '/home/app' } }));
    expect(app.process.user).toEqual({ uid: 1000, gid: 1000, additionalGids: [4, 50] });
    expect(app.process.capabilities.effective).toEqual([]);
    expect(app.process.capabilities.permitted).toEqual([]);
    expect(app.process.capabilities.bounding).toHaveLength(DOCKER_DEFAULT_CAPABILITIES.length);
    expect(app.process.env).toContain('HOME=/home/app');
  });

  it('has fresh namespaces (network included), Docker\'s mounts and masked paths', () => {
    const spec = buildRuntimeSpec(input());
    expect(spec.linux.namespaces.map((n) => n.type).sort()).toEqual(['ipc', 'mount', 'network', 'pid', 'uts']);
    const mounts = Object.fromEntries(spec.mounts.map((m) => [m.destination, m]));
    expect(Object.keys(mounts)).toEqual(['/proc', '/dev', '/dev/pts', '/sys', '/sys/fs/cgroup', '/dev/mqueue', '/dev/shm', '/etc/hostname', '/etc/hosts']);
    expect(mounts['/dev/shm']?.options).toContain('mode=1777');
    expect(mounts['/sys']?.options).toContain('ro');
    expect(mounts['/etc/hosts']).toMatchObject({ type: 'bind', source: '/state/lazy/sb-1/hosts' });
    expect(spec.linux.maskedPaths).toContain('/proc/kcore');
    expect(spec.linux.readonlyPaths).toContain('/proc/sys');
    expect(spec.linux.resources.devices).toEqual([{ allow: false, access: 'rwm' }]);
    expect(spec.linux.cgroupsPath).toBe('/cryo-lazy/sb-1');
    expect(spec.annotations).toEqual({ 'dev.cryo.sandbox-id': 'sb-1' });
  });

  it('turns cpus and memory into cgroup limits', () => {
    const spec = buildRuntimeSpec(input({ resources: { cpus: 1.5, memory_mb: 256 } }));
    expect(spec.linux.resources.cpu).toEqual({ quota: 150_000, period: 100_000 });
    expect(spec.linux.resources.memory).toEqual({ limit: 256 * 1024 * 1024 });
  });

  it('carries nothing that looks like a registry secret', () => {
    const text = JSON.stringify(buildRuntimeSpec(input()));
    expect(text).not.toMatch(/password|token|auth/i);
  });
});

describe('helpers', () => {
  it('mergeEnv keeps order and replaces in place', () => {
    expect(mergeEnv(['A=1', 'B=2', 'bad'], { B: '3', C: '4' })).toEqual(['A=1', 'B=3', 'C=4']);
  });
  it('processArgs refuses an empty command', () => {
    expect(() => processArgs({ env: [], cmd: null, entrypoint: null, workingDir: '' }, null)).toThrow(/no command/);
  });
  it('sandboxHostname is a valid hostname', () => {
    expect(sandboxHostname('SB_abc.def')).toBe('sb-abc-def');
    expect(sandboxHostname('x'.repeat(100))).toHaveLength(63);
  });
});
