/**
 * A private Docker engine per test host: its own data root, exec root, socket and Linux bridge
 * (scripts/engine-bridge.sh), and no iptables, so several engines coexist on one machine, also
 * with the engines of other test runs and with the machine's own engine, whose docker0 they leave
 * alone (an engine with --bridge=none would delete it). Two of them are two hosts whose image
 * stores are separate, so a restore on "host B" really pulls.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'node:http';
import { mountsUnder, unmountPath } from '@cryo/clip/fuse';
import { REPO_ROOT } from './processes';

export interface TestDockerd {
  name: string;
  socket: string;
  /** `unix:///...` for DOCKER_HOST and executor-config `docker.host`. */
  host: string;
  /** Data root and log; deleted by stop(). */
  root: string;
  logFile: string;
  /** The engine's bridge: `cryobrN` (its own, deleted by stop()) or `docker0`. */
  bridge: string;
  /** The dockerd process id. */
  pid: number;
  /** Stops the engine (SIGTERM, then SIGKILL after 20 s), deletes its bridge and its data root. */
  stop(): Promise<void>;
}

export interface DockerdOptions {
  /** Parent of the engine's data root (default /var/tmp/cryo-test-engines). */
  base?: string;
  /**
   * `own` (default): a bridge of its own. `docker0`: the default bridge, made by dockerd if absent,
   * as a machine's own engine has it; only for the test that checks that test engines leave a
   * machine's docker0 alone. Either way without iptables rules.
   */
  bridge?: 'own' | 'docker0';
  /**
   * The engine's storage driver (default overlay2, as cryo's pre-copy snapshots need). `vfs` needs
   * no kernel support (a full copy of every layer: slow and large, so only for small images); the
   * test that the `auto` snapshot method falls back to a commit on such an engine uses it.
   */
  storageDriver?: 'overlay2' | 'vfs';
}

export const DOCKER_BIN = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
export const ENGINE_BRIDGE_SCRIPT = join(REPO_ROOT, 'scripts', 'engine-bridge.sh');
const DEFAULT_BASE = '/var/tmp/cryo-test-engines';

function pingSocket(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: '/_ping', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => { req.destroy(); resolve(false); });
    req.end();
  });
}

async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return Promise.race([
    new Promise<boolean>((resolve) => child.once('exit', () => resolve(true))),
    sleep(ms).then(() => false),
  ]);
}

function engineBridge(args: string[]): string {
  return execFileSync('bash', [ENGINE_BRIDGE_SCRIPT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

const live = new Set<ChildProcess>();
let swept = false;

/**
 * Once per process: what crashed runs left behind. Their bridges (and a dockerd still on one),
 * then the data and exec roots of processes that are gone (named `NAME-PID-BRIDGE`).
 */
function sweepAbandoned(base: string): void {
  if (swept) return;
  swept = true;
  engineBridge(['sweep']);
  process.once('exit', () => { for (const child of live) child.kill('SIGTERM'); });
  for (const [parent, prefix] of [[base, ''], ['/run', 'cryo-test-']] as const) {
    let names: string[] = [];
    try { names = readdirSync(parent).filter((n) => n.startsWith(prefix)); } catch { /* no engines yet */ }
    for (const name of names) {
      const pid = /-(\d+)-cryobr\d+$/.exec(name)?.[1];
      if (pid === undefined || existsSync(`/proc/${pid}`)) continue;
      try { rmSync(join(parent, name), { recursive: true, force: true }); } catch { /* still mounted: left alone */ }
    }
  }
}

/** Start a dockerd under `base/NAME-PID-BRIDGE`; resolves once the socket answers /_ping. */
export async function startDockerd(name: string, opts: DockerdOptions = {}): Promise<TestDockerd> {
  const base = opts.base ?? DEFAULT_BASE;
  sweepAbandoned(base);
  const bridge = opts.bridge === 'docker0' ? 'docker0' : engineBridge(['create', String(process.pid)]).split(' ')[0] ?? '';
  const own = bridge !== 'docker0';
  const dirName = `${name}-${process.pid}-${bridge}`;
  const root = join(base, dirName);
  const execRoot = `/run/cryo-test-${dirName}`; // exec-root paths must stay short (unix socket limit)
  // What a dockerd that was killed, or slow to stop, leaves mounted: netns/default in its exec
  // root, overlay mounts in its data root. Never throws: a stop must not end a test's cleanup.
  const cleanup = async (): Promise<void> => {
    if (own) engineBridge(['delete', bridge]);
    for (const dir of [execRoot, root]) {
      try {
        for (const m of mountsUnder(dir)) await unmountPath(m.mountpoint);
        rmSync(dir, { recursive: true, force: true });
      } catch (err) {
        process.stderr.write(`dockerd ${name}: could not remove ${dir}: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
  };
  mkdirSync(root, { recursive: true });
  mkdirSync(execRoot, { recursive: true });
  const socket = join(execRoot, 'docker.sock');
  const logFile = join(root, 'dockerd.log');
  const fd = openSync(logFile, 'a');
  const child = spawn('dockerd', [
    '--data-root', join(root, 'data'),
    '--exec-root', execRoot,
    '--pidfile', join(execRoot, 'dockerd.pid'),
    '-H', `unix://${socket}`,
    ...(own ? [`--bridge=${bridge}`] : []),
    '--iptables=false', '--ip-masq=false', '--ip-forward=false',
    `--storage-driver=${opts.storageDriver ?? 'overlay2'}`,
  ], { stdio: ['ignore', fd, fd], detached: false });
  closeSync(fd);
  live.add(child);
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM');
    if (!(await waitExit(child, 20_000))) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
    live.delete(child);
    await cleanup();
  };
  const deadline = Date.now() + 60_000;
  while (!(await pingSocket(socket))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const why = child.exitCode !== null ? `exited with ${child.exitCode}` : `did not answer on ${socket} within 60 s`;
      const log = readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n');
      await stop();
      throw new Error(`dockerd ${name} ${why}; its log ended:\n${log}`);
    }
    await sleep(200);
  }
  return { name, socket, host: `unix://${socket}`, root, logFile, bridge, pid: child.pid ?? -1, stop };
}
