// Loads the cargo-built addon. `../native/` resolves the same from ts/ (vitest) and dist/ (tsc output).
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkedBinding, NATIVE_SPECS } from './native-check.js';

/** Plain objects the addon returns (napi `#[napi(object)]`). */
export interface NativeMemoryStats {
  size: bigint;
  framesTotal: number;
  framesFree: number;
  framesAllocated: number;
  framesReserved: number;
  framesResident: number;
  framesPreserved: number;
  /**
   * Host bytes of frame storage: resident frames, the sparse index above them and its lookup
   * cache. 0 when no frame holds data (untouched, or every written frame freed or scrubbed).
   */
  hostBytes: number;
  /** Host bytes (estimated) of the allocator's free extents, fill extents and preservation marks. */
  metadataBytes: number;
  allocations: number;
  frees: number;
}
export interface NativeScrubReport {
  preservedFrames: number;
  poisonedFrames: number;
  freeFrames: number;
}
export interface NativeUnitOptions {
  addressWidth?: number;
  superpage2M?: boolean;
  superpage1G?: boolean;
  nd?: number;
  psi?: boolean;
  mamv?: number;
  cachingMode?: boolean;
  esrtps?: boolean;
  coherent?: boolean;
  snoopControl?: boolean;
  passThrough?: boolean;
  deviceTlb?: boolean;
  queuedInvalidation?: boolean;
  interruptRemapping?: boolean;
  mhmv?: number;
  staleTm?: boolean;
  faultRecords?: number;
  iotlbEntries?: number;
  iotlbWays?: number;
  pscEntries?: number;
  contextCacheEntries?: number;
}
export interface NativeUnitStats {
  iotlbHits: number;
  iotlbMisses: number;
  walks: number;
  faults: number;
  pscHits: number;
  contextHits: number;
  contextMisses: number;
  faultsRecorded: number;
  faultsDropped: number;
  passthrough: number;
  contextInvalidations: number;
  iotlbInvalidations: number;
}
export interface NativeCacheOccupancy {
  iotlb: number;
  iotlbCapacity: number;
  psc: number;
  pscCapacity: number;
  context: number;
  contextCapacity: number;
}
export interface NativeMappedPages {
  pages: number;
  tables: BigUint64Array;
}
export interface NativeWalkStep {
  level: number;
  ptePa: bigint;
  pte: bigint;
}

export interface NativeMemory {
  readonly size: bigint;
  read(pa: bigint, n: number): Uint8Array;
  write(pa: bigint, bytes: Uint8Array): void;
  fill(pa: bigint, len: bigint, byte: number): void;
  readU64(pa: bigint): bigint;
  writeU64(pa: bigint, value: bigint): void;
  alloc(order: number, zero: boolean): bigint;
  claim(pa: bigint, len: bigint): void;
  free(pa: bigint, len: bigint): void;
  isAllocated(pa: bigint, len: bigint): boolean;
  preserve(pa: bigint, order: number): void;
  /** All or nothing: on a failure, the marks this call set are removed, then it throws. */
  preserveMany(pas: BigUint64Array, order: number): void;
  /** Every `[pa, pa+len)` allocated (true for an empty array). */
  isAllocatedMany(pas: BigUint64Array, len: bigint): boolean;
  unpreserve(pa: bigint, order: number): void;
  isPreserved(pa: bigint): boolean;
  preserved(): { pa: bigint; order: number }[];
  scrub(): NativeScrubReport;
  reseed(seed: bigint): void;
  stats(): NativeMemoryStats;
}
export interface NativeGather {
  range(): bigint[] | null;
  freelist(): BigUint64Array;
}
export interface NativePageTable {
  readonly pgd: bigint;
  readonly levels: number;
  readonly aw: number;
  map(iova: bigint, pa: bigint, size: bigint, read: boolean, write: boolean, snoop: boolean, gather: NativeGather): void;
  /** Runs as 4 KiB page numbers and counts; all or nothing. */
  mapRuns(
    iovaPfns: Float64Array,
    paPfns: Float64Array,
    npages: Float64Array,
    read: boolean,
    write: boolean,
    snoop: boolean,
    gather: NativeGather,
  ): void;
  /** Runs as `mapRuns` takes them; null if all translate exactly, else the first bad page's IOVA. */
  verifyRuns(iovaPfns: Float64Array, paPfns: Float64Array, npages: Float64Array, read: boolean, write: boolean): bigint | null;
  /** 4 KiB pages mapped by present leaves, every table page reached (top first); ERR_VTD_CORRUPT if unbounded. */
  mappedPages(maxTables: number): NativeMappedPages;
  unmap(iova: bigint, size: bigint, gather: NativeGather): bigint;
  iovaToPhys(iova: bigint): bigint | null;
  walk(iova: bigint): NativeWalkStep[];
  tablePages(): BigUint64Array;
  destroy(gather: NativeGather): void;
}
export interface NativeUnit {
  registers(): { cap: bigint; ecap: bigint; gsts: number; rtaddr: bigint };
  readRegister(offset: number, size: number): bigint;
  writeRegister(offset: number, size: number, value: bigint): void;
  setRootTable(pa: bigint): void;
  enableTranslation(on: boolean): void;
  translate(sid: number, iovas: BigUint64Array, out: BigUint64Array, write: boolean, faults?: Uint8Array | null): number;
  translateOne(sid: number, iova: bigint, write: boolean): bigint;
  readonly lastFault: number;
  /** Fills `buf`; returns 0 or the fault reason of the first faulting page. */
  dmaRead(sid: number, iova: bigint, buf: Uint8Array): number;
  /** Returns 0 or the fault reason of the first faulting page. */
  dmaWrite(sid: number, iova: bigint, buf: Uint8Array): number;
  readonly lastFaultIova: bigint;
  faults(): { sid: number; iova: bigint; reason: number; write: boolean }[];
  clearFaults(): number;
  stats(): NativeUnitStats;
  cacheOccupancy(): NativeCacheOccupancy;
  invalidateContext(granularity: string, did: number, sid: number, fm: number): void;
  invalidateIotlb(granularity: string, did: number, addr: bigint, am: number, ih: boolean): 'global' | 'domain' | 'page';
  iotlbSync(did: number, gather: NativeGather): 'global' | 'domain' | 'page';
  createPageTable(levels: number): NativePageTable;
  adoptPageTable(pgd: bigint, levels: number): NativePageTable;
}

export interface NativeFdtWriter {
  readonly size: number;
  addReservemapEntry(address: bigint, size: bigint): void;
  beginNode(name: string): void;
  endNode(): void;
  property(name: string, value: Uint8Array): void;
  propertyEmpty(name: string): void;
  propertyU32(name: string, v: number): void;
  propertyU64(name: string, v: bigint): void;
  propertyCells(name: string, cells: Uint32Array): void;
  propertyString(name: string, s: string): void;
  propertyStringList(name: string, list: string[]): void;
  propertyU32Le(name: string, v: number): void;
  propertyU64Le(name: string, v: bigint): void;
  propertyPlaceholder(name: string, len: number): number;
  fillPlaceholder(handle: number, data: Uint8Array): void;
  finish(): Uint8Array;
}
export interface NativeDecodedFdt {
  version: number;
  bootCpuidPhys: number;
  /** address, size pairs */
  reserve: BigUint64Array;
  /** pre-order: node = name start, name end, #props, #children; prop = name start, name end, value length */
  shape: Uint32Array;
  names: string;
  data: Uint8Array;
}

/** Hand-written typing of what crates/binding exports via #[napi]; keep in sync with lib.rs. */
export interface NativeBinding {
  nativeVersion(): string;
  /** The Node-API version the addon declared: 2147483647 (finalizers run from the GC) or 8. */
  nativeModuleApiVersion(): number;
  nativePanicForTest(): void;
  NativeMemory: new (size: bigint, seed: bigint) => NativeMemory;
  NativeUnit: new (mem: NativeMemory, options: NativeUnitOptions) => NativeUnit;
  NativeGather: new () => NativeGather;
  NativePageTable: abstract new () => NativePageTable;
  NativeFdtWriter: new (layout: string, maxSize: number | null | undefined, noNameDedup: boolean, bootCpuidPhys: number) => NativeFdtWriter;
  fdtEncode(ops: Uint8Array, layout: string, maxSize: number | null | undefined, noNameDedup: boolean, bootCpuidPhys: number): Uint8Array;
  fdtDecode(blob: Uint8Array, validate: string): NativeDecodedFdt;
  fdtCheck(blob: Uint8Array, validate: string): void;
  fdtToDts(blob: Uint8Array): string;
  fdtKhoRootMax(): number;
  fdtMaxDepth(): number;
  fdtKhoRoot(compatible: string, memoryMapProp: string, subtreeProp: string, memoryMap: bigint, names: string[], phys: bigint[], layout: string): Uint8Array;
  fdtKhoRootInfo(blob: Uint8Array, compatible: string, memoryMapProp: string, subtreeProp: string): { memoryMap: bigint; subtrees: { name: string; phys: bigint }[] };
}

const addonPath = process.env.IOMMU_LIVEUPDATE_NATIVE
  ? resolve(process.env.IOMMU_LIVEUPDATE_NATIVE)
  : fileURLToPath(new URL('../native/iommu_liveupdate.node', import.meta.url));

/**
 * Whether this Node lets a finalizer that runs inside the garbage collector call
 * `napi_delete_reference` (nodejs/node#55620), as napi-rs's class finalizers do: 20.18.3 and
 * later 20.x (verified on 20.20), 22.14 and later 22.x, 23.6 and later 23.x, 24 and later. On
 * those the addon runs its finalizers from the GC; elsewhere they wait for the event loop.
 */
export function gcFinalizersSafe(nodeVersion: string): boolean {
  const [major = 0, minor = 0, patch = 0] = nodeVersion.split('.').map((x) => Number.parseInt(x, 10));
  if (major === 20) return minor > 18 || (minor === 18 && patch >= 3);
  if (major === 22) return minor >= 14;
  if (major === 23) return minor >= 6;
  return major >= 24;
}

/**
 * `IOMMU_LIVEUPDATE_SYNC_FINALIZERS`, read by the addon when Node loads it: `1` makes it declare
 * the experimental Node-API version, under which finalizers run synchronously from the GC (see
 * crates/binding). A user's own `0` or `1` is kept; otherwise it is set from
 * {@link gcFinalizersSafe} and `..._AUTO` records for which Node version, so that worker threads
 * (which read the process environment) agree and a child process running another Node decides
 * afresh. It stays set: workers load the addon after this thread did.
 */
function chooseFinalizers(): void {
  const env = process.env;
  const key = 'IOMMU_LIVEUPDATE_SYNC_FINALIZERS', auto = `${key}_AUTO`;
  if (env[key] !== undefined && env[auto] === undefined) return; // the user's choice
  if (env[auto] === process.versions.node && env[key] !== undefined) return;
  env[key] = gcFinalizersSafe(process.versions.node) ? '1' : '0';
  env[auto] = process.versions.node;
}

function load(): NativeBinding {
  try {
    chooseFinalizers();
    // ESM cannot import .node files; createRequire gives us Node's native loader.
    return checkedBinding(createRequire(import.meta.url)(addonPath) as NativeBinding, NATIVE_SPECS);
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new Error(
      `iommu-liveupdate: cannot load native addon ${addonPath} (${reason}). Run \`npm run build\` to compile it (requires cargo).`,
      { cause },
    );
  }
}

export const native: NativeBinding = load();
