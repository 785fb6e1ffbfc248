// The cost model of the live update's phases: each phase reports the work it did (a PhaseWork),
// and the model turns work into simulated time, a base per phase plus a constant per unit of
// work. The constants are named, each with where its value comes from (README, "Phase costs":
// the table with links). A leaf of the kernel core: it imports only the argument errors, so the
// kernel (which reports the work) and the host (which keeps the clock) may both use it.
import { invalidArgType, invalidArgValue, outOfRange } from '../errors.js';

/**
 * What a phase did, in countable units: every field optional (absent = none of it). Phases of
 * either flow report what applies to them; {@link PHASE_COSTS} says which fields each phase's
 * time depends on.
 */
export interface PhaseWork {
  /** KHO preservation marks set (old kernel) or deserialised (next kernel): one per naturally aligned block, whatever its order. */
  preservedBlocks?: number;
  /** Bytes those blocks cover (reported; time goes by blocks). */
  preservedBytes?: number;
  /** KHO FDT bytes serialised (old kernel) or parsed (next kernel). */
  fdtBytes?: number;
  /** IOMMU page-table pages walked: verified and adopted in the next kernel. */
  tablePages?: number;
  /** Unpreserved memory the kernel reclaims at boot (struct pages initialised, freed to the buddy allocator): after a kexec, what the jump scrubbed. */
  scrubbedBytes?: number;
  /** IOAS areas (mappings) serialised, verified or replayed. */
  mappings?: number;
  /** IOMMU domains adopted from the handover. */
  domains?: number;
  /** Devices shut down at kexec (bus mastering off, context entry cleared). */
  devicesShutDown?: number;
  /** Devices kept translating through the kexec (their bus mastering and context entries stay). */
  devicesKept?: number;
  /** Devices whose context entry the next kernel adopted (iommu-init) or a VMM re-attached (vmm-reattach). */
  devicesAttached?: number;
  /** LUO sessions serialised, retrieved or finished. */
  sessions?: number;
  /** LUO files frozen, retrieved or finished (memfd, iommufd, VFIO cdev). */
  files?: number;
  /** memfd folios a LUO file handler serialised or restored. */
  folios?: number;
}

/** The fields of {@link PhaseWork}, in the order reports list them. */
export const WORK_FIELDS = [
  'preservedBlocks',
  'preservedBytes',
  'fdtBytes',
  'tablePages',
  'scrubbedBytes',
  'mappings',
  'domains',
  'devicesShutDown',
  'devicesKept',
  'devicesAttached',
  'sessions',
  'files',
  'folios',
] as const satisfies readonly (keyof PhaseWork)[];

/**
 * The phases of the upstream (LUO) flow, for `phase(name, work)` when it lands: the reboot
 * serialises the sessions, freezes every preserved file and finalises KHO; the next kernel's
 * userspace retrieves the files and finishes the sessions.
 */
export const LUO_PHASES = {
  serialise: 'luo-serialise',
  freeze: 'luo-freeze',
  finalise: 'kho-finalise',
  retrieve: 'luo-retrieve',
  finish: 'luo-finish',
} as const;

/** The constants of the model, in nanoseconds of simulated time (any finite number >= 0). */
export interface CostConstants {
  // ---- bases: what a phase costs with no work -------------------------------------------------
  /** `kho-dump`: the DUMP notifier chain, blob allocation, sysfs. */
  khoDumpNs: number;
  /** `kho-abort`: the ABORT chain. */
  khoAbortNs: number;
  /** `shutdown`: `kernel_kexec` → `machine_shutdown`: reboot notifiers, stopping the other CPUs. */
  shutdownNs: number;
  /** `jump`: `machine_kexec` to `start_kernel` (purgatory, relocation, entry). */
  jumpNs: number;
  /** `early-boot`: `setup_arch` up to the initcalls, before memory is reclaimed. */
  earlyBootNs: number;
  /** `iommu-init`: `intel_iommu_init` (DMAR tables, units, QI) before any domain is adopted. */
  iommuInitNs: number;
  /** `iommufd-restore`: iommufd's init and parsing its KHO node, before any area. */
  iommufdRestoreNs: number;
  /** `boot`: the rest of the next kernel's boot, up to init. */
  bootNs: number;
  /** `vmm-reattach`: a VMM process claiming its iommufd, before any device. */
  vmmReattachNs: number;
  /** Any phase the model does not name (`guest-io`, a caller's own). */
  otherPhaseNs: number;
  /** `luo-serialise`: `liveupdate_reboot()` up to the sessions. */
  luoSerialiseNs: number;
  /** `luo-freeze`: the freeze pass over the preserved files. */
  luoFreezeNs: number;
  /** `kho-finalise`: `kho_finalize()` before the preserved memory is serialised. */
  khoFinaliseNs: number;
  /** `luo-retrieve`: `LIVEUPDATE_IOCTL_RETRIEVE_SESSION` / `SESSION_RETRIEVE_FD`. */
  luoRetrieveNs: number;
  /** `luo-finish`: `LIVEUPDATE_SESSION_FINISH`. */
  luoFinishNs: number;
  // ---- per unit of work -----------------------------------------------------------------------
  /** Per preservation mark set (or undone by ABORT): a bit in KHO's tracking, serialised. */
  preserveBlockNs: number;
  /** Per preservation mark the next kernel deserialises (reserved, its struct page set up). */
  restoreBlockNs: number;
  /** Per byte of FDT serialised. */
  fdtWriteByteNs: number;
  /** Per byte of FDT the next kernel checks and parses. */
  fdtReadByteNs: number;
  /** Per GiB of unpreserved memory the next kernel reclaims (memmap init + free to buddy). */
  reclaimNsPerGiB: number;
  /** Per IOMMU page-table page verified or adopted (512 entries read and checked). */
  tablePageNs: number;
  /** Per IOAS area restored: parsed, checked against the pin records, re-created. */
  mappingRestoreNs: number;
  /** Per domain adopted: DID reserved, the domain rebuilt around its tables. */
  domainAdoptNs: number;
  /** Per device whose context entry is adopted: a context-cache + IOTLB invalidation with a wait. */
  deviceAdoptNs: number;
  /** Per device shut down at kexec: bus mastering off, context entry cleared and flushed. */
  deviceShutdownNs: number;
  /** Per device a VMM re-attaches: VFIO_DEVICE_BIND_IOMMUFD + ATTACH_IOMMUFD_PT, no reset. */
  deviceReattachNs: number;
  /** Per LUO session serialised, retrieved or finished. */
  luoSessionNs: number;
  /** Per LUO file frozen, retrieved or finished (the handler's callback). */
  luoFileNs: number;
  /** Per memfd folio serialised at freeze. */
  folioSerialiseNs: number;
  /** Per memfd folio restored at retrieve (`kho_restore_folio` + page-cache insertion). */
  folioRestoreNs: number;
}

const ms = 1_000_000;
const us = 1_000;
const GiB = 2 ** 30;

/**
 * The defaults. Sources are in the README's "Phase costs" table (with links); where nothing is
 * published the value is reasoned there and marked as such.
 */
export const DEFAULT_COSTS: Readonly<CostConstants> = Object.freeze({
  khoDumpNs: 5 * ms, // unpublished; the previous fixed value (the chain itself is small next to its work)
  khoAbortNs: 1 * ms, // unpublished; the previous fixed value
  shutdownNs: 30 * ms, // unpublished; the previous fixed value
  jumpNs: 15 * ms, // ByteDance "faster kexec reboot" (2022): machine_kexec → start_kernel in 15 ms
  earlyBootNs: 150 * ms, // with bootNs: their sum + jump ≈ Usama Arif's 1.2 s kexec → init (LPC 2023 / HVO series)
  iommuInitNs: 10 * ms, // unpublished; the previous fixed value
  iommufdRestoreNs: 5 * ms, // unpublished; the previous fixed value
  bootNs: 800 * ms, // see earlyBootNs
  vmmReattachNs: 1 * ms, // unpublished; the previous default for a phase without a constant
  otherPhaseNs: 1 * ms, // the previous default for a phase without a constant
  luoSerialiseNs: 1 * ms, // unpublished; assumed like vmmReattachNs
  luoFreezeNs: 1 * ms, // unpublished
  khoFinaliseNs: 5 * ms, // unpublished; as khoDumpNs (the same chain in the upstream flow)
  luoRetrieveNs: 1 * ms, // unpublished
  luoFinishNs: 1 * ms, // unpublished
  preserveBlockNs: 46, // Pratyush Yadav (KHO v5 review): 48 GiB of 4 KiB pages preserved + serialised in 577 ms
  restoreBlockNs: 46, // unpublished ("very slow", same mail); assumed equal to preserving
  fdtWriteByteNs: 3.8, // libfdt fdt_sw at 262 MB/s (this repo's bench, 100k-node KHO-like tree)
  fdtReadByteNs: 1.75, // libfdt fdt_check_full at 570 MB/s (same bench)
  reclaimNsPerGiB: 409 * us, // Daniel Jordan (padata deferred init, 2020): 384 GiB/node in 157 ms
  tablePageNs: 800, // unpublished; 4 KiB read at ~13.7 GB/s (clear_pages series) + 512 checks at ~1 ns
  mappingRestoreNs: 2 * us, // unpublished; one FDT node parsed, a pin-record lookup, an iopt_area
  domainAdoptNs: 20 * us, // unpublished; a few allocations and a DID reservation
  deviceAdoptNs: 5 * us, // unpublished; one queued-invalidation round trip
  deviceShutdownNs: 50 * us, // unpublished; a config write + context clear + flushes with waits
  deviceReattachNs: 100 * us, // unpublished; two VFIO ioctls, no FLR (the device never stopped)
  luoSessionNs: 10 * us, // unpublished
  luoFileNs: 10 * us, // unpublished
  folioSerialiseNs: 10, // unpublished; one 16-byte record written per folio
  folioRestoreNs: 250, // unpublished; Kalyazin: 3 GiB guest_memfd populated in 708 ms (~0.9 µs/page, alloc + zero included)
});

/** A term of a phase's cost: `work[field] / unit × constants[constant]`. */
export interface CostTerm {
  field: keyof PhaseWork;
  constant: keyof CostConstants;
  /** What one count of the constant is, in the field's units (GiB for bytes reclaimed; else 1). */
  unit?: number;
}

/** How each phase the model names turns its work into time. */
export const PHASE_COSTS: Readonly<Record<string, { base: keyof CostConstants; per: readonly CostTerm[] }>> = Object.freeze({
  'kho-dump': {
    base: 'khoDumpNs',
    per: [
      { field: 'preservedBlocks', constant: 'preserveBlockNs' },
      { field: 'fdtBytes', constant: 'fdtWriteByteNs' },
    ],
  },
  'kho-abort': { base: 'khoAbortNs', per: [{ field: 'preservedBlocks', constant: 'preserveBlockNs' }] },
  shutdown: { base: 'shutdownNs', per: [{ field: 'devicesShutDown', constant: 'deviceShutdownNs' }] },
  jump: { base: 'jumpNs', per: [] },
  'early-boot': {
    base: 'earlyBootNs',
    per: [
      { field: 'scrubbedBytes', constant: 'reclaimNsPerGiB', unit: GiB },
      { field: 'preservedBlocks', constant: 'restoreBlockNs' },
      { field: 'fdtBytes', constant: 'fdtReadByteNs' },
    ],
  },
  'iommu-init': {
    base: 'iommuInitNs',
    per: [
      { field: 'tablePages', constant: 'tablePageNs' },
      { field: 'domains', constant: 'domainAdoptNs' },
      { field: 'devicesAttached', constant: 'deviceAdoptNs' },
    ],
  },
  'iommufd-restore': {
    base: 'iommufdRestoreNs',
    per: [
      { field: 'mappings', constant: 'mappingRestoreNs' },
      { field: 'tablePages', constant: 'tablePageNs' },
    ],
  },
  boot: { base: 'bootNs', per: [] },
  'vmm-reattach': { base: 'vmmReattachNs', per: [{ field: 'devicesAttached', constant: 'deviceReattachNs' }] },
  [LUO_PHASES.serialise]: {
    base: 'luoSerialiseNs',
    per: [
      { field: 'sessions', constant: 'luoSessionNs' },
      { field: 'fdtBytes', constant: 'fdtWriteByteNs' },
    ],
  },
  [LUO_PHASES.freeze]: {
    base: 'luoFreezeNs',
    per: [
      { field: 'files', constant: 'luoFileNs' },
      { field: 'folios', constant: 'folioSerialiseNs' },
    ],
  },
  [LUO_PHASES.finalise]: {
    base: 'khoFinaliseNs',
    per: [
      { field: 'preservedBlocks', constant: 'preserveBlockNs' },
      { field: 'fdtBytes', constant: 'fdtWriteByteNs' },
    ],
  },
  [LUO_PHASES.retrieve]: {
    base: 'luoRetrieveNs',
    per: [
      { field: 'sessions', constant: 'luoSessionNs' },
      { field: 'files', constant: 'luoFileNs' },
      { field: 'folios', constant: 'folioRestoreNs' },
    ],
  },
  [LUO_PHASES.finish]: {
    base: 'luoFinishNs',
    per: [
      { field: 'sessions', constant: 'luoSessionNs' },
      { field: 'files', constant: 'luoFileNs' },
    ],
  },
});

/** The largest constant accepted: 10^15 ns (11.6 days), so every product stays finite. */
export const COST_MAX_NS = 1e15;

/**
 * Checks a partial set of constants (`Host.boot({ costModel })`, `--cost-model FILE.json`):
 * a plain object whose keys are {@link CostConstants} names and whose values are finite numbers
 * from 0 to {@link COST_MAX_NS}. `ERR_INVALID_ARG_TYPE` for a non-object or a non-number,
 * `ERR_INVALID_ARG_VALUE` for an unknown key, `ERR_OUT_OF_RANGE` for a bad number.
 */
export function checkCostConstants(value: unknown, name = 'costModel'): Partial<CostConstants> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidArgType(`The "${name}" argument must be an object of cost constants (ns). Received ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`);
  }
  const out: Partial<CostConstants> = {};
  for (const [k, v] of Object.entries(value)) {
    if (!Object.hasOwn(DEFAULT_COSTS, k)) {
      throw invalidArgValue(`The property '${name}.${k}' is not a cost constant. Known: ${Object.keys(DEFAULT_COSTS).join(', ')}`);
    }
    if (typeof v !== 'number') throw invalidArgType(`The "${name}.${k}" property must be of type number (ns). Received type ${v === null ? 'null' : typeof v}`);
    if (!Number.isFinite(v) || v < 0 || v > COST_MAX_NS) throw outOfRange(`${name}.${k}`, 'a finite number of ns >= 0 && <= 1e15', v);
    out[k as keyof CostConstants] = v;
  }
  return out;
}

/**
 * Checks a work record (`host.phase(name, generation, work)`): known {@link PhaseWork} fields
 * only, each a finite number >= 0.
 */
export function checkPhaseWork(value: unknown, name = 'work'): PhaseWork {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidArgType(`The "${name}" argument must be an object (PhaseWork)`);
  for (const [k, v] of Object.entries(value)) {
    if (!(WORK_FIELDS as readonly string[]).includes(k)) throw invalidArgValue(`The property '${name}.${k}' is not a kind of work. Known: ${WORK_FIELDS.join(', ')}`);
    if (typeof v !== 'number') throw invalidArgType(`The "${name}.${k}" property must be of type number. Received type ${v === null ? 'null' : typeof v}`);
    if (!Number.isFinite(v) || v < 0) throw outOfRange(`${name}.${k}`, 'a finite number >= 0', v);
  }
  return value as PhaseWork;
}

/** The model in effect: the defaults with a caller's constants over them. */
export class CostModel {
  readonly constants: Readonly<CostConstants>;

  /** `overrides` is checked ({@link checkCostConstants}); what it leaves out keeps its default. */
  constructor(overrides: unknown = {}) {
    this.constants = Object.freeze({ ...DEFAULT_COSTS, ...checkCostConstants(overrides) });
  }

  /** The constants a phase's time depends on: its base, then one per kind of work. */
  static constantsOf(phase: string): (keyof CostConstants)[] {
    const p = PHASE_COSTS[phase];
    return p ? [p.base, ...p.per.map((t) => t.constant)] : ['otherPhaseNs'];
  }

  /** The simulated duration of `phase` having done `work`: its base plus each unit of work at its constant. */
  phaseNs(phase: string, work: PhaseWork = {}): bigint {
    const c = this.constants;
    const p = Object.hasOwn(PHASE_COSTS, phase) ? PHASE_COSTS[phase]! : null;
    if (!p) return BigInt(Math.round(c.otherPhaseNs));
    let ns = c[p.base];
    for (const t of p.per) ns += ((work[t.field] ?? 0) / (t.unit ?? 1)) * c[t.constant];
    return BigInt(Math.round(ns));
  }
}
