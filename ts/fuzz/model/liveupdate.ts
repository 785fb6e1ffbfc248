// The live update (persistence-rfc.md §1, §3.1; README "Live update"): KHO's DUMP freezes and
// snapshots the persistent contexts, kexec jumps to what the next kernel finds, and the VMM claims
// its re-hydrated iommufds through /sys/kernel/iommufd_persisted/<id>/iommufd.
import { IOMMU_IOAS_IOVA_RANGES, LINUX_REBOOT_CMD_KEXEC, O_RDONLY, O_WRONLY } from '../../index.js';
import { byStart, PAGE } from '../intervals.js';
import { planAttachTo, planBind } from './device.js';
import { pagesNo, syncPins } from './mm.js';
import { planSetup } from './process.js';
import {
  BLOCK,
  CTX_SLOTS,
  errs,
  MCtx,
  okAny,
  okv,
  type MArea,
  type MHwpt,
  type MInode,
  type MIoas,
  type ModelState,
  type MPages,
  type Plan,
  type SnapCtx,
} from './state.js';

/**
 * Whether a (pinned) area's pages are the guestmemfs pages its segments name: what the next
 * kernel checks before adopting a domain (persistence-rfc.md, completion 9). A lazily mapped
 * user range pinned after its VMA was replaced by another file fails it.
 */
export function mapsItsSegs(m: ModelState, a: MArea): boolean {
  if (!a.segs) return true;
  for (let x = a.start; x <= a.last; x += PAGE) {
    const got = a.pages.res.get(pagesNo(a.pages, a.off + (x - a.start)));
    if (got === undefined) return true; // not pinned: no domain maps it
    const sg = a.segs.find((z) => z.iova <= x && x < z.iova + z.len);
    if (!sg || got !== sg.inode.pageId(Number((sg.off + (x - sg.iova)) >> 12n))) return false;
  }
  return true;
}

export function takeSnapshot(m: ModelState): void {
  m.snapshot = [];
  for (const ctx of m.liveCtxs()) {
    ctx.serialised = ctx.pid > 0;
    if (!ctx.serialised) continue;
    m.snapshot.push({
      ctx,
      ioases: ctx.ioases().map((io) => ({
        ioas: io,
        areas: io.areas.map((a) => ({ start: a.start, last: a.last, r: a.r, w: a.w, segs: (a.segs ?? []).map((s) => ({ ...s })) })),
        // An unclaimed context hands over the places of the HWPTs it lost too (DOMAIN_GONE).
        hwpts: [...ctx.hwpts(), ...(ctx.claimed ? [] : ctx.gone)]
          .filter((h) => h.ioas === io)
          .sort((a, b) => a.id - b.id)
          .map((h) => ({ hwpt: h, devs: m.devices.map((_, i) => i).filter((i) => { const x = m.devices[i]!.xlate; return x.k === 'hwpt' && x.h === h; }) })),
        verified: !io.areas.every((a) => mapsItsSegs(m, a)) ? false : ctx.hwpts().some((h) => h.ioas === io && h.uncertain) ? 'maybe' : true,
      })),
    });
  }
}

/** What a corrupted live update needs of the model (fuzz/handover.ts). */
export interface HandoverPlan {
  /** Each serialised persistent context, with the devices still translating through its HWPTs. */
  vmms: { pid: number; devices: HandoverDevice[] }[];
  probes: BigUint64Array;
}
/** A device to re-attach after the jump: its cdev and the id of the IOAS it goes back to. */
export interface HandoverDevice {
  bdf: string;
  vfio: string;
  ptId: number;
}

/**
 * Before a live update (KHO active): each context the DUMP serialised with the devices still
 * translating through one of its HWPTs, and the IOAS each goes back to, numbered as the next
 * kernel will (1..n in the order of the ids the DUMP saw: an IOAS allocated since is not in the
 * handover); and the IOVAs worth probing (every area's edges and middle, and next to them).
 */
export function handoverPlan(m: ModelState): HandoverPlan {
  const vmms: HandoverPlan['vmms'] = [];
  for (const sc of m.snapshot ?? []) {
    const devices: HandoverDevice[] = [];
    sc.ioases.forEach((si, k) => {
      // A domain that does not map its own areas (a user-VA MAP whose VMA was replaced before a
      // domain pinned it) is refused even from an intact blob, and re-attaching maps the areas as
      // MAP recorded them, not what the device had: such devices stay out of the comparison.
      if (si.verified === false) return;
      for (const sh of si.hwpts) {
        for (const i of sh.devs) {
          const x = m.devices[i]!.xlate;
          if (x.k === 'hwpt' && x.h === sh.hwpt) devices.push({ bdf: m.devices[i]!.bdf, vfio: `/dev/vfio/devices/vfio${i}`, ptId: k + 1 });
        }
      }
    });
    vmms.push({ pid: sc.ctx.pid, devices });
  }
  const probes = new Set<bigint>();
  for (const ctx of m.liveCtxs()) {
    for (const io of ctx.ioases()) {
      for (const a of io.areas) {
        const first = a.start & ~(PAGE - 1n);
        const last = a.last & ~(PAGE - 1n);
        for (const x of [first - PAGE, first, first + PAGE, first + ((last - first) / 2n & ~(PAGE - 1n)), last, last + PAGE]) if (x >= 0n && x < 1n << 63n) probes.add(x);
      }
    }
  }
  return { vmms, probes: BigUint64Array.from([...probes].sort((a, b) => (a < b ? -1 : 1))) };
}

export function* planKho(m: ModelState, on: boolean): Generator<Plan, void, void> {
  if (on && m.khoActive) return; // a second '1' while active: not specified, not exercised
  if (on && m.luoIommuState()) return;
  const fd = m.peekFd();
  yield { what: 'open /sys/kernel/kho/active', run: (s) => s.p.open('/sys/kernel/kho/active', O_WRONLY), alts: [okv(fd, () => m.allocFd())] };
  yield {
    what: `write '${on ? 1 : 0}' > /sys/kernel/kho/active`,
    run: (s) => s.p.write(fd, on ? '1' : '0'),
    alts: [okv(1, () => {
      if (on) {
        khoDump(m);
      } else {
        m.khoActive = false;
        m.snapshot = null;
        for (const c of m.ctxs) c.serialised = false;
      }
    })],
  };
  yield { what: `close ${fd}`, run: (s) => s.p.close(fd), alts: [okAny(() => m.freeFd(fd))] };
}

/** KHO's DUMP as the model sees it: active, the buses' context tables and the persistent contexts serialised. */
export function khoDump(m: ModelState): void {
  m.khoActive = true;
  m.dumpedBuses = new Set(m.ctxBuses);
  takeSnapshot(m);
}

export function* planKexec(m: ModelState, kho: boolean, rehydrate: number, viaHwpt: boolean): Generator<Plan, void, void> {
  if (kho && !m.khoActive) yield* planKho(m, true);
  yield { what: 'kexec_file_load', run: (s) => s.p.kexecFileLoad({}), alts: [okAny()] };
  yield { what: 'reboot(LINUX_REBOOT_CMD_KEXEC)', run: (s) => s.p.reboot(LINUX_REBOOT_CMD_KEXEC), alts: [okAny(() => jump(m))] };
  yield* planAfterJump(m, rehydrate, viaHwpt);
}

/** After the jump: a new VMM, which claims the persisted iommufds (rehydrate ≥ 1) and re-attaches its devices (2). */
export function* planAfterJump(m: ModelState, rehydrate: number, viaHwpt: boolean): Generator<Plan, void, void> {
  yield { what: 'spawn the VMM', run: (s) => void (s.p = s.host.kernel.spawn()), alts: [okAny()] };
  yield* planSetup(m);
  if (rehydrate === 0) return;
  for (const ctx of m.liveCtxs().filter((c) => !c.claimed).sort((a, b) => a.pid - b.pid)) yield* planClaim(m, ctx.pid);
  if (rehydrate < 2) return;
  for (let i = 0; i < m.devices.length; i++) {
    const d = m.devices[i]!;
    if (d.xlate.k !== 'hwpt' || d.attached || d.xlate.ctx.slot === null) continue;
    const { h, ctx } = d.xlate;
    yield* planBind(m, i, ctx.slot!);
    if (d.bound?.ctx !== ctx) continue;
    yield* planAttachTo(m, i, viaHwpt ? h.id : h.ioas.id, h.id);
  }
}

/** The jump: what the next kernel finds (persistence-rfc.md §1, README "Live update"). */
export function jump(m: ModelState): void {
  m.kexecs++;
  m.generation++;
  const snap0 = m.khoActive ? m.snapshot : null;
  // A context whose serialised areas name bytes past the end of their file (a lazy MAP_FILE past
  // EOF) cannot be re-hydrated; the next kernel refuses it whole (its domains too).
  const fits = (sc: SnapCtx) => sc.ioases.every((si) => si.areas.every((a) => a.segs.every((sg) => sg.off + sg.len <= BigInt(sg.inode.blocks.length) * BLOCK)));
  const snap = snap0 ? snap0.filter(fits) : null;
  const refused = new Set<number>();
  for (const sc of snap0 ?? []) {
    if (fits(sc)) continue;
    for (const si of sc.ioases) for (const sh of si.hwpts) for (const i of sh.devs) refused.add(i);
  }
  // Devices keep translating only through a serialised domain they are still attached to.
  const keep = new Map<number, MHwpt>();
  if (snap) {
    for (const sc of snap) for (const si of sc.ioases) for (const sh of si.hwpts) for (const i of sh.devs) {
      const x = m.devices[i]!.xlate;
      if (x.k === 'hwpt' && x.h === sh.hwpt) keep.set(i, sh.hwpt);
    }
  }
  const stale = new Set<number>();
  if (snap) for (const sc of snap) for (const si of sc.ioases) for (const sh of si.hwpts) for (const i of sh.devs) if (!keep.has(i)) stale.add(i);
  // guestmemfs: handed over with KHO (linked files, and unlinked ones a serialised area pins);
  // a fresh, empty filesystem without.
  const keepInodes = new Set<MInode>();
  if (snap) {
    for (const i of m.names.values()) keepInodes.add(i);
    for (const sc of snap) for (const si of sc.ioases) for (const a of si.areas) for (const s of a.segs) keepInodes.add(s.inode);
  } else m.names.clear();
  m.inodes = keepInodes;
  for (const i of keepInodes) {
    i.fdHeld = false;
    i.vmaHeld = false;
  }
  if (!snap) m.gmChunks = new Set();
  // Every context of the old kernel is gone; the serialised ones come back, unclaimed.
  const restored: MCtx[] = [];
  const hwptMap = new Map<MHwpt, MHwpt>();
  for (const sc of snap ?? []) {
    const ctx = new MCtx(m.nextCtx++);
    ctx.pid = sc.ctx.pid;
    ctx.claimed = false;
    // persistence-rfc.md §1.8 (and README): IOASes numbered afresh 1..n in their old order; the
    // restored HWPTs follow, in the same order.
    let next = 1;
    const ios: MIoas[] = [];
    for (const si of sc.ioases) {
      const io: MIoas = { t: 'ioas', id: next++, areas: [], allowed: [] };
      ctx.objs.set(io.id, io);
      ios.push(io);
    }
    for (const [k, si] of sc.ioases.entries()) {
      const io = ios[k]!;
      for (const a of si.areas) {
        // One file-backed area per guestmemfs segment.
        for (const s of a.segs) {
          const pages: MPages = { id: m.nextPages++, kind: 'file', base: s.off, file: s.inode, writable: a.w, res: new Map() };
          io.areas.push({ start: s.iova, last: s.iova + s.len - 1n, pages, off: 0n, r: a.r, w: a.w, segs: [{ ...s }] });
        }
      }
      io.areas.sort(byStart);
      // A domain that does not map exactly its serialised areas is not adopted; its devices are
      // blocked, and its HWPT's number stays unused, as does a place the handover marks gone.
      if (si.verified === false) for (const sh of si.hwpts) for (const i of sh.devs) refused.add(i);
      for (const sh of si.hwpts) {
        const h: MHwpt = { t: 'hwpt', id: next++, ioas: io, devs: new Set(), restored: true, uncertain: si.verified === 'maybe' };
        if (si.verified === false || sh.hwpt.gone) {
          h.gone = true;
          ctx.gone.push(h);
          continue;
        }
        ctx.objs.set(h.id, h);
        hwptMap.set(sh.hwpt, h);
      }
    }
    restored.push(ctx);
  }
  for (const c of m.ctxs) c.dead = true;
  m.ctxs.length = 0;
  m.ctxs.push(...restored);
  for (let i = 0; i < m.devices.length; i++) {
    const d = m.devices[i]!;
    const h = keep.get(i);
    const nh = h ? hwptMap.get(h) : undefined;
    const ctx = nh ? restored.find((c) => c.objs.get(nh.id) === nh) : undefined;
    d.fd = null;
    d.bound = null;
    d.attached = false;
    d.staleRestore = stale.has(i);
    d.xlate = nh && ctx ? { k: 'hwpt', h: nh, ctx } : refused.has(i) ? { k: 'rejected' } : { k: 'busoff' };
    d.maybe = null;
    if (d.staleRestore) {
      // It may come back on the domain the blob still lists it in.
      for (const sc of snap ?? []) for (const si of sc.ioases) for (const sh of si.hwpts) {
        if (!sh.devs.includes(i)) continue;
        const rh = hwptMap.get(sh.hwpt);
        const rc = rh ? restored.find((c) => c.objs.get(rh.id) === rh) : undefined;
        if (rh && rc) d.maybe = { h: rh, ctx: rc };
      }
    }
  }
  m.ctxBuses = snap ? new Set(m.dumpedBuses) : new Set();
  m.khoActive = false;
  m.snapshot = null;
  m.mounted = false;
  // The VMM died with its kernel.
  m.fds = new Set();
  m.slots = [];
  m.fileFds = [];
  m.vmas = [];
  m.memfd = null;
  for (const h of m.jumpHooks) h();
  syncPins(m);
}

export function* planClaimPick(m: ModelState, pick: number): Generator<Plan, void, void> {
  const pids = m.liveCtxs().filter((c) => c.pid && (!c.claimed || c.restoredHere)).map((c) => c.pid).sort((a, b) => a - b);
  yield* planClaim(m, pick < pids.length ? pids[pick]! : 99);
}

export function* planClaim(m: ModelState, pid: number): Generator<Plan, void, void> {
  const ctx = m.liveCtxs().find((c) => c.pid === pid && (!c.claimed || c.restoredHere));
  const slot = m.slots.findIndex((s, i) => i < CTX_SLOTS && (!s || s.dead));
  const freeSlot = slot >= 0 ? slot : m.slots.length < CTX_SLOTS ? m.slots.length : -1;
  if (ctx && !ctx.claimed && freeSlot < 0) return;
  const path = `/sys/kernel/iommufd_persisted/${pid}/iommufd`;
  if (!ctx) {
    yield { what: `open ${path}`, run: (s) => s.p.open(path, O_RDONLY), alts: [errs(['ENOENT'])] };
    return;
  }
  const fd = m.peekFd();
  yield { what: `open ${path}`, run: (s) => s.p.open(path, O_RDONLY), alts: [okv(fd, () => m.allocFd())] };
  if (ctx.claimed) {
    yield { what: `read ${path} (claimed before)`, run: (s) => s.p.read(fd, 64), alts: [errs(['EBUSY'])] };
  } else {
    const nfd = m.peekFd();
    yield {
      what: `read ${path}`,
      run: (s) => new TextDecoder().decode(s.p.read(fd, 64)),
      alts: [okv(`${nfd}\n`, () => {
        m.allocFd();
        ctx.claimed = true;
        ctx.restoredHere = true;
        ctx.fd = nfd;
        ctx.slot = freeSlot;
        m.slots[freeSlot] = ctx;
        syncPins(m);
      })],
    };
  }
  yield { what: `close ${fd}`, run: (s) => s.p.close(fd), alts: [okAny(() => m.freeFd(fd))] };
  // Learn whether a domain freed after the DUMP was adopted: its IOAS has the domain's alignment.
  for (const h of ctx.hwpts()) {
    if (!h.uncertain || !ctx.claimed || ctx.fd === null) continue;
    const cfd = ctx.fd;
    const ioasId = h.ioas.id;
    yield {
      what: `IOMMU_IOAS_IOVA_RANGES ioas ${ioasId} (was the freed domain adopted?)`,
      run: (s) => s.p.ioctl(cfd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: ioasId, num_iovas: 8, allowed_iovas: [] }).out_iova_alignment,
      alts: [{ any: true, then: (o) => {
        if (o.t === 'ok' && o.v === PAGE) {
          h.uncertain = false;
          return;
        }
        // Not adopted: the HWPT does not exist, and its number stays unused.
        ctx.objs.delete(h.id);
        h.gone = true;
        ctx.gone.push(h);
        syncPins(m);
      } }],
    };
  }
}
