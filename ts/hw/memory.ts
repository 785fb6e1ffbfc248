import { invalidArgType } from '../errors.js';
import { native, type NativeMemory, type NativeMemoryStats, type NativeScrubReport } from '../native.js';
import { bool, given, int, obj, ORDER_MAX, u64 } from '../native-kinds.js';

/** Options of a simulated host memory. */
export interface PhysicalMemoryOptions {
  /** Size in bytes: a non-zero multiple of 4 KiB, at most 2^52 (`ERR_PHYSMEM_SIZE` otherwise). */
  size: bigint;
  /** Seed of the frame allocator (default 0): same seed, same frames. A bigint below 2^64 or a non-negative safe integer. */
  seed?: bigint | number;
}

const orderKind = int(0, ORDER_MAX);
const seedNumber = int(0, Number.MAX_SAFE_INTEGER);

/** A seed given as a bigint or a number, as a bigint. */
function seedArg(seed: unknown, name: string): bigint {
  if (typeof seed === 'number') return BigInt(seedNumber.check(seed, name));
  if (typeof seed !== 'bigint') throw invalidArgType(name, 'of type bigint or number', seed);
  return u64.check(seed, name);
}

/**
 * @internal `options` checked as the argument `name`, the size read from its field `sizeKey`
 * (`Host.boot` checks its `config.memory` with it, so errors name what its caller wrote).
 */
export function memoryConfig(options: unknown, name: string, sizeKey = 'size'): { size: bigint; seed: bigint } {
  const o = obj.check(options, name) as Record<string, unknown>;
  const seed = o.seed;
  return { size: u64.check(o[sizeKey], `${name}.${sizeKey}`), seed: seed === undefined ? 0n : seedArg(seed, `${name}.seed`) };
}

export type MemoryStats = NativeMemoryStats;
export type ScrubReport = NativeScrubReport;

/** 4 KiB. */
export const PAGE_SIZE = 4096n;
/** The byte scrubbed and freed memory reads as (Linux's POISON_FREE). */
export const POISON = 0x6b;

/**
 * Simulated host physical memory. Sparse: a 2^52-byte host costs nothing until written, and a
 * frame that is freed, scrubbed or filled whole gives its storage back (it reads as its fill:
 * poison, zero, ...). Frames come from a seeded allocator; preservation marks survive
 * {@link PhysicalMemory.scrub}, which models the next kernel taking over everything else.
 *
 * The native storage is released when the object is collected: with no JavaScript reference left
 * to a memory, its units and their page tables, the garbage collector frees it — from the
 * collection itself where Node allows it (`nativeFinalizers === 'gc'`), so even a loop that never
 * yields gets it back — and V8 is told what the storage costs, so it collects in time.
 * `stats().hostBytes` is that storage: resident frames and the residency bitmap's pages (0 when no
 * frame holds data); `metadataBytes` is the allocator's and fills' bookkeeping.
 */
export class PhysicalMemory {
  /** @internal the addon object, shared with units and page tables. */
  readonly native: NativeMemory;
  private _generation = 0;

  constructor(options: PhysicalMemoryOptions) {
    const { size, seed } = memoryConfig(options, 'options');
    this.native = new native.NativeMemory(size, seed);
  }

  /** Configured size in bytes. */
  get size(): bigint {
    return this.native.size;
  }

  /** Reads `n` bytes at `pa`; `n` is at most 1 GiB (`READ_MAX`). */
  read(pa: bigint, n: number): Uint8Array {
    return this.native.read(pa, n);
  }

  /** Writes `bytes` at `pa`. */
  write(pa: bigint, bytes: Uint8Array): void {
    this.native.write(pa, bytes);
  }

  /** Fills `len` bytes at `pa` with `byte` (zeroing untouched memory costs nothing). */
  fill(pa: bigint, len: bigint, byte: number): void {
    this.native.fill(pa, len, byte);
  }

  /** Reads the little-endian u64 at the 8-byte aligned `pa`. */
  readU64(pa: bigint): bigint {
    return this.native.readU64(pa);
  }

  /** Writes the little-endian u64 at the 8-byte aligned `pa`. */
  writeU64(pa: bigint, value: bigint): void {
    this.native.writeU64(pa, value);
  }

  /** Allocates 2^order naturally aligned frames (`__get_free_pages`); `zero` as `__GFP_ZERO`. */
  alloc(order = 0, options: { zero?: boolean } = {}): bigint {
    const o = obj.check(options, 'options') as { zero?: unknown };
    return this.native.alloc(order, given(bool, o.zero, 'options.zero', false));
  }

  /** Allocates exactly `[pa, pa+len)` (whole frames); fails if any of it is not free. */
  claim(pa: bigint, len: bigint): void {
    this.native.claim(pa, len);
  }

  /** Frees 2^order frames at `pa` (`free_pages`): they read as poison and hold no storage. */
  free(pa: bigint, order = 0): void {
    this.native.free(pa, PAGE_SIZE << BigInt(orderKind.check(order, 'order')));
  }

  /** Frees `[pa, pa+len)` (whole frames). */
  freeRange(pa: bigint, len: bigint): void {
    this.native.free(pa, len);
  }

  /** Whether all of `[pa, pa+len)` is allocated. */
  isAllocated(pa: bigint, len: bigint = PAGE_SIZE): boolean {
    return this.native.isAllocated(pa, len);
  }

  /** Marks the allocated block of 2^order frames at `pa` preserved across the next scrub. */
  preserve(pa: bigint, order = 0): void {
    this.native.preserve(pa, order);
  }

  /**
   * {@link preserve} for the block of 2^order frames at each of `pas`, in one call (KHO marking
   * thousands of scattered table pages). All or nothing: if a block fails (not allocated,
   * misaligned, already marked — a duplicate in `pas` included), the marks this call set are
   * removed and that block's error is thrown (`ERR_PHYSMEM_*`), so the marks are as before.
   */
  preserveMany(pas: BigUint64Array, order = 0): void {
    this.native.preserveMany(pas, order);
  }

  /** Whether every range `[pa, pa+len)` for `pa` in `pas` is allocated; true for an empty array. */
  isAllocatedMany(pas: BigUint64Array, len: bigint = PAGE_SIZE): boolean {
    return this.native.isAllocatedMany(pas, len);
  }

  /** Removes the mark set with the same `pa` and `order`. */
  unpreserve(pa: bigint, order = 0): void {
    this.native.unpreserve(pa, order);
  }

  /** Whether a preservation mark covers `pa`. */
  isPreserved(pa: bigint): boolean {
    return this.native.isPreserved(pa);
  }

  /** Every preservation mark, by address. */
  preserved(): { pa: bigint; order: number }[] {
    return this.native.preserved();
  }

  /** How many preservation marks there are and the 4 KiB frames they cover, in one call. */
  preservedSummary(): { blocks: number; frames: number } {
    return this.native.preservedSummary();
  }

  /**
   * The next kernel takes over: frames outside preserved blocks read as poison and are free;
   * preserved blocks keep their bytes and stay allocated. The marks are consumed.
   */
  scrub(): ScrubReport {
    this._generation++;
    return this.native.scrub();
  }

  /** How many times a next kernel took this memory over ({@link scrub}): the kernel generation it serves. */
  get generation(): number {
    return this._generation;
  }

  /** Re-seeds the frame allocator. */
  reseed(seed: bigint | number): void {
    this.native.reseed(seedArg(seed, 'seed'));
  }

  /** Usage statistics. */
  stats(): MemoryStats {
    return this.native.stats();
  }
}
