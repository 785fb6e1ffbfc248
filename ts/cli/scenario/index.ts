// The `simulate` scenario: a hypervisor host with VMs whose guest RAM lives in guestmemfs and
// whose assigned devices do DMA through persistent iommufds, live-updated by KHO + kexec while
// the devices keep going, plus one device of the host's own in a non-persistent iommufd.
// config.ts (what a run may be asked for), setup.ts (the host before any update), run.ts (the
// updates and the verdicts), results.ts (the account the CLI prints).
export * from './config.js';
export * from './results.js';
export { simulate } from './run.js';
