/**
 * A private Docker engine per test host: its own data root, exec root and socket, no bridge and
 * no iptables so several engines coexist on one machine. Two of them are two hosts whose image
 * stores are separate, so a restore on "host B" really pulls.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'node:http';

export interface TestDockerd {
  name: string;
  socket: string;
  /** `unix:///...` for DOCKER_HOST and dataplane-config `docker.host`. */
  host: string;
  root: string;
  logFile: string;
  stop(): Promise<void>;
}

export const DOCKER_BIN = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

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

/** Start a dockerd under `base/name`; resolves once the socket answers /_ping. */
export async function startDockerd(name: string, base = '/var/tmp/cryo-test-engines'): Promise<TestDockerd> {
  const root = join(base, name);
  const execRoot = `/run/cryo-test-${name}`; // exec-root paths must stay short (unix socket limit)
  mkdirSync(root, { recursive: true });
  mkdirSync(execRoot, { recursive: true });
  const socket = join(execRoot, 'docker.sock');
  const logFile = join(root, 'dockerd.log');
  rmSync(socket, { force: true });
  const fd = openSync(logFile, 'a');
  const child = spawn('dockerd', [
    '--data-root', join(root, 'data'),
    '--exec-root', execRoot,
    '--pidfile', join(execRoot, 'dockerd.pid'),
    '-H', `unix://${socket}`,
    '--bridge=none', '--iptables=false', '--ip-masq=false', '--ip-forward=false',
    '--storage-driver=overlay2',
  ], { stdio: ['ignore', fd, fd], detached: false });
  closeSync(fd);
  const deadline = Date.now() + 60_000;
  while (!(await pingSocket(socket))) {
    if (child.exitCode !== null) throw new Error(`dockerd ${name} exited with ${child.exitCode}; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`dockerd ${name} did not answer on ${socket} within 60 s; see ${logFile}`);
    }
    await sleep(200);
  }
  return {
    name, socket, host: `unix://${socket}`, root, logFile,
    async stop() {
      child.kill('SIGTERM');
      if (!(await waitExit(child, 20_000))) {
        child.kill('SIGKILL');
        await waitExit(child, 5000);
      }
    },
  };
}
