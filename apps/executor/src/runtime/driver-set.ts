/**
 * The runtime drivers of one executor and what each can do on this host: capabilities probed once
 * at start, and the routing of a sandbox to a driver (the one that owns it, or for a new one the
 * one that serves its restore mode).
 */
import type { Logger } from 'pino';
import { CryoError, type RestoreMode } from '@cryo/snapshot';
import type { DriverCapabilities, RuntimeDriver, SandboxSpec } from './driver';

export class DriverSet {
  private readonly capabilities = new Map<RuntimeDriver, DriverCapabilities>();

  /**
   * `drivers` in routing order: `owner` asks them in this order (the lazy one first, its `owns`
   * is a directory check). `executorId` names this executor in errors.
   */
  constructor(private readonly drivers: readonly RuntimeDriver[], private readonly executorId: string) {}

  /** Ask every driver what it can do here (once, at start); an unavailable one is logged with why. */
  async probe(log: Logger): Promise<void> {
    for (const driver of this.drivers) {
      const caps = await driver.capabilities();
      this.capabilities.set(driver, caps);
      if (!caps.available) log.warn({ driver: driver.name, reason: caps.reason }, `the ${driver.name} driver is unavailable on this host`);
    }
  }

  /** Every driver, available here or not, in routing order. */
  get all(): readonly RuntimeDriver[] {
    return this.drivers;
  }

  /** Drivers this host can run (as probed). */
  get active(): RuntimeDriver[] {
    return this.drivers.filter((d) => this.capabilities.get(d)?.available === true);
  }

  /** The probed capabilities of the driver that serves `mode`, available or not; undefined when no driver does. */
  capabilitiesFor(mode: RestoreMode): DriverCapabilities | undefined {
    return [...this.capabilities.values()].find((c) => c.restoreModes.includes(mode));
  }

  /** The active driver that runs `sandboxId` on this host, if any does. */
  async owner(sandboxId: string): Promise<RuntimeDriver | undefined> {
    for (const driver of this.active) if (await driver.owns(sandboxId)) return driver;
    return undefined;
  }

  /** As `owner`; NOT_FOUND when no driver runs the sandbox here. */
  async owning(sandboxId: string): Promise<RuntimeDriver> {
    const driver = await this.owner(sandboxId);
    if (driver === undefined) throw new CryoError('NOT_FOUND', `sandbox ${sandboxId} has no container on this executor`);
    return driver;
  }

  /** A sandbox that exists already stays with its driver; a new one goes to the driver of its restore mode. */
  async forSpec(spec: SandboxSpec): Promise<RuntimeDriver> {
    return (await this.owner(spec.sandboxId)) ?? this.forMode(spec.restore?.mode ?? 'eager');
  }

  /**
   * The active driver that serves a restore mode (a create without a snapshot counts as eager).
   * UNPROCESSABLE, with the probe's reason, when none does on this host.
   */
  forMode(mode: RestoreMode): RuntimeDriver {
    const driver = this.active.find((d) => this.capabilities.get(d)?.restoreModes.includes(mode));
    if (driver !== undefined) return driver;
    const reason = this.capabilitiesFor(mode)?.reason ?? 'no driver for it';
    throw new CryoError('UNPROCESSABLE', `executor ${this.executorId} cannot restore ${mode === 'lazy' ? 'lazily' : 'eagerly'}: ${reason}`);
  }
}
