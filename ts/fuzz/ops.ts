// The fuzzer's command set: plain, JSON-serialisable operations (numbers and booleans only), the
// fast-check arbitraries that generate them, and their default weights. An operation names what to
// do in abstract terms ("the 3rd area of the 2nd IOAS of context slot 1, 2 pages in"); the model
// resolves it against its own state into concrete syscall arguments, so a shrunk or replayed
// sequence stays meaningful.
import fc from 'fast-check';
import { invalidArgValue } from '../errors.js';

/** Where a FIXED (or ignored) IOVA comes from: an absolute base, or next to an existing area. */
export interface IovaChoice {
  /** 0: ABS_BASES[idx], 1: an area's start, 2: just past an area's end (each + dPg pages + dB bytes). */
  kind: number;
  idx: number;
  dPg: number;
  dB: number;
}

export type Op =
  /** open /dev/iommu into context slot `c` (and IOMMU_OPTION PERSISTENT SET if `persist`). */
  | { k: 'open'; c: number; persist: boolean }
  /** close the iommufd of slot `c`. */
  | { k: 'close'; c: number }
  /** IOMMU_OPTION(PERSISTENT, SET) / GET on slot `c`. */
  | { k: 'optSet'; c: number }
  | { k: 'optGet'; c: number }
  | { k: 'ioasAlloc'; c: number }
  /** IOMMU_IOAS_MAP of `src` (0 anon, 1 memfd mapping, 2..4 guestmemfs file windows, 5 unmapped VA). */
  | { k: 'map'; c: number; ioas: number; src: number; offPg: number; offB: number; lenPg: number; lenB: number; fixed: boolean; at: IovaChoice; r: boolean; w: boolean }
  /** IOMMU_IOAS_MAP_FILE of `file` (0..2 guestmemfs slots, 3 the memfd, 4 the iommufd itself, 5 a closed fd). */
  | { k: 'mapFile'; c: number; ioas: number; file: number; startPg: number; lenPg: number; fixed: boolean; at: IovaChoice; r: boolean; w: boolean }
  | { k: 'copy'; c: number; src: number; dst: number; pick: number; offPg: number; lenMode: number; lenPg: number; fixed: boolean; at: IovaChoice; r: boolean; w: boolean }
  | { k: 'unmap'; c: number; ioas: number; shape: number; pick: number; pick2: number; dPg: number; lenPg: number; at: IovaChoice }
  | { k: 'allow'; c: number; ioas: number; idxs: number[] }
  /** IOMMU_DESTROY of a raw object id (0..9). */
  | { k: 'destroy'; c: number; id: number }
  /** VFIO_DEVICE_BIND_IOMMUFD of device `d` (opening /dev/vfio/devices/vfio<d> if needed) to slot `c`. */
  | { k: 'bind'; d: number; c: number }
  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT: mode 0 an IOAS of the bound context, 1 an HWPT, 2 raw id `pick`. */
  | { k: 'attach'; d: number; mode: number; pick: number }
  | { k: 'detach'; d: number }
  /** close the device fd (unbind). */
  | { k: 'unbind'; d: number }
  /** Device DMA: where 0 inside an area of its IOAS, 1 an absolute IOVA, 2 just past an area, 3 across an area's end. */
  | { k: 'dmaRead'; d: number; where: number; idx: number; off: number; words: number }
  | { k: 'dmaWrite'; d: number; where: number; idx: number; off: number; words: number; val: number }
  /** The VMM's own loads and stores (src as for map). */
  | { k: 'cpuWrite'; src: number; off: number; words: number; val: number }
  | { k: 'cpuRead'; src: number; off: number; words: number }
  /** guestmemfs: create `f<f>`, truncate it to `blocks` 2 MiB blocks, unlink it. */
  | { k: 'gmCreate'; f: number }
  | { k: 'gmTruncate'; f: number; blocks: number }
  | { k: 'gmUnlink'; f: number }
  /** write '1' / '0' to /sys/kernel/kho/active. */
  | { k: 'kho'; on: boolean }
  /**
   * kexec_file_load + reboot(LINUX_REBOOT_CMD_KEXEC), after activating KHO if `kho`; then a new VMM.
   * rehydrate 0: nothing more, 1: claim every persisted iommufd, 2: also re-bind and re-attach
   * every device that kept translating (to its HWPT if `viaHwpt`, else to that HWPT's IOAS).
   */
  | { k: 'kexec'; kho: boolean; rehydrate: number; viaHwpt: boolean }
  /**
   * A live update whose KHO blob is corrupted at the jump (the mutation drawn from `seed`: raw bytes,
   * or a tree rewrite if `semantic`), then every VMM re-claims and re-attaches: no device may gain a
   * translation. What the next kernel refused is not modelled, so this ends the sequence.
   */
  | { k: 'corruptKexec'; seed: number; semantic: boolean }
  /** read /sys/kernel/iommufd_persisted/<id>/iommufd for the `pick`-th persisted id (or a bad one). */
  | { k: 'claim'; pick: number }
  /** The VMM exits (every fd closed, address space gone); a new VMM process starts. */
  | { k: 'exit' }
  /**
   * What a VMM does to start a VM, as one step: context slot `c` (persistent if `persist`), an
   * IOAS, guestmemfs file `f` of `blocks` blocks mapped whole into it, device `d` bound and attached.
   * Each syscall is planned and checked like the single operations; steps that do not apply are skipped.
   */
  | { k: 'vm'; c: number; persist: boolean; f: number; blocks: number; d: number }
  /** Deep comparison of everything observable (IOVA ranges, per-page pins, directory, sysfs). */
  | { k: 'check' }
  // ---- the upstream flow (model/luo.ts); memfd seals in both flows, /dev/liveupdate only with LUO ----
  /** memfd_create (MFD_ALLOW_SEALING if `seal`); the VMM holds up to 4 memfds (`m` picks one, modulo). */
  | { k: 'mfdCreate'; seal: boolean }
  | { k: 'mfdClose'; m: number }
  /** ftruncate to LUO_SIZES[size] pages. */
  | { k: 'mfdTruncate'; m: number; size: number }
  /** F_ADD_SEALS LUO_SEALS[seals], then F_GET_SEALS. */
  | { k: 'mfdSeal'; m: number; seals: number }
  /** mmap MAP_SHARED|MAP_FIXED at window `w` (0..2), writable if `write`. */
  | { k: 'mfdMmap'; m: number; w: number; write: boolean }
  /** The VMM's store / load at page `pg` of window `w` (past the window or the file: EFAULT). */
  | { k: 'mfdPoke'; w: number; pg: number; off: number; words: number; val: number }
  | { k: 'mfdPeek'; w: number; pg: number; off: number; words: number }
  | { k: 'luoOpen' }
  | { k: 'luoCloseDev' }
  /** LIVEUPDATE_IOCTL_CREATE_SESSION / RETRIEVE_SESSION of LUO_NAMES[name]. */
  | { k: 'luoCreate'; name: number }
  | { k: 'luoRetrieve'; name: number }
  /**
   * PRESERVE_FD into session `s` of LUO_TOKENS[token]: src 0 a memfd, 1 a session, 2 /dev/liveupdate,
   * 3 a pipe, 4 a closed fd, 5 an iommufd or guestmemfs fd, 6 a VFIO device fd; with `inject` 1..3
   * the iommu FLB's, iommufd's or VFIO's preserve armed first to fail with LUO_FAIL_ERRNOS[err].
   */
  | { k: 'luoPreserve'; s: number; src: number; pick: number; token: number; inject?: number; err?: number }
  /** IOMMU_IOAS_MAP_FILE of memfd `m` (its first `lenPg` pages, 0: all) into an IOAS of slot `c`, automatic IOVA. */
  | { k: 'mfdMapFile'; c: number; ioas: number; m: number; lenPg: number }
  /** IOMMU_HWPT_LU_SET_PRESERVE on slot `c`: the `pick`-th HWPT (3: an IOAS id or a bad one), token 1 + token. */
  | { k: 'luoMark'; c: number; pick: number; token: number }
  /**
   * A VM the upstream flow preserves, as one step: context slot `c` (not persistent), a new IOAS
   * (with `mem`, a sealed memfd of 4 pages mapped into it), device `d` bound and attached, its HWPT
   * marked (token 1 + token), a session, PRESERVE_FD of the memfd, the iommufd and (if `dev`) the device;
   * `flaw` 1 maps the memfd before F_SEAL_SEAL (iommufd EINVAL), 2 does not preserve it (ENOENT). Each syscall is planned like the single operations.
   */
  | { k: 'luoVm'; c: number; d: number; token: number; dev: boolean; mem: boolean; flaw?: number }
  | { k: 'luoRetrieveFd'; s: number; token: number }
  | { k: 'luoFinish'; s: number }
  | { k: 'luoGetName'; s: number }
  /** close a session fd: unpreserves (outgoing) or finishes (incoming). */
  | { k: 'luoCloseSession'; s: number }
  /**
   * The reboot with a failure injected: `inject` 0 none, 1 the nth next luo_file_freeze_one, 2
   * kho_finalize (nth 1: this reboot's), returning LUO_FAIL_ERRNOS[err]; retried once if `retry`.
   */
  | { k: 'luoReboot'; inject: number; nth: number; err: number; retry: boolean; rehydrate: number; retrieve?: boolean };

export type OpKind = Op['k'];

/** Relative weights of each operation kind in generated sequences (0 disables a kind). */
export type CommandWeights = Partial<Record<OpKind, number>>;

/**
 * The default mix: mostly IOAS and DMA traffic, lifecycle operations rarer; one kexec in about
 * 400 commands (a 10^6-command campaign does ≈2,500 live updates).
 */
export const DEFAULT_WEIGHTS: Required<CommandWeights> = {
  open: 3,
  close: 1,
  optSet: 1,
  optGet: 1,
  ioasAlloc: 3,
  map: 14,
  mapFile: 6,
  copy: 6,
  unmap: 9,
  allow: 2,
  destroy: 3,
  bind: 5,
  attach: 9,
  detach: 1.5,
  unbind: 1,
  dmaRead: 14,
  dmaWrite: 10,
  cpuWrite: 5,
  cpuRead: 3,
  gmCreate: 3,
  gmTruncate: 4,
  gmUnlink: 2,
  kho: 1.5,
  kexec: 0.35,
  corruptKexec: 0.05,
  claim: 1,
  exit: 0.3,
  vm: 2,
  check: 1.5,
  // The upstream flow's kinds, rare here: memfd seals apply anyway, /dev/liveupdate is ENOENT.
  mfdCreate: 0.4,
  mfdClose: 0.15,
  mfdTruncate: 0.3,
  mfdSeal: 0.3,
  mfdMmap: 0.2,
  mfdPoke: 0.3,
  mfdPeek: 0.3,
  luoOpen: 0.05,
  luoCloseDev: 0.05,
  luoCreate: 0.05,
  luoRetrieve: 0.05,
  luoPreserve: 0.05,
  luoRetrieveFd: 0.05,
  luoFinish: 0.05,
  luoGetName: 0.05,
  luoCloseSession: 0.05,
  luoMark: 0.05,
  luoVm: 0,
  mfdMapFile: 0.05,
  // Without LUO it is a plain kexec whose failure sites are never reached: the RFC's kexec covers it.
  luoReboot: 0,
};

/** The upstream flow's kinds. */
export const LUO_KINDS: readonly OpKind[] = ['mfdCreate', 'mfdClose', 'mfdTruncate', 'mfdSeal', 'mfdMmap', 'mfdPoke', 'mfdPeek', 'luoOpen', 'luoCloseDev', 'luoCreate', 'luoRetrieve', 'luoPreserve', 'luoRetrieveFd', 'luoFinish', 'luoGetName', 'luoCloseSession', 'luoMark', 'luoVm', 'mfdMapFile', 'luoReboot'];

/**
 * The mix of the LUO world (`flow: 'luo'`): mostly memfds and sessions, a reboot every ~80
 * commands (a fifth of them with a failure injected), and a quarter of the RFC mix beside it
 * (its kexec is the LUO reboot there; no corrupted handovers).
 */
export const LUO_WEIGHTS: Required<CommandWeights> = {
  ...(Object.fromEntries(Object.entries(DEFAULT_WEIGHTS).map(([k, w]) => [k, w / 4])) as Required<CommandWeights>),
  kho: 0.2,
  kexec: 0.25,
  corruptKexec: 0,
  exit: 0.3,
  check: 1,
  mfdCreate: 4,
  mfdClose: 1,
  mfdTruncate: 4,
  mfdSeal: 3,
  mfdMmap: 4,
  mfdPoke: 5,
  mfdPeek: 5,
  luoOpen: 1.5,
  luoCloseDev: 0.5,
  luoCreate: 4,
  luoRetrieve: 3,
  luoPreserve: 7,
  luoRetrieveFd: 4,
  luoFinish: 1.5,
  luoGetName: 1,
  luoCloseSession: 1,
  luoMark: 1,
  luoVm: 1,
  mfdMapFile: 1,
  luoReboot: 1,
};

/** The default weights of a flow. */
export const weightsOf = (flow: 'rfc' | 'luo' = 'rfc'): Required<CommandWeights> => (flow === 'luo' ? LUO_WEIGHTS : DEFAULT_WEIGHTS);

const small = (max: number) => fc.integer({ min: 0, max });
const bool = fc.boolean();
const mostly = (v: boolean, w = 4) => fc.oneof({ weight: w, arbitrary: fc.constant(v) }, { weight: 1, arbitrary: fc.constant(!v) });
/** Context slot: three slots, the first the busiest. */
const ctxSlot = fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.constant(2) });
/** An IOAS of the context: index (mod the number of IOASes) mostly, a raw id (100 + id) sometimes. */
const ioasPick = fc.oneof({ weight: 12, arbitrary: small(3) }, { weight: 1, arbitrary: fc.integer({ min: 100, max: 106 }) });
/** Bytes off a page multiple: mostly none (with a domain anything else is a plain EINVAL). */
const oddBytes = fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4095 }) });
const lenPg = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1, max: 8 }) },
  { weight: 3, arbitrary: fc.integer({ min: 9, max: 96 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, 512, 1024) },
);
const offPg = fc.oneof({ weight: 6, arbitrary: small(16) }, { weight: 2, arbitrary: small(1100) }, { weight: 1, arbitrary: small(4200) });
const at: fc.Arbitrary<IovaChoice> = fc.record({ kind: small(2), idx: small(99), dPg: fc.integer({ min: -2, max: 8 }), dB: oddBytes });
const dev = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constant(1) });
const mapSrc = fc.oneof(
  { weight: 2, arbitrary: fc.constant(0) },
  { weight: 1, arbitrary: fc.constant(1) },
  { weight: 6, arbitrary: fc.integer({ min: 2, max: 4 }) },
  { weight: 1, arbitrary: fc.constant(5) },
);
const rw = { r: mostly(true), w: mostly(true, 2) };
const words = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 2 }) }, { weight: 1, arbitrary: fc.integer({ min: 3, max: 12 }) });
const dmaWhere = fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.constant(2) }, { weight: 2, arbitrary: fc.constant(3) });

/** One arbitrary per operation kind. */
export const OP_ARBITRARIES: { [K in OpKind]: fc.Arbitrary<Extract<Op, { k: K }>> } = {
  open: fc.record({ k: fc.constant('open' as const), c: ctxSlot, persist: mostly(true, 2) }),
  close: fc.record({ k: fc.constant('close' as const), c: ctxSlot }),
  optSet: fc.record({ k: fc.constant('optSet' as const), c: ctxSlot }),
  optGet: fc.record({ k: fc.constant('optGet' as const), c: ctxSlot }),
  ioasAlloc: fc.record({ k: fc.constant('ioasAlloc' as const), c: ctxSlot }),
  map: fc.record({
    k: fc.constant('map' as const),
    c: ctxSlot,
    ioas: ioasPick,
    src: mapSrc,
    offPg,
    offB: oddBytes,
    lenPg,
    lenB: oddBytes,
    fixed: bool,
    at,
    ...rw,
  }),
  mapFile: fc.record({
    k: fc.constant('mapFile' as const),
    c: ctxSlot,
    ioas: ioasPick,
    file: fc.oneof({ weight: 8, arbitrary: small(2) }, { weight: 2, arbitrary: fc.constant(3) }, { weight: 1, arbitrary: fc.integer({ min: 4, max: 5 }) }),
    startPg: fc.oneof({ weight: 4, arbitrary: small(8) }, { weight: 2, arbitrary: small(4200) }),
    lenPg,
    fixed: bool,
    at,
    ...rw,
  }),
  copy: fc.record({
    k: fc.constant('copy' as const),
    c: ctxSlot,
    src: ioasPick,
    dst: ioasPick,
    pick: small(99),
    offPg: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 6 }) }),
    lenMode: small(3),
    lenPg,
    fixed: bool,
    at,
    ...rw,
  }),
  unmap: fc.record({
    k: fc.constant('unmap' as const),
    c: ctxSlot,
    ioas: ioasPick,
    shape: small(7),
    pick: small(99),
    pick2: small(99),
    dPg: small(3),
    lenPg,
    at,
  }),
  allow: fc.record({ k: fc.constant('allow' as const), c: ctxSlot, ioas: ioasPick, idxs: fc.array(small(11), { maxLength: 3 }) }),
  destroy: fc.record({ k: fc.constant('destroy' as const), c: ctxSlot, id: small(9) }),
  bind: fc.record({ k: fc.constant('bind' as const), d: dev, c: ctxSlot }),
  attach: fc.record({ k: fc.constant('attach' as const), d: dev, mode: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.constant(2) }), pick: small(9) }),
  detach: fc.record({ k: fc.constant('detach' as const), d: dev }),
  unbind: fc.record({ k: fc.constant('unbind' as const), d: dev }),
  dmaRead: fc.record({ k: fc.constant('dmaRead' as const), d: dev, where: dmaWhere, idx: small(99), off: fc.nat(), words }),
  dmaWrite: fc.record({ k: fc.constant('dmaWrite' as const), d: dev, where: dmaWhere, idx: small(99), off: fc.nat(), words, val: fc.nat() }),
  cpuWrite: fc.record({ k: fc.constant('cpuWrite' as const), src: mapSrc, off: fc.nat({ max: (16 << 20) - 1 }), words, val: fc.nat() }),
  cpuRead: fc.record({ k: fc.constant('cpuRead' as const), src: mapSrc, off: fc.nat({ max: (16 << 20) - 1 }), words }),
  gmCreate: fc.record({ k: fc.constant('gmCreate' as const), f: small(2) }),
  gmTruncate: fc.record({ k: fc.constant('gmTruncate' as const), f: small(2), blocks: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 2, arbitrary: small(8) }) }),
  gmUnlink: fc.record({ k: fc.constant('gmUnlink' as const), f: small(2) }),
  kho: fc.record({ k: fc.constant('kho' as const), on: mostly(false, 2) }),
  kexec: fc.record({ k: fc.constant('kexec' as const), kho: mostly(true, 5), rehydrate: fc.oneof({ weight: 4, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: small(1) }), viaHwpt: bool }),
  corruptKexec: fc.record({ k: fc.constant('corruptKexec' as const), seed: fc.nat(), semantic: bool }),
  claim: fc.record({ k: fc.constant('claim' as const), pick: small(4) }),
  exit: fc.constant({ k: 'exit' as const }),
  vm: fc.record({ k: fc.constant('vm' as const), c: ctxSlot, persist: mostly(true, 3), f: small(2), blocks: fc.integer({ min: 1, max: 3 }), d: dev }),
  check: fc.constant({ k: 'check' as const }),
  mfdCreate: fc.record({ k: fc.constant('mfdCreate' as const), seal: mostly(true, 3) }),
  mfdClose: fc.record({ k: fc.constant('mfdClose' as const), m: small(3) }),
  mfdTruncate: fc.record({ k: fc.constant('mfdTruncate' as const), m: small(3), size: fc.oneof({ weight: 6, arbitrary: small(4) }, { weight: 2, arbitrary: fc.integer({ min: 5, max: 6 }) }, { weight: 1, arbitrary: fc.integer({ min: 7, max: 8 }) }) }),
  mfdSeal: fc.record({ k: fc.constant('mfdSeal' as const), m: small(3), seals: small(8) }),
  mfdMmap: fc.record({ k: fc.constant('mfdMmap' as const), m: small(3), w: small(2), write: mostly(true, 3) }),
  mfdPoke: fc.record({ k: fc.constant('mfdPoke' as const), w: small(2), pg: fc.oneof({ weight: 6, arbitrary: small(3) }, { weight: 1, arbitrary: small(19) }), off: fc.nat({ max: 4095 }), words, val: fc.nat() }),
  mfdPeek: fc.record({ k: fc.constant('mfdPeek' as const), w: small(2), pg: fc.oneof({ weight: 6, arbitrary: small(3) }, { weight: 1, arbitrary: small(19) }), off: fc.nat({ max: 4095 }), words }),
  luoOpen: fc.constant({ k: 'luoOpen' as const }),
  luoCloseDev: fc.constant({ k: 'luoCloseDev' as const }),
  luoCreate: fc.record({ k: fc.constant('luoCreate' as const), name: fc.oneof({ weight: 8, arbitrary: small(2) }, { weight: 1, arbitrary: fc.integer({ min: 3, max: 5 }) }) }),
  luoRetrieve: fc.record({ k: fc.constant('luoRetrieve' as const), name: fc.oneof({ weight: 8, arbitrary: small(2) }, { weight: 1, arbitrary: fc.integer({ min: 3, max: 5 }) }) }),
  luoPreserve: fc.record({
    k: fc.constant('luoPreserve' as const),
    s: small(3),
    src: fc.oneof({ weight: 12, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 3, arbitrary: fc.integer({ min: 5, max: 6 }) }),
    pick: small(3),
    token: fc.oneof({ weight: 6, arbitrary: small(2) }, { weight: 1, arbitrary: fc.constant(3) }),
    inject: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) }),
    err: small(5),
  }),
  luoMark: fc.record({ k: fc.constant('luoMark' as const), c: ctxSlot, pick: fc.oneof({ weight: 6, arbitrary: small(2) }, { weight: 1, arbitrary: fc.constant(3) }), token: small(2) }),
  luoVm: fc.record({ k: fc.constant('luoVm' as const), c: ctxSlot, d: dev, token: small(2), dev: mostly(true, 3), mem: mostly(true, 2), flaw: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 }) }) }),
  mfdMapFile: fc.record({ k: fc.constant('mfdMapFile' as const), c: ctxSlot, ioas: ioasPick, m: small(3), lenPg: small(4) }),
  luoRetrieveFd: fc.record({ k: fc.constant('luoRetrieveFd' as const), s: small(3), token: fc.oneof({ weight: 6, arbitrary: small(2) }, { weight: 1, arbitrary: fc.constant(3) }) }),
  luoFinish: fc.record({ k: fc.constant('luoFinish' as const), s: small(3) }),
  luoGetName: fc.record({ k: fc.constant('luoGetName' as const), s: small(3) }),
  luoCloseSession: fc.record({ k: fc.constant('luoCloseSession' as const), s: small(3) }),
  luoReboot: fc.record({
    k: fc.constant('luoReboot' as const),
    inject: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 3, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.constant(2) }),
    nth: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.integer({ min: 4, max: 9 }) }),
    err: small(5),
    retry: mostly(false, 2),
    rehydrate: fc.oneof({ weight: 3, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: small(1) }),
    retrieve: bool,
  }),
};

/** The operation arbitrary for a weight table (kinds with weight 0 are left out). */
export function opArbitrary(weights: CommandWeights = {}, base: Required<CommandWeights> = DEFAULT_WEIGHTS): fc.Arbitrary<Op> {
  const w = { ...base, ...weights };
  // fc.oneof takes integer weights: scale so that the rarest enabled kind still gets ≥ 1.
  const enabled = (Object.keys(OP_ARBITRARIES) as OpKind[]).filter((k) => (w[k] ?? 0) > 0);
  if (enabled.length === 0) throw invalidArgValue('every command kind has weight 0');
  const scale = 1 / Math.min(...enabled.map((k) => w[k]));
  return fc.oneof(...enabled.map((k) => ({ weight: Math.max(1, Math.round(w[k] * scale)), arbitrary: OP_ARBITRARIES[k] as fc.Arbitrary<Op> })));
}

/** Compact one-line rendering: `map c0 ioas#1 src2+3p len8p fixed@abs[4]+0p R W`. */
export function formatOp(op: Op): string {
  const { k, ...rest } = op as { k: string } & Record<string, unknown>;
  const parts = Object.entries(rest).map(([key, v]) => `${key}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  return `${k}(${parts.join(' ')})`;
}
