// The `simulate` scenario's configuration: what a run may be asked for, its defaults, and the
// usage errors a configuration that cannot run gets (checked before anything boots).
import { formatBytes, plural } from '../units.js';

export type PageSize = '4k' | '2m' | 'mixed';

export interface ScenarioConfig {
  /** Host RAM. */
  hostMemory: bigint;
  /** `guestmemfs=` carve-out. */
  carveOut: bigint;
  vms: number;
  /** Guest RAM per VM (a guestmemfs file, mapped whole into the VM's IOAS). */
  guestMem: bigint;
  devicesPerVm: number;
  /** IOMMU page size of the VMs' IOASes (`4k`: IOMMU_OPTION_HUGE_PAGES = 0). */
  pageSize: PageSize;
  kexecs: number;
  /** `Host.boot` seed (the page allocator's). */
  seed: bigint;
  /** Pages each device writes and re-reads per step (a step follows every lifecycle phase). */
  pagesPerStep: number;
  /** `guest-io` phases before the first live update. */
  ioTicksBefore: number;
  /** `guest-io` phases after each `vmm-reattach`. */
  ioTicksAfter: number;
  /** Activate KHO before each kexec (false: the negative control, nothing may survive). */
  kho: boolean;
}

export const GiB = 1n << 30n;
export const MiB = 1n << 20n;
/** guestmemfs's block: files grow in these, and its first one holds the metadata. */
export const BLOCK = 2n * MiB;
/** Where each VM's guest RAM sits in its IOAS (above the 32-bit MMIO hole, IOVA = GPA). */
export const GUEST_IOVA = 4n * GiB;
/** The first 2 MiB of guest RAM are the VMM's (firmware, the signature it checks); devices get the rest. */
export const VMM_RESERVED = BLOCK;
/** The non-persistent device's buffer: anonymous shared memory of the host's own driver. */
export const HOST_BUFFER = 64n * MiB;
export const HOST_IOVA = 1n * GiB;
const GUESTMEMFS_MAX_FILE = 512n * GiB;

export const DEFAULT_CONFIG: ScenarioConfig = {
  hostMemory: 64n * GiB,
  carveOut: 16n * GiB,
  vms: 2,
  guestMem: 4n * GiB,
  devicesPerVm: 2,
  pageSize: '2m',
  kexecs: 1,
  seed: 0n,
  pagesPerStep: 32,
  ioTicksBefore: 8,
  ioTicksAfter: 4,
  kho: true,
};

/** Why `config` cannot run (a usage error), or null. */
export function checkConfig(c: ScenarioConfig): string | null {
  if (c.vms < 1) return '--vms must be at least 1';
  if (c.devicesPerVm < 1) return '--devices must be at least 1 per VM';
  if (c.kexecs < 1) return '--kexecs must be at least 1 (the live update is the point)';
  if (c.kexecs > 1000) return '--kexecs must be at most 1000';
  if (c.vms * c.devicesPerVm + 1 > 255) return `--vms ${c.vms} × --devices ${c.devicesPerVm} needs ${plural(c.vms * c.devicesPerVm + 1, 'PCI bus', 'PCI buses')} (one device each, with the host's own); at most 255`;
  if (c.guestMem === 0n || c.guestMem % BLOCK !== 0n) return `--guest-mem ${formatBytes(c.guestMem, { exact: true })}: guest RAM is a guestmemfs file, which grows in 2 MiB blocks; give a non-zero multiple of 2M`;
  if (c.guestMem > GUESTMEMFS_MAX_FILE) return `--guest-mem ${formatBytes(c.guestMem)}: a guestmemfs file holds at most ${formatBytes(GUESTMEMFS_MAX_FILE)}`;
  // guestmemfs spends its first block on the superblock and inodes, and one block per file on
  // that file's block map.
  const usable = c.carveOut - BLOCK - BigInt(c.vms) * BLOCK;
  const want = BigInt(c.vms) * c.guestMem;
  if (want > usable) {
    return `--vms ${c.vms} × --guest-mem ${formatBytes(c.guestMem, { exact: true })} = ${formatBytes(want, { exact: true })} does not fit the ${formatBytes(c.carveOut)} guestmemfs carve-out (${formatBytes(usable, { exact: true })} usable: 2 MiB go to the superblock and 2 MiB to each file's block map)`;
  }
  if (deviceSlice(c) < BLOCK) return `--guest-mem ${formatBytes(c.guestMem)} is too small for ${plural(c.devicesPerVm, 'device')}: each needs a 2 MiB DMA window after the VMM's first 2 MiB`;
  return null;
}

/** Each device's share of its VM's RAM (after the VMM's first 2 MiB), 2 MiB aligned. */
export function deviceSlice(c: ScenarioConfig): bigint {
  return ((c.guestMem - VMM_RESERVED) / BigInt(c.devicesPerVm) / BLOCK) * BLOCK;
}

/** What the run reports while it works (the CLI shows it on a terminal). */
export type ProgressFn = (message: string) => void;
