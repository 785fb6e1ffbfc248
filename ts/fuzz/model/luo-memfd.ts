// The VMM's memfds in the upstream flow's model (mm/memfd.c, mm/shmem.c; the errnos the real
// kernel gave in oracle/sequences/95-luo.seq): memfd_create with or without sealing, ftruncate
// (the seals, then LUO's freeze of a preserved memfd), F_ADD_SEALS / F_GET_SEALS, shared mappings
// and the VMM's loads and stores through them.
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MAP_FIXED,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  PROT_READ,
  PROT_WRITE,
} from '../../index.js';
import { PAGE } from '../intervals.js';
import type { Op } from '../ops.js';
import { newShmem, type MShmem } from './luo-files.js';
import { allPages, readPage, writePage } from './mm.js';
import { errs, hex, okAny, okv, pattern, type Alt, type ModelState, type Plan } from './state.js';

export const F_ALL_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;
/** Seal sets F_ADD_SEALS tries (0x40 is no seal: EINVAL). */
export const LUO_SEALS: readonly number[] = [F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE, F_SEAL_EXEC, F_SEAL_SHRINK | F_SEAL_GROW, 0, 0x40];
/** memfd sizes ftruncate tries, in pages (512: one 2 MiB folio). */
export const LUO_SIZES: readonly number[] = [0, 1, 2, 3, 4, 16, 17, 512, 513];
/** The VMM maps memfd windows here: window w at VA_LUO + w * WIN_STRIDE, WIN_PAGES long. */
export const VA_LUO = 0x7000_0000n;
export const WINDOWS = 3;
export const WIN_PAGES = 16;
const WIN_STRIDE = 64n * PAGE;
const MAX_MEMFDS = 4;
const sealName = (v: number) => `0x${v.toString(16)}`;

/** The VMM's memfds and its windows onto them. */
export class LuoMemfds {
  memfds: { fd: number; obj: MShmem }[] = [];
  wins: ({ obj: MShmem; write: boolean; counted: boolean } | null)[] = [];

  constructor(private readonly m: ModelState) {}

  /** An IOAS area maps `obj` (IOMMU_IOAS_MAP_FILE). */
  private inIoas(obj: MShmem): boolean {
    for (const p of allPages(this.m)) if (p.file === obj) return true;
    return false;
  }

  /** An IOAS with a domain pins some of its pages. */
  private pinnedByIoas(obj: MShmem): boolean {
    for (const p of allPages(this.m)) if (p.file === obj && p.res.size) return true;
    return false;
  }

  /** The VMM's fds and mappings are gone (exit, kexec). */
  gone(): void {
    for (const w of this.wins) if (w?.counted) w.obj.writableMaps--;
    this.memfds = [];
    this.wins = [];
  }

  *planCreate(seal: boolean): Generator<Plan, void, void> {
    if (this.memfds.length >= MAX_MEMFDS) return;
    const fd = this.m.peekFd();
    yield {
      what: `memfd_create luo${seal ? ' MFD_ALLOW_SEALING' : ''}`,
      run: (s) => s.p.memfd_create('luo', seal ? MFD_ALLOW_SEALING : 0),
      alts: [okv(fd, () => {
        this.m.allocFd();
        this.memfds.push({ fd, obj: newShmem(this.m, seal ? 0 : F_SEAL_SEAL) });
      })],
    };
  }

  at(pick: number) {
    return this.memfds.length ? this.memfds[pick % this.memfds.length]! : null;
  }

  *planMemfdClose(pick: number): Generator<Plan, void, void> {
    const mf = this.at(pick);
    if (!mf) return;
    yield { what: `close ${mf.fd} (memfd)`, run: (s) => s.p.close(mf.fd), alts: [okAny(() => { this.m.freeFd(mf.fd); this.memfds = this.memfds.filter((x) => x !== mf); })] };
  }

  /** ftruncate (whole pages): the seals, then LUO's freeze (shmem_setattr). */
  *planTruncate(pick: number, sizeIdx: number): Generator<Plan, void, void> {
    const mf = this.at(pick);
    if (!mf) return;
    const { obj } = mf;
    // An IOAS maps it: what a shrink does to pinned or mapped pages is not followed.
    if (this.inIoas(obj)) return;
    const np = LUO_SIZES[sizeIdx % LUO_SIZES.length]!;
    let alt: Alt;
    if ((np < obj.npages && obj.seals & F_SEAL_SHRINK) || (np > obj.npages && obj.seals & F_SEAL_GROW)) alt = errs(['EPERM']);
    else if (np !== obj.npages && obj.preservedIn) alt = errs(['EPERM']);
    else
      alt = okAny(() => {
        for (let pg = np; pg < obj.npages; pg++) this.m.mem.delete(obj.base + pg);
        obj.npages = np;
      });
    yield { what: `ftruncate ${mf.fd} ${np} pages`, run: (s) => s.p.ftruncate(mf.fd, BigInt(np) * PAGE), alts: [alt] };
  }

  /** F_ADD_SEALS in memfd_add_seals' order, then F_GET_SEALS. */
  *planSeal(pick: number, sealIdx: number): Generator<Plan, void, void> {
    const mf = this.at(pick);
    if (!mf) return;
    const { obj } = mf;
    let seals = LUO_SEALS[sealIdx % LUO_SEALS.length]!;
    let alt: Alt;
    if (seals & ~F_ALL_SEALS) alt = errs(['EINVAL']);
    else if (obj.seals & F_SEAL_SEAL) alt = errs(['EPERM']);
    else {
      // F_SEAL_EXEC on an executable memfd (every one made here) implies the write seals.
      if (seals & F_SEAL_EXEC) seals |= F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
      // mapping_deny_writable, then memfd_wait_for_pins (a preserved memfd's pages are pinned).
      if (seals & F_SEAL_WRITE && !(obj.seals & F_SEAL_WRITE) && (obj.writableMaps > 0 || (obj.preservedIn && obj.npages > 0) || this.pinnedByIoas(obj))) alt = errs(['EBUSY']);
      else alt = okv(0, () => (obj.seals |= seals));
    }
    const arg = LUO_SEALS[sealIdx % LUO_SEALS.length]!;
    yield { what: `fcntl ${mf.fd} F_ADD_SEALS ${sealName(arg)}`, run: (s) => s.p.fcntl(mf.fd, F_ADD_SEALS, arg), alts: [alt] };
    yield { what: `fcntl ${mf.fd} F_GET_SEALS`, run: (s) => s.p.fcntl(mf.fd, F_GET_SEALS), alts: [okv(obj.seals)] };
  }

  /** mmap MAP_SHARED|MAP_FIXED of WIN_PAGES at window `w` (replacing what was there). */
  *planMmap(pick: number, w: number, write: boolean): Generator<Plan, void, void> {
    const mf = this.at(pick);
    if (!mf) return;
    const { obj } = mf;
    const va = VA_LUO + BigInt(w % WINDOWS) * WIN_STRIDE;
    const writeSealed = (obj.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0;
    const alt =
      write && writeSealed
        ? errs(['EPERM'])
        : okv(va, () => {
            const old = this.wins[w % WINDOWS];
            if (old?.counted) old.obj.writableMaps--;
            // VM_SHARED | VM_MAYWRITE: counted unless write-sealed (memfd_check_seals_mmap clears VM_MAYWRITE).
            const counted = !writeSealed;
            if (counted) obj.writableMaps++;
            this.wins[w % WINDOWS] = { obj, write, counted };
          });
    const prot = PROT_READ | (write ? PROT_WRITE : 0);
    yield { what: `mmap memfd ${mf.fd} at ${hex(va)}${write ? ' RW' : ' R'}`, run: (s) => s.p.mmap(va, BigInt(WIN_PAGES) * PAGE, prot, MAP_SHARED | MAP_FIXED, mf.fd), alts: [alt] };
  }

  /** The VMM's load or store in a window: a page beyond the window or the file is EFAULT (SIGBUS). */
  *planAccess(op: Extract<Op, { k: 'mfdPoke' | 'mfdPeek' }>): Generator<Plan, void, void> {
    const w = op.w % WINDOWS;
    const win = this.wins[w] ?? null;
    const pg = op.pg % (WIN_PAGES + 4);
    const n = op.words * 8;
    const off = Math.min(op.off & ~7 & 0xfff, 4096 - n);
    const va = VA_LUO + BigInt(w) * WIN_STRIDE + BigInt(pg) * PAGE + BigInt(off);
    const reach = win !== null && pg < WIN_PAGES && pg < win.obj.npages;
    if (op.k === 'mfdPeek') {
      const got = reach ? readPage(this.m, win!.obj.base + pg, off, n) : null;
      yield { what: `memRead ${hex(va)} +${n}`, run: (s) => s.p.memRead(va, n), alts: [got ? okv(got) : errs(['EFAULT'])] };
      return;
    }
    const data = pattern(op.val, n);
    const ok = reach && win!.write;
    yield {
      what: `memWrite ${hex(va)} +${n}`,
      run: (s) => s.p.memWrite(va, data),
      alts: [ok ? okAny(() => {
        writePage(this.m, win!.obj.base + pg, off, data);
      }) : errs(['EFAULT'])],
    };
  }
}
