import { CryoError } from './errors';
import type { SandboxStatus, SnapshotStatus } from './api';

const SANDBOX_TRANSITIONS: Record<SandboxStatus, readonly SandboxStatus[]> = {
  pending: ['running', 'terminated'],
  running: ['snapshotting', 'terminated'],
  snapshotting: ['running', 'terminated'],
  terminated: [],
};

const SNAPSHOT_TRANSITIONS: Record<SnapshotStatus, readonly SnapshotStatus[]> = {
  creating: ['active', 'failed', 'deleting'],
  active: ['expired', 'deleting'],
  failed: ['deleting', 'deleted'],
  deleting: ['deleted', 'expired'],
  expired: [],
  deleted: [],
};

export function canTransitionSandbox(from: SandboxStatus, to: SandboxStatus): boolean {
  return from === to || SANDBOX_TRANSITIONS[from].includes(to);
}

export function canTransitionSnapshot(from: SnapshotStatus, to: SnapshotStatus): boolean {
  return from === to || SNAPSHOT_TRANSITIONS[from].includes(to);
}

export function assertSnapshotTransition(id: string, from: SnapshotStatus, to: SnapshotStatus): void {
  if (!canTransitionSnapshot(from, to)) {
    throw new CryoError('CONFLICT', `snapshot ${id} is ${from} and cannot become ${to}`);
  }
}

export function assertSandboxTransition(id: string, from: SandboxStatus, to: SandboxStatus): void {
  if (!canTransitionSandbox(from, to)) {
    throw new CryoError('CONFLICT', `sandbox ${id} is ${from} and cannot become ${to}`);
  }
}
