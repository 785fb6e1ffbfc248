// The `simulate` scenario's configuration: what a run may be asked for, its defaults, how host
// memory and the carve-out are sized, and the usage errors a configuration that cannot run gets
// (checked before anything boots).
import type { CostConstants } from '../../index.js';
import { formatBytes, plural, sizeArg } from '../units.js';

export type PageSize = '4k' | '2m' | 'mixed';
/**
 * Which live update runs: `rfc`, the 2024 RFC's (guestmemfs, persistent iommufds, KHO DUMP
 * through sysfs, re-claim through sysfs), or `luo`, the upstream one booted `kho=on
 * liveupdate=on` (sealed memfd guest RAM, preserved HWPTs, a LUO session per VM).
 */
export type Flow = 'rfc' | 'luo';

export interface ScenarioConfig {
  /** The live-update flow (default `rfc`). */
  flow?: Flow;
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
  /** Phase cost constants over the defaults (`--cost-model FILE.json`), checked by `Host.boot`. */
  costModel?: Partial<CostConstants>;
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

/** Why `config` cannot run (a usage error), or null; its memory is {@link fitMemory}'s. */
export function checkConfig(c: ScenarioConfig): string | null {
  if (c.vms < 1) return '--vms must be at least 1';
  if (c.devicesPerVm < 1) return '--devices must be at least 1 per VM';
  if (c.kexecs < 1) return '--kexecs must be at least 1 (the live update is the point)';
  if (c.kexecs > 1000) return '--kexecs must be at most 1000';
  if (c.vms * c.devicesPerVm + 1 > 255) return `--vms ${c.vms} × --devices ${c.devicesPerVm} needs ${plural(c.vms * c.devicesPerVm + 1, 'PCI bus', 'PCI buses')} (one device each, with the host's own); at most 255`;
  if (c.guestMem === 0n || c.guestMem % BLOCK !== 0n) return `--guest-mem ${formatBytes(c.guestMem, { exact: true })}: guest RAM is a guestmemfs file, which grows in 2 MiB blocks; give a non-zero multiple of 2M`;
  if (c.guestMem > GUESTMEMFS_MAX_FILE) return `--guest-mem ${formatBytes(c.guestMem)}: a guestmemfs file holds at most ${formatBytes(GUESTMEMFS_MAX_FILE)}`;
  if (deviceSlice(c) < BLOCK) return `--guest-mem ${formatBytes(c.guestMem)} is too small for ${plural(c.devicesPerVm, 'device')}: each needs a 2 MiB DMA window after the VMM's first 2 MiB`;
  return null;
}

/**
 * What the host keeps below the carve-out: its first 4 GiB (the 32-bit hole with the reserved
 * ranges, so the carve-out never spans them) for the kernel's tables and the host device's buffer.
 */
export const HOST_OWN = 4n * GiB;
/** The host's VT-d unit (default options) has a 48-bit address width: its page tables reach no higher. */
const HOST_MAX = 1n << 48n;
/** Below guestmemfs's own limit (~26.9 TiB: its bitmap and pin table share block 0). */
const CARVE_OUT_MAX = 16n << 40n;

/** The carve-out `vms` files of `guestMem` need: guestmemfs's first block (superblock, inodes), then per file its data and one block-map block. */
export function carveOutFor(vms: number, guestMem: bigint): bigint {
  return BLOCK + BigInt(vms) * (guestMem + BLOCK);
}

/** `--host-mem` and `--guestmemfs` as given; an absent one is {@link fitMemory}'s to choose. */
export interface MemoryFlags {
  hostMemory?: bigint;
  carveOut?: bigint;
}

const roundUp = (n: bigint, to: bigint) => ((n + to - 1n) / to) * to;

/**
 * Host RAM and the carve-out for `c`'s VMs: each as given, else its default, the carve-out grown
 * (to whole GiB) to hold the VMs or shrunk to fit a smaller `--host-mem`, the host grown to hold
 * the carve-out. `note` says what was chosen and why; `error` names the numbers and the flag to
 * change.
 */
export function fitMemory(c: Pick<ScenarioConfig, 'vms' | 'guestMem'>, given: MemoryFlags): { hostMemory: bigint; carveOut: bigint; note: string | null } | { error: string } {
  const d = DEFAULT_CONFIG;
  const { hostMemory: h, carveOut: g } = given;
  const exact = (n: bigint) => formatBytes(n, { exact: true });
  if (h !== undefined && (h === 0n || h % 4096n !== 0n)) return { error: `--host-mem ${exact(h)}: host memory is whole 4 KiB frames; give a non-zero multiple of 4K` };
  if (h !== undefined && h > HOST_MAX) return { error: `--host-mem ${exact(h)}: at most ${formatBytes(HOST_MAX)}, what the VT-d unit's 48-bit page tables can point at` };
  if (g !== undefined && (g === 0n || g % BLOCK !== 0n)) return { error: `--guestmemfs ${exact(g)}: the carve-out is whole 2 MiB guestmemfs blocks; give a non-zero multiple of 2M` };
  if (g !== undefined && g > CARVE_OUT_MAX) return { error: `--guestmemfs ${exact(g)}: at most ${formatBytes(CARVE_OUT_MAX)}` };

  const vms = `--vms ${c.vms} × --guest-mem ${exact(c.guestMem)}`;
  const need = carveOutFor(c.vms, c.guestMem);
  const notes: string[] = [];
  let carveOut = g ?? d.carveOut;
  if (g === undefined) {
    const want = need > d.carveOut ? roundUp(need, GiB) : d.carveOut;
    const room = h === undefined ? null : h > HOST_OWN ? ((h - HOST_OWN) / BLOCK) * BLOCK : 0n;
    carveOut = room !== null && want > room ? (need > room ? need : room) : want;
    if (carveOut > CARVE_OUT_MAX) return { error: `${vms} need ${exact(need)} of guestmemfs carve-out, more than the largest carve-out (${formatBytes(CARVE_OUT_MAX)}): lower --vms or --guest-mem` };
    if (carveOut > d.carveOut) notes.push(`${vms} need ${exact(need)} of guestmemfs carve-out, more than the default ${formatBytes(d.carveOut)}: using --guestmemfs ${sizeArg(carveOut)}`);
    if (carveOut < d.carveOut) notes.push(`the default ${formatBytes(d.carveOut)} guestmemfs carve-out and the host's own ${formatBytes(HOST_OWN)} do not fit --host-mem ${exact(h!)}: using --guestmemfs ${sizeArg(carveOut)}`);
  } else if (need > g) {
    const usable = g - BLOCK - BigInt(c.vms) * BLOCK;
    return {
      error: `${vms} = ${exact(BigInt(c.vms) * c.guestMem)} does not fit --guestmemfs ${exact(g)} (${exact(usable > 0n ? usable : 0n)} usable: 2 MiB go to the superblock and 2 MiB to each file's block map); raise --guestmemfs to ${sizeArg(roundUp(need, GiB))} or lower --vms or --guest-mem`,
    };
  }
  const hostMemory = h ?? (carveOut + HOST_OWN > d.hostMemory ? roundUp(carveOut + HOST_OWN, GiB) : d.hostMemory);
  if (h === undefined && hostMemory > d.hostMemory) notes.push(`a ${exact(carveOut)} carve-out and the host's own ${formatBytes(HOST_OWN)} need more than the default ${formatBytes(d.hostMemory)} host: using --host-mem ${sizeArg(hostMemory)}`);
  if (carveOut + HOST_OWN > hostMemory) {
    const what = g === undefined ? `${vms} need ${exact(need)} of guestmemfs carve-out, which with` : `--guestmemfs ${exact(g)} with`;
    const lower = g === undefined ? '--vms or --guest-mem' : '--guestmemfs';
    return { error: `${what} the host's own ${formatBytes(HOST_OWN)} below it does not fit --host-mem ${exact(hostMemory)}; raise --host-mem to ${sizeArg(roundUp(carveOut + HOST_OWN, GiB))} or lower ${lower}` };
  }
  return { hostMemory, carveOut, note: notes.length ? notes.join('; ') : null };
}

/** Each device's share of its VM's RAM (after the VMM's first 2 MiB), 2 MiB aligned. */
export function deviceSlice(c: ScenarioConfig): bigint {
  return ((c.guestMem - VMM_RESERVED) / BigInt(c.devicesPerVm) / BLOCK) * BLOCK;
}

/** What the run reports while it works (the CLI shows it on a terminal). */
export type ProgressFn = (message: string) => void;
