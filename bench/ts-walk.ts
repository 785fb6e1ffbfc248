// The second-level page walk written in plain TypeScript, the way a Node user would: snapshot the
// table pages once into DataViews keyed by frame number, then walk them with BigInt arithmetic.
// No caches, like the native `walk_4level` scenario (IOTLB and PSC disabled).

const PAGE_SHIFT = 12n;
const R = 1n << 0n;
const W = 1n << 1n;
const PS = 1n << 7n;
/** ADDR field of a second-level entry: bits 51:12. */
const ADDR_MASK = 0x000f_ffff_ffff_f000n;

/** What the walk needs of the simulator: the raw bytes of memory and the table's pages. */
export interface Memory {
  read(pa: bigint, n: number): Uint8Array;
}
export interface Tables {
  tablePages(): BigUint64Array;
}

/** Copies every table page of `pt` out of `mem`: frame number -> DataView of its 4 KiB. */
export function snapshotTables(mem: Memory, pt: Tables): Map<number, DataView> {
  const tables = new Map<number, DataView>();
  for (const pa of pt.tablePages()) {
    const bytes = mem.read(pa, 4096);
    tables.set(Number(pa >> PAGE_SHIFT), new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  return tables;
}

/** The PA a read of `iova` reaches through the `levels`-level table at `pgd`, or null on a fault. */
export function walk(tables: Map<number, DataView>, pgd: bigint, levels: number, iova: bigint): bigint | null {
  let table = tables.get(Number(pgd >> PAGE_SHIFT));
  for (let level = levels; level >= 1; level--) {
    if (table === undefined) return null;
    const shift = PAGE_SHIFT + 9n * BigInt(level - 1);
    const index = Number((iova >> shift) & 0x1ffn);
    const pte = table.getBigUint64(index * 8, true);
    if ((pte & (R | W)) === 0n) return null; // not present
    if (level === 1 || (pte & PS) !== 0n) {
      if ((pte & R) === 0n) return null; // present but not readable
      const offsetMask = (1n << shift) - 1n;
      return ((pte & ADDR_MASK) & ~offsetMask) | (iova & offsetMask);
    }
    table = tables.get(Number((pte & ADDR_MASK) >> PAGE_SHIFT));
  }
  return null;
}

/** Translates every IOVA of `iovas` into `out` (faults as `faulted`); returns how many faulted. */
export function translateAll(
  tables: Map<number, DataView>,
  pgd: bigint,
  levels: number,
  iovas: BigUint64Array,
  out: BigUint64Array,
  faulted: bigint,
): number {
  let faults = 0;
  for (let i = 0; i < iovas.length; i++) {
    const pa = walk(tables, pgd, levels, iovas[i]!);
    if (pa === null) {
      out[i] = faulted;
      faults++;
    } else {
      out[i] = pa;
    }
  }
  return faults;
}
