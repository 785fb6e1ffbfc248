// The bytes LUO hands over (include/linux/kho/abi/luo.h and block.h, Linux 7.3), and the KHO
// memory calls it makes (kho_alloc_preserve, kho_unpreserve_free, kho_restore_free,
// kho_preserve_vmalloc). Everything here lives in preserved pages: nothing of a session or a file
// crosses the kexec any other way. The next kernel trusts none of it unchecked: every address must
// be a page of memory that is still allocated (preserved pages are, after the jump), every count
// within its block, every chain bounded.
import type { PhysicalMemory } from '../../hw/memory.js';
import { errno } from '../../uapi/errno.js';
import { checkIncoming, khoAllocPreserve, khoUnpreserveFree, PAGE } from '../kho/preserve.js';

// The KHO memory calls live with KHO (the iommu core uses them too); LUO's modules take them here.
export { checkIncoming, checkIncomingBlocks, khoAllocPreserve, khoRestore, khoRestoreBlocks, khoRestoreFree, khoUnpreserveFree, PAGE } from '../kho/preserve.js';
/** `LUO_KHO_ENTRY_NAME`: the KHO subtree. */
export const LUO_KHO_ENTRY_NAME = 'LUO';
/** `LUO_ABI_COMPATIBLE` (Linux 7.3). */
export const LUO_ABI_COMPATIBLE = 'luo-v5';
/** `struct luo_ser { char compatible[8]; u64 liveupdate_num; u64 sessions_pa; u64 flbs_pa; }`. */
export const LUO_SER_SIZE = 32;
/** `LIVEUPDATE_HNDL_COMPAT_LENGTH` = `LIVEUPDATE_FLB_COMPAT_LENGTH`. */
export const COMPAT_LEN = 48;
/** `struct luo_session_ser { char name[64]; struct luo_file_set_ser { u64 files; u64 count; } }`. */
export const LUO_SESSION_SER_SIZE = 80;
/** `struct luo_file_ser { char compatible[48]; u64 data; u64 token; }`. */
export const LUO_FILE_SER_SIZE = 64;
/** `struct luo_flb_ser { char name[48]; u64 data; u64 count; }` after `luo_flb_header_ser { u64 pgcnt; u64 count; }`. */
export const LUO_FLB_SER_SIZE = 64;
/** `struct kho_block_header_ser { u64 next; u64 count; }`; a block is one page. */
const BLOCK_HEADER = 16;
/** `KHO_MAX_BLOCKS`: a longer chain is corrupt (or cyclic). */
const KHO_MAX_BLOCKS = 10000;
/** `KHO_VMALLOC_ALLOC`: the flag of a vcalloc'ed area. */
const KHO_VMALLOC_ALLOC = 1;
/** `KHO_VMALLOC_SIZE`: physical addresses per `kho_vmalloc_chunk` page. */
const KHO_VMALLOC_SIZE = (PAGE - 8) / 8;

/** A NUL-terminated string in a fixed field (`strscpy`); EINVAL without a NUL. */
export function cstr(b: Uint8Array, what: string): string {
  const n = b.indexOf(0);
  if (n < 0) errno('EINVAL', `${what}: no terminating NUL`);
  return new TextDecoder().decode(b.subarray(0, n));
}

/** Writes `s` NUL-padded into a field of `len` bytes at `off`. */
export function putCstr(b: Uint8Array, off: number, len: number, s: string): void {
  const e = new TextEncoder().encode(s);
  if (e.length >= len) throw new Error(`${s} does not fit ${len} bytes`);
  b.set(e, off);
}

/**
 * A `kho_block_set` written whole: the entries in preserved pages, `count_per_block` a page, each
 * page headed by `{next, count}`. Returns the head's address (0 for no entries) and the pages.
 */
export function writeBlockSet(mem: PhysicalMemory, entrySize: number, entries: readonly Uint8Array[]): { head: bigint; pages: bigint[] } {
  const per = Math.floor((PAGE - BLOCK_HEADER) / entrySize);
  const pages: bigint[] = [];
  try {
    for (let i = 0; i < entries.length; i += per) pages.push(khoAllocPreserve(mem, PAGE));
  } catch (e) {
    for (const p of pages) khoUnpreserveFree(mem, p, PAGE);
    throw e;
  }
  pages.forEach((pa, k) => {
    const chunk = entries.slice(k * per, (k + 1) * per);
    const b = new Uint8Array(PAGE);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, pages[k + 1] ?? 0n, true);
    v.setBigUint64(8, BigInt(chunk.length), true);
    chunk.forEach((e, i) => b.set(e, BLOCK_HEADER + i * entrySize));
    mem.write(pa, b);
  });
  return { head: pages[0] ?? 0n, pages };
}

/** `kho_block_set_restore` + reading every entry: EINVAL for a bad count, address or chain. */
export function readBlockSet(mem: PhysicalMemory, head: bigint, entrySize: number, what: string): { entries: Uint8Array[]; pages: bigint[] } {
  const per = Math.floor((PAGE - BLOCK_HEADER) / entrySize);
  const entries: Uint8Array[] = [];
  const pages: bigint[] = [];
  for (let pa = head; pa !== 0n; ) {
    if (pages.length >= KHO_MAX_BLOCKS || pages.includes(pa)) errno('EINVAL', `${what}: the block chain is corrupted`);
    checkIncoming(mem, pa, PAGE, `${what} block`);
    const b = mem.read(pa, PAGE);
    const v = new DataView(b.buffer);
    const count = v.getBigUint64(8, true);
    if (count === 0n || count > BigInt(per)) errno('EINVAL', `${what}: a block holds ${count} entries`);
    for (let i = 0; i < Number(count); i++) entries.push(b.slice(BLOCK_HEADER + i * entrySize, BLOCK_HEADER + (i + 1) * entrySize));
    pages.push(pa);
    pa = v.getBigUint64(0, true);
  }
  return { entries, pages };
}

/** `struct kho_vmalloc { u64 first; u32 total_pages; u16 flags; u16 order; }` of `bytes` (`kho_preserve_vmalloc`). */
export function writeVmalloc(mem: PhysicalMemory, bytes: Uint8Array): { desc: Uint8Array; pages: bigint[] } {
  const n = Math.ceil(bytes.length / PAGE);
  const data: bigint[] = [];
  const chunks: bigint[] = [];
  try {
    for (let i = 0; i < n; i++) data.push(khoAllocPreserve(mem, PAGE));
    for (let i = 0; i < n; i += KHO_VMALLOC_SIZE) chunks.push(khoAllocPreserve(mem, PAGE));
  } catch (e) {
    for (const p of [...data, ...chunks]) khoUnpreserveFree(mem, p, PAGE);
    throw e;
  }
  data.forEach((pa, i) => mem.write(pa, bytes.subarray(i * PAGE, (i + 1) * PAGE)));
  chunks.forEach((pa, k) => {
    const b = new Uint8Array(PAGE);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, chunks[k + 1] ?? 0n, true);
    data.slice(k * KHO_VMALLOC_SIZE, (k + 1) * KHO_VMALLOC_SIZE).forEach((p, i) => v.setBigUint64(8 + 8 * i, p, true));
    mem.write(pa, b);
  });
  const desc = new Uint8Array(16);
  const dv = new DataView(desc.buffer);
  dv.setBigUint64(0, chunks[0] ?? 0n, true);
  dv.setUint32(8, n, true);
  dv.setUint16(12, KHO_VMALLOC_ALLOC, true);
  dv.setUint16(14, 0, true);
  return { desc, pages: [...data, ...chunks] };
}

/** `kho_restore_vmalloc`: the bytes of a preserved area (`len` of them) and its pages. */
export function readVmalloc(mem: PhysicalMemory, desc: Uint8Array, len: number): { bytes: Uint8Array; pages: bigint[] } {
  const dv = new DataView(desc.buffer, desc.byteOffset, 16);
  const total = dv.getUint32(8, true);
  if (dv.getUint16(14, true) !== 0 || total !== Math.ceil(len / PAGE)) errno('EINVAL', `kho_vmalloc: ${total} pages of order ${dv.getUint16(14, true)} for ${len} bytes`);
  const out = new Uint8Array(total * PAGE);
  const pages: bigint[] = [];
  let got = 0;
  for (let c = dv.getBigUint64(0, true); got < total; ) {
    if (pages.length > total + Math.ceil(total / KHO_VMALLOC_SIZE)) errno('EINVAL', 'kho_vmalloc: the chunk chain is corrupted');
    checkIncoming(mem, c, PAGE, 'kho_vmalloc chunk');
    const v = new DataView(mem.read(c, PAGE).buffer);
    pages.push(c);
    for (let i = 0; i < KHO_VMALLOC_SIZE && got < total; i++, got++) {
      const p = v.getBigUint64(8 + 8 * i, true);
      checkIncoming(mem, p, PAGE, 'kho_vmalloc page');
      out.set(mem.read(p, PAGE), got * PAGE);
      pages.push(p);
    }
    c = v.getBigUint64(0, true);
  }
  return { bytes: out.subarray(0, len), pages };
}
