// The `simulate` scenario: a hypervisor host with VMs whose guest RAM lives in guestmemfs and
// whose assigned devices do DMA through persistent iommufds, live-updated by KHO + kexec while
// the devices keep going, plus one device of the host's own in a non-persistent iommufd.
// config.ts (what a run may be asked for), setup.ts (the host before any update), run.ts (the
// updates and the verdicts), results.ts (the account the CLI prints); the upstream (LUO) flow's
// setup-luo.ts and run-luo.ts beside them, the rest shared; compare.ts puts two runs side by side.
export * from './config.js';
export * from './results.js';
export { LUO_CMDLINE } from './setup-luo.js';
import type { ProgressFn, ScenarioConfig } from './config.js';
import { simulateRfc, type SimulationRun } from './run.js';
import { simulateLuo } from './run-luo.js';
export type { SimulationRun } from './run.js';

/** Runs the scenario through `c.flow` (default `rfc`); never throws for a failed check. */
export function simulate(c: ScenarioConfig, progress: ProgressFn = () => {}): SimulationRun {
  return c.flow === 'luo' ? simulateLuo(c, progress) : simulateRfc(c, progress);
}
