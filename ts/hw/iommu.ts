import {
  native,
  type NativeCacheOccupancy,
  type NativeGather,
  type NativePageTable,
  type NativeUnit,
  type NativeUnitOptions,
  type NativeUnitStats,
} from '../native.js';
import { invalidArgType } from '../errors.js';
import { bool, bytes, given, int, obj, oneOf, optional, u16, u64, unitOptions } from '../native-kinds.js';
import { PhysicalMemory } from './memory.js';
import { DMAR_FAULT_REASONS } from './vtd-regs.js';

/** Second-level page sizes a unit may support (CAP.SLLPS). */
export type Superpage = '2M' | '1G';

/**
 * What a unit advertises and how large its caches are. Numbers are integers in the ranges below
 * (`ERR_OUT_OF_RANGE` otherwise; the caches are capped so that no size can exhaust the host),
 * flags booleans (`ERR_INVALID_ARG_TYPE` otherwise).
 */
export interface IommuUnitOptions {
  /** MGAW: 39, 48 (default) or 57; SAGAW lists every depth up to it. */
  addressWidth?: 39 | 48 | 57;
  /** CAP.SLLPS (default both). */
  superpages?: Superpage[];
  /** IOTLB entries, 0..65536 (`CACHE_ENTRIES_MAX`; default 512, 8-way; 0 disables it). */
  iotlbEntries?: number;
  /** IOTLB associativity, 1..1024 (`IOTLB_WAYS_MAX`; default 8). */
  iotlbWays?: number;
  /** Paging-structure-cache entries, 0..65536 (default 128; 0 disables it). */
  pagingStructureCacheEntries?: number;
  /** Context-cache entries, 0..65536 (default 64; 0 disables it). */
  contextCacheEntries?: number;
  /** Fault-recording registers, CAP.NFR+1: 1..256 (default 8). */
  faultRecords?: number;
  /** CAP.ND: 2^(4+2·ND) domains, 0..6 (default 6). */
  nd?: number;
  /** CAP.PSI (default true). */
  psi?: boolean;
  /** CAP.MAMV, 0..63 (default 18). */
  mamv?: number;
  /** CAP.CM (default false). */
  cachingMode?: boolean;
  /** CAP.ESRTPS (default false). */
  esrtps?: boolean;
  /** ECAP.C (default true). */
  coherent?: boolean;
  /** ECAP.SC (default true). */
  snoopControl?: boolean;
  /** ECAP.PT (default true). */
  passThrough?: boolean;
  /** ECAP.DT (default false). With it, a device with an ATS capability gets ATS (see `PciDeviceOptions.ats`). */
  deviceTlb?: boolean;
  /**
   * ECAP.QI (default false). Advertised only: the model has no invalidation queue (IQA/IQH/IQT),
   * and the simulated driver invalidates through CCMD and IOTLB_REG whatever this says.
   */
  queuedInvalidation?: boolean;
  /** ECAP.IR (default false). Advertised only: the model remaps DMA, not interrupts. */
  interruptRemapping?: boolean;
  /** ECAP.MHMV, the interrupt-entry-cache handle mask maximum, 0..15 (default 0). */
  mhmv?: number;
  /** Treat PTE bit 62 (TM) as ignored in 4 KiB leaves, as pre-3.2 parts did (default false). */
  staleTm?: boolean;
}

/**
 * The unit QEMU 7.2 emulates with `-machine q35,kernel-irqchip=split -device
 * intel-iommu,intremap=on,caching-mode=on` under TCG (legacy mode, aw-bits 39): CAP
 * 0x00d2008c22260286 and ECAP 0x0000000000f00f4a, as a Linux 7.3 guest reads them
 * (IOMMU_GET_HW_INFO). `Host.boot({ machine: 'qemu-7.2-q35' })` uses it.
 *
 * CAP, bit by bit (QEMU `vtd_init`):
 * - ND (2:0) = 6, 65536 domains (`VTD_CAP_ND`): `nd: 6`.
 * - AFL 3, RWBF 4, PLMR 5, PHMR 6 = 0 (the model never sets them).
 * - CM (7) = 1: `caching-mode=on` → `cachingMode: true`.
 * - SAGAW (12:8) = 0b00010, 3-level tables only, and MGAW (21:16) = 38 (39 bits):
 *   `aw-bits=39` → `addressWidth: 39`.
 * - ZLR 22, 23 = 0; FRO (33:24) = 0x22, fault records at 0x220 (fixed in the model).
 * - SLLPS (37:34) = 0b0011, 2 MiB and 1 GiB (`VTD_CAP_SLLPS`): `superpages: ['2M', '1G']`.
 * - PSI (39) = 1: `psi: true`. NFR (47:40) = 0, one record (`VTD_FRCD_REG_NR`): `faultRecords: 1`.
 * - MAMV (53:48) = 18 (`VTD_CAP_MAMV`): `mamv: 18`.
 * - DWD (54), DRD (55) = 1: `dma-drain=on` (always set by the model).
 * - FL1GP 56, PI 59, FL5LP 60, ESIRTPS 62, ESRTPS 63 = 0: `esrtps: false`.
 *
 * ECAP, bit by bit:
 * - C (0) = 0: QEMU never advertises page-walk coherency → `coherent: false`.
 * - QI (1) = 1: always (`VTD_ECAP_QI`) → `queuedInvalidation: true` (advertised only).
 * - DT (2) = 0: `device-iotlb=off` → `deviceTlb: false`; so no device gets ATS.
 * - IR (3) = 1: `intremap=on` → `interruptRemapping: true` (advertised only).
 * - EIM (4) = 0: `eim=auto` turns it on only with KVM's in-kernel irqchip, and the measured guest
 *   ran under TCG (the model has no EIM option; it is always 0).
 * - PT (6) = 1: `pt=on` → `passThrough: true`. SC (7) = 0: `snoop-control=off` → `snoopControl: false`.
 * - IRO (17:8) = 0xf, IVA at 0xf0 (fixed in the model). MHMV (23:20) = 15, set with IR → `mhmv: 15`.
 * - Nothing above bit 23: no scalable mode, PASID, nesting or second-stage A/D.
 *
 * The caches are not visible in any register: QEMU keeps a hashed IOTLB of up to 1024 entries
 * (flushed whole when full) and no paging-structure cache, hence `iotlbEntries: 1024` (still 8-way
 * LRU here) and `pagingStructureCacheEntries: 0`.
 *
 * What still differs from the real unit, and why: the invalidation queue and interrupt remapping
 * are advertised but not modelled, so the simulated driver never enables them — GSTS shows TES and
 * RTPS only where the real guest also has QIES, IRES and IRTPS, and invalidations go through
 * CCMD/IOTLB_REG instead of queued descriptors; the fault log keeps QEMU's recording policy but the
 * simulated kernel logs a line for every faulting DMA, where QEMU records (and Linux logs) a
 * requester's fault only while no earlier one of it is pending ("compression of faults").
 */
export const QEMU_7_2_INTEL_IOMMU: Readonly<IommuUnitOptions> = Object.freeze({
  addressWidth: 39,
  superpages: Object.freeze(['2M', '1G']) as Superpage[],
  nd: 6,
  psi: true,
  mamv: 18,
  faultRecords: 1,
  cachingMode: true,
  esrtps: false,
  coherent: false,
  snoopControl: false,
  passThrough: true,
  deviceTlb: false,
  queuedInvalidation: true,
  interruptRemapping: true,
  mhmv: 15,
  staleTm: false,
  iotlbEntries: 1024,
  pagingStructureCacheEntries: 0,
});

/** A recorded DMA-remapping fault. `iova` is the page address FRCD.FI holds. */
export interface DmarFault {
  sid: number;
  iova: bigint;
  reason: number;
  write: boolean;
}

export type IommuStats = NativeUnitStats;
export type CacheOccupancy = NativeCacheOccupancy;

/** Thrown by {@link IommuUnit.translateOne} when the request faults. */
export class DmarFaultError extends Error {
  readonly code = 'ERR_DMAR_FAULT';
  constructor(
    readonly sid: number,
    readonly iova: bigint,
    readonly reason: number,
    readonly write: boolean,
  ) {
    super(
      `DMAR fault reason 0x${reason.toString(16)} (${DMAR_FAULT_REASONS[reason] ?? 'unknown'}) ` +
        `for ${sid.toString(16).padStart(4, '0')} ${write ? 'write' : 'read'} at 0x${iova.toString(16)}`,
    );
    this.name = 'DmarFaultError';
  }
}

/** `out[i]` of a faulted translation: never a PA, PAs are below 2^52. */
export const TRANSLATION_FAULTED = 0xffff_ffff_ffff_ffffn;

/** The granularity an invalidation was performed at. */
export type Granularity = 'global' | 'domain' | 'page';

/** A context-cache invalidation request (CCMD). */
export type ContextInvalidation =
  | { granularity: 'global' }
  | { granularity: 'domain'; did: number }
  | { granularity: 'device'; did: number; sid: number; fm?: number };

/** An IOTLB invalidation request (IOTLB_REG + IVA). */
export type IotlbInvalidation =
  | { granularity: 'global' }
  | { granularity: 'domain'; did: number }
  | { granularity: 'page'; did: number; addr: bigint; am?: number; ih?: boolean };

const superpageKind = oneOf(['2M', '1G']);
const faultsKind = optional(bytes);
const contextGranularity = oneOf(['global', 'domain', 'device']);
const iotlbGranularity = oneOf(['global', 'domain', 'page']);
const fmKind = int(0, 3), amKind = int(0, 63);
/** The facade's names of the addon's options that it names differently. */
const FACADE_NAME: Readonly<Record<string, string>> = { pscEntries: 'pagingStructureCacheEntries' };

/**
 * @internal `options` checked as the argument `name` (`Host.boot` passes `config.iommu`) and
 * mapped to the addon's, each field read once: every error names the field as the caller wrote it.
 */
export function nativeUnitOptions(options: unknown, name: string): NativeUnitOptions {
  const o = given(obj, options, name, {}) as Record<string, unknown>;
  const sp = o.superpages;
  let superpages: readonly Superpage[] = ['2M', '1G'];
  if (sp !== undefined) {
    if (!Array.isArray(sp)) throw invalidArgType(`${name}.superpages`, 'an instance of Array', sp);
    superpages = sp.map((s: unknown, i) => superpageKind.check(s, `${name}.superpages[${i}]`));
  }
  const out: Record<string, unknown> = { superpage2M: superpages.includes('2M'), superpage1G: superpages.includes('1G') };
  for (const [key, k] of Object.entries(unitOptions.info.fields)) {
    if (key in out) continue;
    const facadeKey = FACADE_NAME[key] ?? key;
    out[key] = given(k, o[facadeKey], `${name}.${facadeKey}`, undefined);
  }
  return out as NativeUnitOptions;
}

/** Unmapped ranges and table pages awaiting the IOTLB flush (`struct iommu_iotlb_gather`). */
export class Gather {
  /** @internal */
  readonly native: NativeGather = new native.NativeGather();

  /** Whether {@link IommuUnit.iotlbSync} is owed: a range gathered or a table page waiting. */
  get pending(): boolean {
    return this.native.pending;
  }

  /** The gathered IOVA range `[start, end]`, or null. */
  get range(): { start: bigint; end: bigint } | null {
    const r = this.native.range();
    return r ? { start: r[0]!, end: r[1]! } : null;
  }

  /** Table pages that {@link IommuUnit.iotlbSync} will free after the flush. */
  get freelist(): BigUint64Array {
    return this.native.freelist();
  }
}

/** The addon's gather of a facade `Gather`. */
function gatherArg(gather: unknown): NativeGather {
  if (!(gather instanceof Gather)) throw invalidArgType('gather', 'an instance of Gather', gather);
  return gather.native;
}

/** Permissions of a mapping: booleans, absent is false (`ERR_INVALID_ARG_TYPE` for anything else). */
export interface Prot {
  read?: boolean;
  write?: boolean;
  /** Snooped access; needs ECAP.SC. */
  snoop?: boolean;
}

/** One entry read by a walk, top level first. */
/** What {@link PageTable.verifyHandover} found. */
export interface HandoverAudit {
  mismatch: bigint | null;
  corrupt: string | null;
  foreignTable: bigint | null;
  pages: number;
  tables: number;
}

export interface WalkStep {
  level: number;
  ptePa: bigint;
  pte: bigint;
}

/**
 * A domain's second-level page table in simulated memory, programmed the way Linux's VT-d
 * driver does (`__domain_mapping`, `domain_unmap`): superpages chosen by alignment and SLLPS,
 * freed table pages held on a {@link Gather} until the IOTLB flush.
 */
export class PageTable {
  private constructor(
    /** @internal */ readonly native: NativePageTable,
  ) {}

  /** @internal */
  static wrap(pt: NativePageTable): PageTable {
    return new PageTable(pt);
  }

  /** Physical address of the top-level table (a context entry's SLPTPTR). */
  get pgd(): bigint {
    return this.native.pgd;
  }
  /** Paging levels (3, 4 or 5). */
  get levels(): number {
    return this.native.levels;
  }
  /** The context-entry AW field for this depth. */
  get aw(): number {
    return this.native.aw;
  }

  /** Maps `[iova, iova+size)` to `[pa, pa+size)`. Fails, changing nothing, if any of it is mapped. */
  map(iova: bigint, pa: bigint, size: bigint, prot: Prot, gather: Gather = new Gather()): void {
    obj.check(prot, 'prot');
    const read = given(bool, prot.read, 'prot.read', false), write = given(bool, prot.write, 'prot.write', false);
    this.native.map(iova, pa, size, read, write, given(bool, prot.snoop, 'prot.snoop', false), gatherArg(gather));
  }

  /**
   * Maps a batch of runs in one call: run `i` maps `npages[i]` 4 KiB pages at IOVA page
   * `iovaPfns[i]` to PA page `paPfns[i]` (page numbers as plain numbers: IOVA pages below 2^52,
   * PA pages below 2^40), each run exactly as {@link map} would, superpages included. All or
   * nothing: if any run fails (already mapped, by an earlier run too; out of memory; beyond the
   * address width or memory) the runs mapped so far are undone, the table is as before, the
   * table pages the call allocated wait on `gather` for {@link IommuUnit.iotlbSync}, and the
   * error of the failing run is thrown. Arrays of different lengths or an entry that is not such
   * an integer throw `ERR_INVALID_ARG_VALUE` before anything is mapped; empty arrays do nothing.
   */
  mapRuns(iovaPfns: Float64Array, paPfns: Float64Array, npages: Float64Array, prot: Prot, gather: Gather = new Gather()): void {
    obj.check(prot, 'prot');
    const read = given(bool, prot.read, 'prot.read', false), write = given(bool, prot.write, 'prot.write', false);
    this.native.mapRuns(iovaPfns, paPfns, npages, read, write, given(bool, prot.snoop, 'prot.snoop', false), gatherArg(gather));
  }

  /**
   * Trust but verify a table handed over across kexec, natively in one call: whether every
   * 4 KiB page of the runs (given as {@link mapRuns} takes them) translates to its PA with R and
   * W exactly `prot.read` / `prot.write` — the leaf's bits, and every table entry above granting
   * them. Superpages are fine wherever the translation is right; SNP (`prot.snoop` too) and the
   * bits the hardware ignores are not compared. Returns null if every page matches, else the
   * IOVA of the first page that does not (in run order, ascending within a run). Garbage tables
   * — entries not present or with reserved bits, tables beyond memory, IOVAs beyond the width —
   * are mismatches, never errors or hangs. Throws `ERR_INVALID_ARG_VALUE` for arrays
   * {@link mapRuns} would refuse and `ERR_VTD_NO_PERMISSION` for a `prot` with neither read nor
   * write. Pair it with {@link mappedPages} to prove nothing else is mapped.
   */
  verifyRuns(iovaPfns: Float64Array, paPfns: Float64Array, npages: Float64Array, prot: Prot): bigint | null {
    obj.check(prot, 'prot');
    given(bool, prot.snoop, 'prot.snoop', false);
    const read = given(bool, prot.read, 'prot.read', false), write = given(bool, prot.write, 'prot.write', false);
    return this.native.verifyRuns(iovaPfns, paPfns, npages, read, write);
  }

  /**
   * Trust but verify a table handed over across kexec in ONE native walk: {@link verifyRuns}
   * and {@link mappedPages} at once, plus the handed-over check. Runs as {@link mapRuns} takes
   * them, in any order, with `prots[i]` the run's permissions (1 read, 2 write, 3 both), and
   * `handedOver` the table pages the previous kernel listed. `mismatch`: the lowest expected page
   * not translated onto its PA with exactly its permissions; `foreignTable`: the first table
   * reached that was not handed over (not entered); `corrupt`: why the walk stopped (a table
   * reached twice or beyond memory; a mismatch past that point is not looked for); `pages`: the
   * 4 KiB pages present leaves map, `tables` the table pages walked. The table maps exactly the
   * runs iff all three are null and `pages` is the runs' page count. Bad arrays throw
   * `ERR_INVALID_ARG_VALUE` before a table is read.
   */
  verifyHandover(iovaPfns: Float64Array, paPfns: Float64Array, npages: Float64Array, prots: Uint8Array, handedOver: BigUint64Array): HandoverAudit {
    const a = this.native.verifyHandover(iovaPfns, paPfns, npages, prots, handedOver);
    return { mismatch: a.mismatch ?? null, corrupt: a.corrupt ?? null, foreignTable: a.foreignTable ?? null, pages: a.pages, tables: a.tables };
  }

  /**
   * Audits the whole table: `pages` is how many 4 KiB pages present leaves map (a 2 MiB leaf
   * counts 512; reserved bits are not checked, as in {@link walk}), `tables` every table page
   * reached, the top first then depth first (check each was handed over). Bounded whatever the
   * memory holds: throws `ERR_VTD_CORRUPT` if a table is reached twice (a cycle or a shared
   * table), lies beyond memory, or if more than `maxTables` table pages would be visited.
   */
  mappedPages(maxTables: number): { pages: number; tables: BigUint64Array } {
    return this.native.mappedPages(maxTables);
  }

  /** Unmaps `[iova, iova+size)` into `gather`; returns the size unmapped (a superpage grows it). */
  unmap(iova: bigint, size: bigint, gather: Gather): bigint {
    return this.native.unmap(iova, size, gatherArg(gather));
  }

  /** `iommu_iova_to_phys`: the PA `iova` maps to, or null. */
  iovaToPhys(iova: bigint): bigint | null {
    return this.native.iovaToPhys(iova);
  }

  /** Every entry read walking `iova`, down to the leaf or the first non-present entry. */
  walk(iova: bigint): WalkStep[] {
    return this.native.walk(iova);
  }

  /** Every table page, top first. */
  tablePages(): BigUint64Array {
    return this.native.tablePages();
  }

  /** Teardown: every table page goes to `gather`; flush with {@link IommuUnit.iotlbSync}. */
  destroy(gather: Gather): void {
    this.native.destroy(gatherArg(gather));
  }
}

/**
 * One VT-d DMA-remapping unit in legacy mode: registers, root/context/second-level tables read
 * from {@link PhysicalMemory} bit-exactly, IOTLB / paging-structure / context caches with
 * hardware staleness, and the fault log.
 */
export class IommuUnit {
  /** Named option sets of units that exist elsewhere: `'qemu-7.2'` is {@link QEMU_7_2_INTEL_IOMMU}. */
  static readonly profiles: Readonly<Record<'qemu-7.2', Readonly<IommuUnitOptions>>> = Object.freeze({ 'qemu-7.2': QEMU_7_2_INTEL_IOMMU });

  /** @internal */
  readonly native: NativeUnit;

  constructor(
    readonly memory: PhysicalMemory,
    options: IommuUnitOptions = {},
  ) {
    if (!(memory instanceof PhysicalMemory)) throw invalidArgType('memory', 'an instance of PhysicalMemory', memory);
    this.native = new native.NativeUnit(memory.native, nativeUnitOptions(options, 'options'));
  }

  /** CAP, ECAP, GSTS and RTADDR. */
  registers(): { cap: bigint; ecap: bigint; gsts: number; rtaddr: bigint } {
    return this.native.registers();
  }

  /** MMIO read of a 4- or 8-byte register. */
  readRegister(offset: number, size: 4 | 8): bigint {
    return this.native.readRegister(offset, size);
  }

  /** MMIO write with hardware semantics (GCMD, CCMD.ICC, IOTLB_REG.IVT, W1C fault bits). */
  writeRegister(offset: number, size: 4 | 8, value: bigint): void {
    this.native.writeRegister(offset, size, value);
  }

  /** RTADDR then GCMD.SRTP: latches the root table and invalidates every cache. */
  setRootTable(pa: bigint): void {
    this.native.setRootTable(pa);
  }

  /** GCMD.TE: with translation off, DMA addresses are physical addresses. */
  enableTranslation(on: boolean): void {
    this.native.enableTranslation(on);
  }

  /**
   * Translates a burst of DMA requests from requester `sid` (`bus << 8 | devfn`) in one call:
   * `out[i]` receives the PA of `iovas[i]` or {@link TRANSLATION_FAULTED}, `opts.faults[i]` the
   * fault reason or 0. Returns how many faulted. No allocation per call.
   */
  translate(sid: number, iovas: BigUint64Array, out: BigUint64Array, opts: { write: boolean; faults?: Uint8Array }): number {
    obj.check(opts, 'opts');
    return this.native.translate(sid, iovas, out, bool.check(opts.write, 'opts.write'), faultsKind.check(opts.faults, 'opts.faults'));
  }

  /** Translates one request; throws {@link DmarFaultError} on a fault. */
  translateOne(sid: number, iova: bigint, write = false): bigint {
    const pa = this.native.translateOne(sid, iova, write);
    if (pa === TRANSLATION_FAULTED) throw new DmarFaultError(sid, iova, this.native.lastFault, write);
    return pa;
  }

  /**
   * Device `sid` reads `buf.length` bytes at `iova` into `buf` (no copy, no allocation): one
   * translation request per 4 KiB page, each exactly as {@link translate} would make it (caches,
   * fault recording). Returns 0, or the fault reason of the first page that faults: the bytes of
   * the pages before it are in `buf`, the rest of `buf` is untouched, and {@link lastFaultIova}
   * tells where the faulting part starts. Throws `ERR_INVALID_ARG_VALUE` if `iova + buf.length`
   * overflows 64 bits, a physical-memory error if a page translates beyond memory.
   */
  dmaRead(sid: number, iova: bigint, buf: Uint8Array): number {
    return this.native.dmaRead(sid, iova, buf);
  }

  /**
   * Device `sid` writes `buf` at `iova`, page by page as {@link dmaRead} reads: returns 0, or the
   * fault reason of the first faulting page, before which every byte was written and from which
   * none was.
   */
  dmaWrite(sid: number, iova: bigint, buf: Uint8Array): number {
    return this.native.dmaWrite(sid, iova, buf);
  }

  /**
   * The IOVA of the last faulting request of {@link dmaRead}, {@link dmaWrite} or
   * {@link translateOne}: for DMA the first byte of the transfer in the faulting page (its start
   * or a page boundary). 0n after a call that succeeded.
   */
  get lastFaultIova(): bigint {
    return this.native.lastFaultIova;
  }

  /** Pending fault records (FRCD registers with F set), oldest first. */
  faults(): DmarFault[] {
    return this.native.faults();
  }

  /** Clears the fault records and FSTS.PFO, as the driver's fault handler does. */
  clearFaults(): number {
    return this.native.clearFaults();
  }

  /** Counters. */
  stats(): IommuStats {
    return this.native.stats();
  }

  /** Entries held and capacity of the IOTLB, paging-structure cache and context cache. */
  cacheOccupancy(): CacheOccupancy {
    return this.native.cacheOccupancy();
  }

  /** Context-cache invalidation (CCMD). */
  invalidateContext(req: ContextInvalidation): void {
    const r = obj.check(req, 'req') as Record<string, unknown>;
    const g = contextGranularity.check(r.granularity, 'req.granularity');
    const did = g === 'global' ? 0 : u16.check(r.did, 'req.did');
    const device = g === 'device';
    this.native.invalidateContext(g, did, device ? u16.check(r.sid, 'req.sid') : 0, device ? given(fmKind, r.fm, 'req.fm', 0) : 0);
  }

  /** IOTLB invalidation; returns the granularity performed (PSI without CAP.PSI becomes DSI). */
  invalidateIotlb(req: IotlbInvalidation): Granularity {
    const r = obj.check(req, 'req') as Record<string, unknown>;
    const g = iotlbGranularity.check(r.granularity, 'req.granularity');
    const did = g === 'global' ? 0 : u16.check(r.did, 'req.did');
    if (g !== 'page') return this.native.invalidateIotlb(g, did, 0n, 0, false);
    const addr = u64.check(r.addr, 'req.addr');
    return this.native.invalidateIotlb(g, did, addr, given(amKind, r.am, 'req.am', 0), given(bool, r.ih, 'req.ih', false));
  }

  /** Linux's `intel_iommu_tlb_sync` for domain `did`: PSI (IH=1 iff nothing was freed) or DSI, then frees the gathered table pages. */
  iotlbSync(did: number, gather: Gather): Granularity {
    return this.native.iotlbSync(did, gatherArg(gather));
  }

  /** A fresh, empty page table of `levels` levels (default: the deepest the width allows). */
  createPageTable(levels?: number): PageTable {
    return PageTable.wrap(this.native.createPageTable(levels ?? defaultLevels(this)));
  }

  /** Adopts the existing tables at `pgd` (re-hydration after kexec). */
  adoptPageTable(pgd: bigint, levels: number): PageTable {
    return PageTable.wrap(this.native.adoptPageTable(pgd, levels));
  }
}

function defaultLevels(unit: IommuUnit): number {
  const mgaw = Number((unit.registers().cap >> 16n) & 0x3fn) + 1;
  return (mgaw - 30) / 9 + 2;
}
