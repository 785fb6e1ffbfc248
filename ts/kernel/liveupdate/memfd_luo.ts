// memfd preservation (mm/memfd_luo.c, include/linux/kho/abi/memfd.h; Linux 7.3, "memfd-v2").
// PRESERVE_FD freezes the memfd's size (shmem_freeze), pins and preserves every folio (holes are
// allocated and zeroed), and writes `struct memfd_luo_ser` — pos, size, seals, the folio array
// `{pfn:52, flags:12; index}` in a preserved vmalloc area — into a preserved page whose address is
// the handler's serialized data. The next kernel builds a new memfd over the same pages.
import { errno } from '../../uapi/errno.js';
import { MFD_ALLOW_SEALING } from '../../uapi/mman.js';
import type { File } from '../file.js';
import type { LiveupdateFileHandler, LiveupdateFileOpArgs } from '../luo.js';
import { MemfdFile, memfdCreate, F_ALL_SEALS } from '../memfd.js';
import { HPAGE_PAGES, type MemObject } from '../mm.js';
import type { KernelServices } from '../services.js';
import { khoAllocPreserve, khoRestore, khoRestoreBlocks, khoRestoreFree, khoUnpreserveFree, PAGE, readVmalloc, writeVmalloc } from './abi.js';

/** `MEMFD_LUO_FH_COMPATIBLE`. */
export const MEMFD_LUO_FH_COMPATIBLE = 'memfd-v2';
/** `MEMFD_LUO_ALL_SEALS`: every seal 7.3 knows. */
const MEMFD_LUO_ALL_SEALS = F_ALL_SEALS;
const MEMFD_LUO_FOLIO_DIRTY = 1n;
const MEMFD_LUO_FOLIO_UPTODATE = 2n;
/** `struct memfd_luo_ser { u64 pos; u64 size; u32 seals; u32 flags; u64 nr_folios; struct kho_vmalloc folios; }`. */
const SER_SIZE = 48;
const FOLIO_SER = 16;

interface Preserved {
  folios: { pfn: number; order: number }[];
  vmalloc: bigint[];
}

/** The memfd handler, registered with LUO at boot (`memfd_luo_init`). */
export function memfdLuoHandler(svc: KernelServices): LiveupdateFileHandler {
  const mem = svc.memory;

  const readSer = (pa: bigint) => {
    khoRestore(mem, pa, SER_SIZE, 'memfd_luo_ser');
    const b = mem.read(pa, SER_SIZE);
    const v = new DataView(b.buffer);
    return { pos: v.getBigUint64(0, true), size: v.getBigUint64(8, true), seals: v.getUint32(16, true), nrFolios: v.getBigUint64(24, true), vmalloc: b.slice(32, 48) };
  };

  /**
   * The folio array of a preserved memfd (and the vmalloc pages holding it), as arrays: folio
   * `i` is 2^`order[i]` pages at `pas[i]` (PFN `pfn[i]`) for page `index[i]` onwards.
   */
  const readFolios = (ser: ReturnType<typeof readSer>) => {
    const n = Number(ser.nrFolios);
    const none = () => ({ index: new Float64Array(0), pfn: new Float64Array(0), order: new Uint8Array(0), pas: new BigUint64Array(0) });
    if (n === 0) return { folios: none(), pages: [] as bigint[] };
    const npages = Number((ser.size + 4095n) / 4096n);
    if (ser.nrFolios > BigInt(npages)) errno('EINVAL', `${ser.nrFolios} folios for ${npages} pages`);
    // The array's pages first: a corrupted count fails there, before anything is sized by it.
    const { bytes, pages } = readVmalloc(mem, ser.vmalloc, n * FOLIO_SER);
    const folios = { index: new Float64Array(n), pfn: new Float64Array(n), order: new Uint8Array(n), pas: new BigUint64Array(n) };
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    // Plain numbers, no bigint per folio: a PFN has 52 bits, an index past 2^53 is past EOF anyway.
    const indexOf = (i: number) => v.getUint32(i * FOLIO_SER + 8, true) + v.getUint32(i * FOLIO_SER + 12, true) * 2 ** 32;
    for (let i = 0; i < n; i++) {
      const index = indexOf(i);
      // A folio spans to the next one's index (preserve allocated every page), the last to EOF.
      const span = (i + 1 < n ? indexOf(i + 1) : npages) - index;
      const order = span === HPAGE_PAGES && index % HPAGE_PAGES === 0 ? 9 : span === 1 ? 0 : -1;
      // pfn:52, flags:12 — the PFN is the low 32 bits and 20 more.
      const pfn = v.getUint32(i * FOLIO_SER, true) + (v.getUint32(i * FOLIO_SER + 4, true) & 0xf_ffff) * 2 ** 32;
      if (order < 0 || index >= npages || pfn % 2 ** order !== 0) errno('EINVAL', `folio ${i} at index ${v.getBigUint64(i * FOLIO_SER + 8, true)} spans ${span} pages`);
      folios.index[i] = index;
      folios.pfn[i] = pfn;
      folios.order[i] = order;
      // Exact: a PA below 2^52 is a double.
      folios.pas[i] = BigInt(pfn * PAGE);
    }
    // Every folio still allocated: one allocator query per folio order, not one per folio.
    khoRestoreBlocks(mem, folios.pas, folios.order, (i) => `memfd folio ${i}`);
    return { folios, pages };
  };

  return {
    compatible: MEMFD_LUO_FH_COMPATIBLE,
    ops: {
      canPreserve: (_h, file: File) => file instanceof MemfdFile && !file.linked,
      getId: (file: File) => (file as MemfdFile).obj,

      preserve(args: LiveupdateFileOpArgs) {
        const file = args.file as MemfdFile;
        const obj: MemObject = file.obj;
        if (obj.seals & ~MEMFD_LUO_ALL_SEALS) errno('EOPNOTSUPP', 'seals this version does not know');
        const size = obj.isize ?? 0n;
        const serPa = khoAllocPreserve(mem, SER_SIZE);
        const done: Preserved = { folios: [], vmalloc: [] };
        try {
          const entries = new Uint8Array(size === 0n ? 0 : Number((size + 4095n) / 4096n) * FOLIO_SER);
          if (size > 0n) {
            // memfd_pin_folios: every index gets a folio, pinned; each is preserved, dirty, uptodate.
            for (const f of obj.folios(true)) {
              svc.pageRefs.pin(f.pfn, 1 << f.order);
              try {
                mem.preserve(BigInt(f.pfn) << 12n, f.order);
              } catch (e) {
                svc.pageRefs.unpin(f.pfn, 1 << f.order);
                throw e;
              }
              const v = new DataView(entries.buffer, done.folios.length * FOLIO_SER, FOLIO_SER);
              v.setBigUint64(0, BigInt(f.pfn) | ((MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE) << 52n), true);
              v.setBigUint64(8, BigInt(f.index), true);
              done.folios.push(f);
            }
          }
          const n = done.folios.length;
          const area = n ? writeVmalloc(mem, entries.subarray(0, n * FOLIO_SER)) : { desc: new Uint8Array(16), pages: [] };
          done.vmalloc = area.pages;
          const b = new Uint8Array(SER_SIZE);
          const v = new DataView(b.buffer);
          v.setBigUint64(0, file.pos, true);
          v.setBigUint64(8, size, true);
          v.setUint32(16, obj.seals, true);
          v.setBigUint64(24, BigInt(n), true);
          b.set(area.desc, 32);
          mem.write(serPa, b);
        } catch (e) {
          for (const f of done.folios) {
            mem.unpreserve(BigInt(f.pfn) << 12n, f.order);
            svc.pageRefs.unpin(f.pfn, 1 << f.order);
          }
          khoUnpreserveFree(mem, serPa, SER_SIZE);
          throw e;
        }
        obj.frozen = true;
        args.serializedData = serPa;
        args.privateData = done;
      },

      unpreserve(args: LiveupdateFileOpArgs) {
        const file = args.file as MemfdFile;
        const p = args.privateData as Preserved;
        file.obj.frozen = false;
        for (const pa of p.vmalloc) khoUnpreserveFree(mem, pa, PAGE);
        for (const f of p.folios) {
          mem.unpreserve(BigInt(f.pfn) << 12n, f.order);
          svc.pageRefs.unpin(f.pfn, 1 << f.order);
        }
        khoUnpreserveFree(mem, args.serializedData, SER_SIZE);
      },

      freeze(args: LiveupdateFileOpArgs) {
        // The position may have moved since PRESERVE_FD; nothing else can have.
        const v = new DataView(new ArrayBuffer(8));
        v.setBigUint64(0, (args.file as MemfdFile).pos, true);
        mem.write(args.serializedData, new Uint8Array(v.buffer));
        args.folios = (args.privateData as Preserved).folios.length;
      },

      retrieve(args: LiveupdateFileOpArgs) {
        const ser = readSer(args.serializedData);
        try {
          if (ser.seals & ~MEMFD_LUO_ALL_SEALS) errno('EOPNOTSUPP', 'seals this version does not know');
          // memfd_alloc_file("", MFD_ALLOW_SEALING), then the preserved seals.
          const file = memfdCreate(mem, svc.pageRefs, '', MFD_ALLOW_SEALING);
          try {
            file.addSeals(ser.seals);
            file.pos = ser.pos;
            file.obj.isize = ser.size;
            file.obj.npages = Number((ser.size + 4095n) / 4096n);
            const { folios, pages } = readFolios(ser);
            file.obj.adopt(folios.index, folios.pfn, folios.order);
            args.folios = folios.order.length;
            for (const p of pages) khoRestoreFree(mem, p, PAGE);
          } catch (e) {
            file.put();
            throw e;
          }
          args.file = file;
        } finally {
          khoRestoreFree(mem, args.serializedData, SER_SIZE);
        }
      },

      finish(args: LiveupdateFileOpArgs) {
        // Retrieved (or failed retrieving, which cleaned up): nothing left. Never retrieved: free it all.
        if (args.retrieveStatus !== 'none') return;
        const ser = readSer(args.serializedData);
        try {
          const { folios, pages } = readFolios(ser);
          folios.pas.forEach((pa, i) => mem.free(pa, folios.order[i]!));
          for (const p of pages) khoRestoreFree(mem, p, PAGE);
        } catch {
          /* what cannot be read stays allocated (leaked), as the kernel warns and goes on */
        }
        khoRestoreFree(mem, args.serializedData, SER_SIZE);
      },
    },
  };
}

/** `memfd_luo_init`: registers the handler; without LUO (EOPNOTSUPP) there is nothing to do. */
export function memfdLuoInit(svc: KernelServices): void {
  if (!svc.liveupdate.enabled) return;
  svc.liveupdate.registerFileHandler(memfdLuoHandler(svc));
}
