// Devices (VFIO cdev + iommufd device.c): bind, attach / replace, detach, unbind, what each
// device's DMA translates through, and the DMA the model expects page by page (VT-d: a PTE is
// present iff R or W; 0x6 read of a non-readable page, 0x5 write, 0x4 beyond MGAW, 0x1/0x2 no
// context entry).
import { O_RDWR, VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT } from '../../index.js';
import { minB, overlaps, PAGE, ULONG_MAX } from '../intervals.js';
import type { Op } from '../ops.js';
import { reapInodes } from './guestmemfs.js';
import { domainFreed, maybeDestroyCtx, releaseExcluded } from './iommufd.js';
import { pagesNo, pageSpan, pinError, readPage, syncPins, writePage } from './mm.js';
import {
  APERTURE_LAST,
  errs,
  hex,
  MSI,
  okAny,
  okv,
  pattern,
  type Alt,
  type MDevice,
  type MDevObj,
  type MHwpt,
  type ModelState,
  type Plan,
  type Sys,
} from './state.js';

/** IOVAs a DMA may name outright: low memory, the MSI window, the aperture's end, beyond MGAW. */
const ABS_DMA = [0n, 0x1000n, 0x20_0000n, 0x1_0000_0000n, MSI.start, APERTURE_LAST + 1n - 8n, APERTURE_LAST + 1n, 1n << 52n];

/** Expected outcome of a DMA of `n` bytes at `iova` (fault or bytes), page by page as the engine does. */
export function dmaExpect(m: ModelState, d: MDevice, iova: bigint, n: number, write: boolean, data?: Uint8Array): Alt {
  const x = d.xlate;
  if (x.k === 'unknown') return { any: true };
  if (x.k === 'busoff') return { fault: { reasons: [0], iova, write } };
  if (x.k === 'blocked') return { fault: { reasons: [1, 2], iova, write } };
  // Handed over, then refused by the next kernel: blocked, with or without bus mastering.
  if (x.k === 'rejected') return { fault: { reasons: [0, 1, 2], iova, write } };
  const io = x.h.ioas;
  const pieces: { id: number; off: number; n: number; at: number }[] = [];
  let cur = iova;
  let done = 0;
  while (done < n) {
    const pageEnd = (cur | 0xfffn) + 1n;
    const k = Number(minB(pageEnd - cur, BigInt(n - done)));
    let reason = 0;
    let id = -1;
    if (cur > APERTURE_LAST) reason = 0x4;
    else {
      const a = io.areas.find((ar) => ar.start <= cur && cur <= ar.last);
      if (!a || (write ? !a.w : !a.r)) reason = write ? 0x5 : 0x6;
      else {
        const pb = a.off + (cur - a.start);
        const pg = pagesNo(a.pages, pb);
        const got = a.pages.res.get(pg);
        if (got === undefined) throw new Error(`model: DMA through an unpinned page ${pg} of iopt_pages ${a.pages.id}`);
        id = got;
      }
    }
    if (reason) {
      const faultAt = cur;
      const before = pieces.slice();
      return {
        fault: { reasons: [reason], iova: faultAt, write },
        then: () => {
          if (write && data) for (const p of before) writePage(m, p.id, p.off, data.subarray(p.at, p.at + p.n));
        },
      };
    }
    pieces.push({ id, off: Number(cur & 0xfffn), n: k, at: done });
    done += k;
    cur += BigInt(k);
  }
  if (write) return okAny(() => { for (const p of pieces) writePage(m, p.id, p.off, data!.subarray(p.at, p.at + p.n)); });
  const want = new Uint8Array(n);
  for (const p of pieces) want.set(readPage(m, p.id, p.off, p.n), p.at);
  return okv(want);
}

/** A device whose translation the references leave open: remember what it might still use. */
export function unspecified(m: ModelState, d: MDevice): void {
  if (d.xlate.k === 'hwpt') d.maybe = { h: d.xlate.h, ctx: d.xlate.ctx };
  d.xlate = { k: 'unknown' };
}

/**
 * Resolves devices in an unspecified state by asking the IOMMU itself (a translation request,
 * independent of bus mastering): no context entry (0x1/0x2) means blocked; a translation or a
 * page-walk fault means it still goes through the domain it might still use.
 */
export function* planProbes(m: ModelState): Generator<Plan, void, void> {
  for (const d of m.devices) {
    if (d.xlate.k !== 'unknown') continue;
    const bdf = d.bdf;
    yield {
      what: `IOMMU verdict for ${bdf} (resolving an unspecified state)`,
      run: (s) => {
        const out = new BigUint64Array(1);
        const faults = new Uint8Array(1);
        s.host.device(bdf).dma.translate(new BigUint64Array([0x1000n]), out, { write: false, faults });
        return faults[0];
      },
      alts: [{ any: true, then: (o) => {
        const reason = o.t === 'ok' ? (o.v as number) : -1;
        const still = d.maybe && !d.maybe.ctx.dead && d.maybe.ctx.objs.get(d.maybe.h.id) === d.maybe.h ? d.maybe : null;
        if (reason === 1 || reason === 2) d.xlate = { k: 'blocked' };
        else if (still) d.xlate = { k: 'hwpt', h: still.h, ctx: still.ctx };
        d.maybe = null;
        if (d.xlate.k === 'blocked' || d.xlate.k === 'hwpt') return;
        d.xlate = { k: 'unknown' };
      } }],
    };
  }
}

export function* planOpenDev(m: ModelState, i: number): Generator<Plan, void, void> {
  const d = m.devices[i]!;
  if (d.fd !== null) return;
  const fd = m.peekFd();
  const held = m.luoOpenErr(i);
  yield {
    what: `open /dev/vfio/devices/vfio${i}`,
    run: (s) => s.p.open(`/dev/vfio/devices/vfio${i}`, O_RDWR),
    tag: held ? 'open vfio (preserved)' : undefined,
    alts: [held ? errs([held]) : okv(fd, () => {
      m.allocFd();
      d.fd = fd;
    })],
  };
}

export function* planBind(m: ModelState, i: number, c: number): Generator<Plan, void, void> {
  const d = m.devices[i];
  const ctx = m.ctxOfSlot(c);
  if (!d || !ctx) return;
  yield* planOpenDev(m, i);
  if (d.fd === null) return;
  const what = `VFIO_DEVICE_BIND_IOMMUFD vfio${i} iommufd ${ctx.fd}`;
  const run = (s: Sys) => s.p.ioctl(d.fd!, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: ctx.fd! }).out_devid;
  if (d.bound) {
    yield { what, run, alts: [errs(['EINVAL'])] };
    return;
  }
  const claimed = m.luoBindErr(i, ctx);
  if (claimed) {
    yield { what, run, alts: [errs([claimed])], tag: 'VFIO_DEVICE_BIND (owned by a restored iommufd)' };
    return;
  }
  const id = ctx.lowestFreeId();
  yield {
    what,
    run,
    alts: [okv(id, () => {
      const obj: MDevObj = { t: 'dev', id, dev: i };
      ctx.objs.set(id, obj);
      d.bound = { ctx, obj };
      // VFIO bind sets bus mastering again. A device translating through a restored domain keeps
      // it (the special domain stays attached until the VMM attaches: persistence-rfc.md §1.10).
      if (d.xlate.k === 'busoff' || d.xlate.k === 'rejected') d.xlate = d.staleRestore ? { k: 'unknown' } : { k: 'blocked' };
    })],
  };
  yield* planProbes(m);
}

/** Removes device `i` from the HWPT it is attached to (automatic HWPTs go with their last device). */
export function detachEffects(m: ModelState, i: number): void {
  const d = m.devices[i]!;
  if (d.xlate.k === 'hwpt' && d.attached) {
    const { h, ctx } = d.xlate;
    h.devs.delete(i);
    // Automatic (and restored) HWPTs are destroyed with their last device, unless another device
    // still translates through the restored domain (it holds a reference); LUO's are user HWPTs.
    const others = m.devices.some((o, j) => j !== i && o.xlate.k === 'hwpt' && o.xlate.h === h);
    if (h.devs.size === 0 && !others && !h.manual && !m.luoHoldsHwpt(h)) {
      ctx.objs.delete(h.id);
      domainFreed(m, h);
    }
  }
  d.attached = false;
  d.xlate = { k: 'blocked' };
}

export function* planAttach(m: ModelState, i: number, mode: number, pick: number): Generator<Plan, void, void> {
  const d = m.devices[i];
  if (!d || d.fd === null) return;
  const what0 = `VFIO_DEVICE_ATTACH_IOMMUFD_PT vfio${i}`;
  if (!d.bound) {
    yield { what: what0, run: (s) => s.p.ioctl(d.fd!, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 }).pt_id, alts: [errs(['EINVAL'])] };
    return;
  }
  const ctx = d.bound.ctx;
  let id: number;
  if (mode === 0) id = m.ioasIdFor(ctx, pick);
  else if (mode === 1) {
    const hs = ctx.hwpts();
    id = hs.length ? hs[pick % hs.length]!.id : pick;
  } else id = pick;
  yield* planAttachTo(m, i, id);
}

export function* planAttachTo(m: ModelState, i: number, id: number, want?: number): Generator<Plan, void, void> {
  const d = m.devices[i]!;
  if (m.luoPinned(d)) return;
  const ctx = d.bound!.ctx;
  const o = ctx.objs.get(id);
  const alts = ((): Alt[] => {
    if (!o) return [errs(['ENOENT'])];
    if (o.t === 'dev') return [errs(['EINVAL'])];
    let target: MHwpt | null = o.t === 'hwpt' ? o : null;
    const io = o.t === 'hwpt' ? o.ioas : o;
    if (!target) target = ctx.hwpts().find((h) => h.ioas === io && !h.manual) ?? null; // the IOAS's automatic HWPT
    const cur = d.xlate.k === 'hwpt' && d.attached ? d.xlate.h : null;
    if (target && cur === target) return [okv(target.id)];
    // Reservations the attach makes in the IOAS (device.c, io_pagetable.c; reference §4.6).
    const errsSet: string[] = [];
    const sameIoas = cur && cur.ioas === io;
    if (!sameIoas && (io.areas.some((a) => overlaps(a, MSI.start, MSI.last)) || io.allowed.some((a) => overlaps(a, MSI.start, MSI.last)))) errsSet.push('EADDRINUSE');
    if (!target) {
      // A new domain: the aperture's outside reserved, alignment raised to 4 KiB, every area pinned.
      const ap = { start: APERTURE_LAST + 1n, last: ULONG_MAX };
      if (io.areas.some((a) => overlaps(a, ap.start, ap.last)) || io.allowed.some((a) => overlaps(a, ap.start, ap.last))) errsSet.push('EADDRINUSE');
      if (io.areas.some((a) => a.start % PAGE || (a.last + 1n) % PAGE || (a.pages.base + a.off) % PAGE)) errsSet.push('EADDRINUSE');
      for (const a of io.areas) {
        const [f, l] = pageSpan(a.pages, a.off, a.last - a.start + 1n);
        const e = pinError(m, a.pages, f, l);
        if (e) errsSet.push(...e);
      }
    }
    if (errsSet.length) return [errs(errsSet)];
    const newId = target ? target.id : ctx.lowestFreeId();
    if (want !== undefined && newId !== want) throw new Error(`model: re-attach expected HWPT ${want}, computed ${newId}`);
    return [okv(newId, () => {
      let h = target;
      if (!h) {
        h = { t: 'hwpt', id: newId, ioas: io, devs: new Set(), restored: false };
        ctx.objs.set(newId, h);
      }
      if (d.attached) detachEffects(m, i);
      m.ctxBuses.add(busOf(d.bdf));
      h.devs.add(i);
      d.attached = true;
      d.xlate = { k: 'hwpt', h, ctx };
      d.staleRestore = false;
      syncPins(m);
      reapInodes(m);
    })];
  })();
  // A device still translating through a frozen (serialised) restored domain: refusing keeps the
  // blob true; moving it is the other reading (the blob then lists a device that left).
  const frozenXlate = !d.attached && d.xlate.k === 'hwpt' && m.frozen(d.xlate.ctx);
  let final = m.frozen(ctx) ? [errs(['EBUSY', ...alts.flatMap((x) => x.err ?? [])])] : frozenXlate ? [errs(['EBUSY']), ...alts] : alts;
  // A first attach that fails after moving the device (iommufd_hwpt_paging_alloc attaches, then
  // adds the domain to the IOAS, and detaches to blocked on failure) may leave a device that was
  // still on a restored domain blocked; or the attach fails before touching it.
  if (!d.attached && d.xlate.k === 'hwpt') final = final.map((a) => (a.err && !a.then ? { ...a, then: () => unspecified(m, d) } : a));
  yield {
    what: `VFIO_DEVICE_ATTACH_IOMMUFD_PT vfio${i} pt_id ${id}`,
    run: (s) => s.p.ioctl(d.fd!, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: id }).pt_id,
    alts: final,
    tag: !d.attached && d.xlate.k === 'hwpt' && d.xlate.h.manual ? 'ATTACH (restored by LUO)' : undefined,
  };
  yield* planProbes(m);
}

export function* planDetach(m: ModelState, i: number): Generator<Plan, void, void> {
  const d = m.devices[i];
  if (!d || d.fd === null || m.luoPinned(d)) return;
  const what = `VFIO_DEVICE_DETACH_IOMMUFD_PT vfio${i}`;
  const run = (s: Sys) => s.p.ioctl(d.fd!, VFIO_DEVICE_DETACH_IOMMUFD_PT, {}) && 0;
  if (!d.bound) {
    yield { what, run, alts: [errs(['EINVAL'])] };
    return;
  }
  const ctx = d.bound.ctx;
  let alts: Alt[];
  if (d.attached) {
    alts = [okAny(() => {
      detachEffects(m, i);
      syncPins(m);
      reapInodes(m);
    })];
  } else if (d.xlate.k === 'hwpt') {
    // Translating through a restored domain without an attach in this kernel: vfio's detach is
    // a no-op (vfio_iommufd_physical_detach_ioas) or blocks the device; not specified.
    alts = [okAny(() => unspecified(m, d))];
  } else alts = [okAny()];
  const frozen = m.frozen(ctx) || (d.xlate.k === 'hwpt' && m.frozen(d.xlate.ctx));
  yield { what, run, alts: frozen ? [errs(['EBUSY']), ...(d.attached ? [] : alts)] : alts };
  yield* planProbes(m);
}

export function* planUnbind(m: ModelState, i: number): Generator<Plan, void, void> {
  const d = m.devices[i];
  if (!d || d.fd === null) return;
  if (d.bound && releaseExcluded(d.bound.ctx)) return;
  // Preserved by LUO: closing the fd would leave the device bound under LUO's reference (not modelled).
  if (m.luoHolds(d) || m.luoPinned(d)) return;
  const fd = d.fd;
  yield {
    what: `close vfio${i} (unbind)`,
    run: (s) => s.p.close(fd),
    alts: [okAny(() => unbindEffects(m, i))],
  };
  yield* planProbes(m);
}

export function unbindEffects(m: ModelState, i: number): void {
  const d = m.devices[i]!;
  m.freeFd(d.fd!);
  d.fd = null;
  const b = d.bound;
  if (!b) return;
  // iommufd_device_unbind releases DMA ownership: the device leaves any domain, restored or not.
  if (d.attached || d.xlate.k === 'hwpt') detachEffects(m, i);
  b.ctx.objs.delete(b.obj.id);
  d.bound = null;
  syncPins(m);
  maybeDestroyCtx(m, b.ctx);
  reapInodes(m);
}

export function dmaIova(m: ModelState, d: MDevice, where: number, idx: number, off: number, n: number): bigint {
  const di = m.devIoas(d);
  let areas = di?.io.areas ?? [];
  if (!areas.length) areas = m.liveCtxs().flatMap((c) => c.ioases().flatMap((x) => x.areas));
  if (where === 1 || !areas.length) return ABS_DMA[idx % ABS_DMA.length]!;
  const a = areas[idx % areas.length]!;
  const len = a.last - a.start + 1n;
  const lim = (v: bigint) => (v > ULONG_MAX - 0xfffn ? ULONG_MAX - 0xfffn : v);
  if (where === 2) return lim(a.last + 1n + BigInt(off % 3) * PAGE);
  if (where === 3) return lim((a.last + 1n - BigInt(8 * Math.min(n, 2))) & ~7n);
  return lim(a.start + ((BigInt(off) % len) & ~7n));
}

export function* planDma(m: ModelState, op: Extract<Op, { k: 'dmaRead' | 'dmaWrite' }>): Generator<Plan, void, void> {
  const d = m.devices[op.d];
  if (!d) return;
  const n = op.words * 8;
  const iova = dmaIova(m, d, op.where, op.idx, op.off, op.words);
  const bdf = d.bdf;
  if (op.k === 'dmaRead') {
    yield { what: `DMA read ${bdf} ${hex(iova)} +${n}`, run: (s) => s.host.device(bdf).dma.read(iova, n), alts: [dmaExpect(m, d, iova, n, false)], tag: d.xlate.k === 'hwpt' && d.xlate.h.manual ? 'DMA read (LUO domain)' : undefined };
    return;
  }
  // A device in an unspecified state writes nowhere the model could follow: no writes then.
  if (d.xlate.k === 'unknown') return;
  const data = pattern(op.val, n);
  yield { what: `DMA write ${bdf} ${hex(iova)} +${n}`, run: (s) => s.host.device(bdf).dma.write(iova, data), alts: [dmaExpect(m, d, iova, n, true, data)] };
}

/** PCI bus number of `dddd:bb:dd.f`. */
function busOf(bdf: string): number {
  return parseInt(bdf.slice(5, 7), 16);
}
