// The `simulate` scenario's account (the JSON the CLI prints, schema version 1): the checks, each
// VM, device and live update, and the first handover's tables; built from the run's state.
import { protName, type KhoSummary } from '../kho-summary.js';
import type { CostConstants, PhaseWork } from '../../index.js';
import { hex } from '../units.js';
import { GUEST_IOVA, type Flow, type PageSize, type ScenarioConfig } from './config.js';
import type { DevState, DeviceKind, VmState } from './setup.js';

export type { DeviceKind } from './setup.js';

export interface StepRecord {
  /** Index into the timeline: the phase after which this burst ran. */
  timelineIndex: number;
  phase: string;
  generation: number;
  pagesWritten: number;
  pagesVerified: number;
  faults: number;
  mismatches: number;
  /** Distinct VT-d fault reasons of this step. */
  faultReasons: number[];
}

/**
 * The stretch of the timeline a count covers (both ends included), and its name as the CLI
 * prints it: a device's totals are the whole run's, an update's DMA its own.
 */
export interface CountWindow {
  label: string;
  fromIndex: number;
  toIndex: number;
}
export const WHOLE_RUN = 'whole run';
export const duringUpdate = (index: number): string => `during update ${index}`;

export interface DeviceResult {
  bdf: string;
  kind: DeviceKind;
  /** `vm0`, ...; null for the host's own device. */
  vm: string | null;
  persistent: boolean;
  window: { iova: string; bytes: number };
  /** What transactions, bytes, pages, faults and mismatches count over: the whole run. */
  countWindow: CountWindow;
  transactions: number;
  bytes: number;
  pagesWritten: number;
  pagesVerified: number;
  faults: number;
  mismatches: number;
  faultReasons: number[];
  firstFault: { phase: string; generation: number } | null;
  /**
   * Non-persistent devices: one translation of its window asked of the IOMMU directly after the
   * run (bypassing the device's bus-master bit), to show the IOMMU blocks it too.
   */
  iommuProbe: { faulted: boolean; reason: number } | null;
  /** `ok` (persistent, clean), `blocked` (non-persistent, blocked from shutdown on), `failed`. */
  status: 'ok' | 'blocked' | 'failed';
  steps: StepRecord[];
}

export interface VmResult {
  name: string;
  /** The RFC flow's persistent iommufd id; null in the LUO flow, where {@link VmResult.session} crosses. */
  persistentId: number | null;
  /** LUO flow: the session that carries the VM (memfd token 1, iommufd 2, devices 3, 4, ...). */
  session?: string;
  ioasId: number;
  guestMemBytes: number;
  iova: string;
  iommuPageSize: '4k' | '2m';
  file: string;
  devices: string[];
}

export interface UpdateResult {
  index: number;
  fromGeneration: number;
  toGeneration: number;
  kho: {
    blobBytes: number;
    iommufds: number;
    ioases: number;
    mappings: number;
    mappedBytes: number;
    domains: number;
    pageTablePages: number;
    rootContextPages: number;
    preservedBytes: number;
    preservedRanges: number;
  };
  /**
   * RFC flow: from the end of the last phase before the jump (`kho-dump`) to the end of
   * `vmm-reattach`. LUO flow: from the end of `luo-preserve` (the VMMs' PRESERVE_FDs, guests
   * still running), i.e. the start of the reboot's `luo-serialise`, to the end of the last
   * `luo-finish`. `phases` are the phases it spans (timeline entries fromIndex + 1 … toIndex):
   * what each cost on the simulated clock and the work it reported.
   */
  blackout: { from: string; to: string; simNs: number; simMs: number; wallMs: number; fromIndex: number; toIndex: number; phases: PhaseCost[] };
  /** LUO flow: what crossed in the sessions (the KHO counts above are then the HWPTs' and KHO's finalisation's). */
  luo?: LuoHandover;
  /** Counted during this update: the blackout's steps. */
  dma: { countWindow: CountWindow; transactions: number; bytes: number; faults: number; byDevice: { bdf: string; transactions: number; bytes: number; faults: number }[] };
}

/** What a LUO live update handed over: its sessions and their files. */
export interface LuoHandover {
  sessions: number;
  files: number;
  memfds: number;
  /** Folios of the preserved memfds (luo-freeze's work). */
  folios: number;
  iommufds: number;
  /** HWPTs marked with IOMMU_HWPT_LU_SET_PRESERVE. */
  hwpts: number;
  devices: number;
}

/** One phase on the simulated clock: what the cost model made of the work it reported. */
export interface PhaseCost {
  phase: string;
  generation: number;
  costNs: number;
  costMs: number;
  work: PhaseWork;
}

/** A timeline entry as the run's state has it (the host's). */
type TimelineRecord = { generation: number; phase: string; simNs: bigint; costNs: bigint; work: Readonly<PhaseWork>; wallMs: number };

export interface KhoTables {
  blobBytes: number;
  blobAddress: string | null;
  domains: { index: number; persistentId: number; did: number; pgd: string; levels: number; devices: string[]; tablePages: number }[];
  areas: { iommufd: number; ioas: number; area: number; iova: string; last: string; bytes: number; prot: string; segments: { ino: number; offset: string; bytes: number }[] }[];
  preserved: { owner: string; ranges: number; bytes: number; first: string }[];
  /** LUO flow: the `LUO` node (`preserved-data`: struct luo_ser's address, `blob-size`). */
  luo?: { preservedData: string; blobSize: number };
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface SimulationResult {
  schemaVersion: 1;
  command: 'simulate';
  /** The live-update flow that ran. */
  flow: Flow;
  config: {
    hostMemoryBytes: number;
    guestmemfsBytes: number;
    vms: number;
    guestMemBytes: number;
    devicesPerVm: number;
    pageSize: PageSize;
    kexecs: number;
    seed: string;
    pagesPerStep: number;
    kho: boolean;
  };
  /** The phase cost model's constants in effect (ns each): the defaults, or `--cost-model`'s over them. */
  costModel: CostConstants;
  verdict: 'pass' | 'fail';
  checks: Check[];
  vms: VmResult[];
  devices: DeviceResult[];
  updates: UpdateResult[];
  /** The first live update's handover, for tables (null with `kho: false`). */
  kho: KhoTables | null;
  /** Every phase: when it ended (`simNs`), what it cost and the work it reported. */
  timeline: { generation: number; phase: string; simNs: number; costNs: number; work: PhaseWork; wallMs: number }[];
  wallMs: number;
}

const PAGE = 4096;

/** What a run produced, for {@link simulationResult}. */
export interface RunRecord {
  checks: Check[];
  vms: VmState[];
  devices: DeviceResult[];
  updates: UpdateResult[];
  /** Every KHO blob, in order, and the first one's summary and physical address. */
  blobs: Uint8Array[];
  first: KhoSummary | undefined;
  firstBlobPa: bigint | null;
  timeline: readonly TimelineRecord[];
  costModel: Readonly<CostConstants>;
  wallMs: number;
}

/** The whole account of a run of `c`. */
export function simulationResult(c: ScenarioConfig, r: RunRecord): SimulationResult {
  return {
    schemaVersion: 1,
    command: 'simulate',
    flow: c.flow ?? 'rfc',
    config: {
      hostMemoryBytes: Number(c.hostMemory),
      guestmemfsBytes: c.flow === 'luo' ? 0 : Number(c.carveOut),
      vms: c.vms,
      guestMemBytes: Number(c.guestMem),
      devicesPerVm: c.devicesPerVm,
      pageSize: c.pageSize,
      kexecs: c.kexecs,
      seed: c.seed.toString(),
      pagesPerStep: c.pagesPerStep,
      kho: c.kho,
    },
    costModel: { ...r.costModel },
    verdict: r.checks.every((x) => x.ok) ? 'pass' : 'fail',
    checks: r.checks,
    vms: r.vms.map((v) => ({
      name: v.name,
      persistentId: v.persistentId,
      ...(v.luo ? { session: v.name } : {}),
      ioasId: v.ioasId,
      guestMemBytes: Number(c.guestMem),
      iova: hex(GUEST_IOVA),
      iommuPageSize: v.pageSize,
      file: v.file,
      devices: v.devices.map((d) => d.bdf),
    })),
    devices: r.devices,
    updates: r.updates,
    kho: r.first ? khoTables(r.first, r.blobs[0]!.length, r.firstBlobPa) : null,
    timeline: r.timeline.map((e) => ({ generation: e.generation, phase: e.phase, simNs: Number(e.simNs), costNs: Number(e.costNs), work: { ...e.work }, wallMs: round(e.wallMs) })),
    wallMs: round(r.wallMs),
  };
}

export function updateResult(
  index: number,
  fromGeneration: number,
  toGeneration: number,
  blob: Uint8Array | null,
  s: KhoSummary | null,
  timeline: readonly TimelineRecord[],
  fromIndex: number,
  toIndex: number,
  devs: DevState[],
  luo?: { kho: Partial<UpdateResult['kho']>; handover: LuoHandover },
): UpdateResult {
  const from = timeline[fromIndex]!, to = timeline[toIndex]!;
  const byDevice = devs.map((d) => {
    const steps = stepsOf(d).filter((x) => x.timelineIndex >= fromIndex && x.timelineIndex <= toIndex);
    return {
      bdf: d.bdf,
      transactions: steps.reduce((n, x) => n + transactions(x), 0),
      bytes: steps.reduce((n, x) => n + bytes(x), 0),
      faults: steps.reduce((n, x) => n + x.faults, 0),
    };
  });
  const simNs = Number(to.simNs - from.simNs);
  return {
    index,
    fromGeneration,
    toGeneration,
    kho: {
      blobBytes: blob?.length ?? 0,
      iommufds: s?.totals.iommufds ?? 0,
      ioases: s?.totals.ioases ?? 0,
      mappings: s?.totals.areas ?? 0,
      mappedBytes: Number(s?.totals.mappedBytes ?? 0n),
      domains: s?.totals.domains ?? 0,
      pageTablePages: s?.totals.pageTablePages ?? 0,
      rootContextPages: s?.totals.rootContextPages ?? 0,
      preservedBytes: Number(s?.totals.preservedBytes ?? 0n),
      preservedRanges: s?.totals.preservedRanges ?? 0,
      ...luo?.kho,
    },
    ...(luo ? { luo: luo.handover } : {}),
    blackout: { from: from.phase, to: to.phase, simNs, simMs: simNs / 1e6, wallMs: round(to.wallMs - from.wallMs), fromIndex, toIndex, phases: timeline.slice(fromIndex + 1, toIndex + 1).map(phaseCost) },
    dma: {
      countWindow: { label: duringUpdate(index), fromIndex, toIndex },
      transactions: byDevice.reduce((n, d) => n + d.transactions, 0),
      bytes: byDevice.reduce((n, d) => n + d.bytes, 0),
      faults: byDevice.reduce((n, d) => n + d.faults, 0),
      byDevice,
    },
  };
}

function phaseCost(e: TimelineRecord): PhaseCost {
  const costNs = Number(e.costNs);
  return { phase: e.phase, generation: e.generation, costNs, costMs: costNs / 1e6, work: { ...e.work } };
}

/** Faults of `u`'s window on the persistent devices and on the others (the blocked ones). */
export function updateFaults(u: UpdateResult, devices: readonly DeviceResult[]): { persistent: number; other: number } {
  const persistent = u.dma.byDevice.filter((d) => devices.find((x) => x.bdf === d.bdf)?.persistent).reduce((n, d) => n + d.faults, 0);
  return { persistent, other: u.dma.faults - persistent };
}

/** A device's steps, each tied to the timeline entry it ran after. */
function stepsOf(d: DevState): StepRecord[] {
  return d.traffic.steps.map((s, i) => ({
    timelineIndex: d.firstIndex + i,
    phase: s.phase,
    generation: s.generation,
    pagesWritten: s.pagesWritten,
    pagesVerified: s.pagesVerified,
    faults: s.faults.length,
    mismatches: s.mismatches.length,
    faultReasons: [...new Set(s.faults.map((f) => f.reason))].sort((a, b) => a - b),
  }));
}

/** One transaction per 4 KiB page a device tried to move. */
function transactions(s: StepRecord): number {
  return s.pagesWritten + s.pagesVerified + s.mismatches + s.faults;
}
/** Bytes that moved (a faulted access moves none). */
function bytes(s: StepRecord): number {
  return (s.pagesWritten + s.pagesVerified + s.mismatches) * PAGE;
}

export function deviceResult(d: DevState, timeline: readonly { phase: string }[]): DeviceResult {
  const steps = stepsOf(d);
  // The host steps every generator after each phase, so step i is timeline entry firstIndex + i.
  for (const s of steps) {
    if (timeline[s.timelineIndex]?.phase !== s.phase) throw new Error(`internal: ${d.bdf} step at ${s.timelineIndex} is ${s.phase}, timeline says ${timeline[s.timelineIndex]?.phase}`);
  }
  const faulted = steps.find((s) => s.faults > 0);
  return {
    bdf: d.bdf,
    kind: d.kind,
    vm: d.vm,
    persistent: d.persistent,
    window: { iova: hex(d.iova), bytes: Number(d.length) },
    countWindow: { label: WHOLE_RUN, fromIndex: d.firstIndex, toIndex: timeline.length - 1 },
    transactions: steps.reduce((n, s) => n + transactions(s), 0),
    bytes: steps.reduce((n, s) => n + bytes(s), 0),
    pagesWritten: d.traffic.steps.reduce((n, s) => n + s.pagesWritten, 0),
    pagesVerified: d.traffic.pagesVerified,
    faults: d.traffic.faults,
    mismatches: d.traffic.mismatches,
    faultReasons: [...new Set(steps.flatMap((s) => s.faultReasons))].sort((a, b) => a - b),
    firstFault: faulted ? { phase: faulted.phase, generation: faulted.generation } : null,
    iommuProbe: null,
    status: 'ok',
    steps,
  };
}

function khoTables(s: KhoSummary, blobBytes: number, blobPa: bigint | null): KhoTables {
  const owners = new Map<string, { ranges: number; bytes: bigint; first: bigint }>();
  const add = (owner: string, addr: bigint, len: bigint) => {
    const o = owners.get(owner);
    if (o) {
      o.ranges++;
      o.bytes += len;
      if (addr < o.first) o.first = addr;
    } else owners.set(owner, { ranges: 1, bytes: len, first: addr });
  };
  for (const r of s.preserved) add(r.owner.replace(/^intel-iommu domain \d+ page tables$/, 'intel-iommu domain page tables'), r.addr, r.len);
  if (blobPa !== null) add('KHO blob', blobPa, BigInt(Math.ceil(blobBytes / PAGE) * PAGE));
  return {
    blobBytes,
    blobAddress: blobPa === null ? null : hex(blobPa),
    domains: (s.intel?.domains ?? []).map((d) => ({
      index: d.index,
      persistentId: Number(d.persistentId),
      did: d.did,
      pgd: hex(d.pgd),
      levels: d.agaw + 2,
      devices: d.devices,
      tablePages: d.tablePages.reduce((n, r) => n + Number(r.len / 4096n), 0),
    })),
    areas: s.iommufds.flatMap((c) =>
      c.ioases.flatMap((i) =>
        i.areas.map((a) => ({
          iommufd: c.id,
          ioas: i.id,
          area: a.index,
          iova: hex(a.iova),
          last: hex(a.iova + a.len - 1n),
          bytes: Number(a.len),
          prot: protName(a.prot),
          segments: a.segments.map((g) => ({ ino: Number(g.ino), offset: hex(g.offset), bytes: Number(g.len) })),
        })),
      ),
    ),
    preserved: [...owners].map(([owner, o]) => ({ owner, ranges: o.ranges, bytes: Number(o.bytes), first: hex(o.first) })),
    ...(s.luo ? { luo: { preservedData: hex(s.luo.preservedData), blobSize: Number(s.luo.blobSize) } } : {}),
  };
}


function round(x: number): number {
  return Math.round(x * 10) / 10;
}
