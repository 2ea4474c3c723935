import type { Command } from 'commander';

export function registerClipCommands(_program: Command): void {}
