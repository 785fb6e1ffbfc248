// The iommu live-update series' file handlers as the LUO model sees them: "iommufd-v1"
// (kernel/iommufd/liveupdate.ts: the HWPTs IOMMU_HWPT_LU_SET_PRESERVE marked, their IOASes frozen,
// their domains handed over; RETRIEVE_FD rebuilds one IOAS and one user HWPT per preserved HWPT,
// ids 1, 2, ... in the order of their old ids) and "vfio-pci-v1" (kernel/vfio/liveupdate.ts: the
// device, with its IOMMU state when attached to a preserved HWPT; reachable only through
// RETRIEVE_FD until the PCI FLB finishes; a restored device keeps translating through its restored
// domain and is owned by the restored iommufd until the iommu FLB finishes), with their
// can_finish and finish. LUO_FILE_MODELS lists every handler model in registration order.
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK } from '../../index.js';
import { PAGE } from '../intervals.js';
import { MEMFD_MODEL, MShmem, type FdTarget, type LuoEnv, type LuoFileModel, type MLuoFile, type MSession } from './luo-files.js';
import { pageSpan, syncPins } from './mm.js';
import { CTX_SLOTS, MCtx, type MDevice, type MHwpt, type MIoas, type MPages } from './state.js';

/** What PRESERVE_FD of an iommufd made: the context and its marked HWPTs (object-id order). */
export interface IommufdPreserved {
  obj: MCtx;
  hwpts: MHwpt[];
}

/** What PRESERVE_FD of a VFIO cdev made: the device, and the preserved HWPT it is attached to. */
export interface VfioPreserved {
  obj: MDevice;
  hwpt: MHwpt | null;
}

/** What crosses the reboot for an iommufd: the context RETRIEVE_FD builds, and the tokens of the memfds its areas map. */
interface IommufdSer {
  ctx: MCtx;
  memfds: bigint[];
}

const REQ_SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK;

/** The marked HWPTs of `ctx`, in object-id order (`xa_for_each`). */
export const markedHwpts = (ctx: MCtx): MHwpt[] => ctx.hwpts().filter((h) => h.luToken !== undefined);

/** A free context slot of the VMM, or -1. */
export function freeSlot(env: LuoEnv): number {
  const m = env.m;
  for (let i = 0; i < CTX_SLOTS; i++) if (!m.slots[i] || m.slots[i]!.dead) return i;
  return -1;
}

/**
 * "iommufd-v1". No `get_id`: the file (the context) is the identity. Its preserve walks the marked
 * HWPTs: each IOAS frozen, then every area checked (only a memfd sealed SEAL|GROW|SHRINK at map
 * time and preserved in the same session passes; the fuzzer maps no LUO memfd into an IOAS, so
 * any area is EINVAL: anonymous or guestmemfs memory, or the VMM's unsealed memfd); a failure
 * leaves every IOAS mutable. A persistent (RFC) context with a marked HWPT is EBUSY: its domains
 * are handed over through KHO already. Unpreserve makes every IOAS of the context mutable again.
 */
const iommufdModel: LuoFileModel = {
  compatible: 'iommufd-v1',
  canPreserve: (t) => t.kind === 'iommufd',
  id: (t) => (t as { obj: MCtx }).obj,
  preservedId: (p) => (p as IommufdPreserved).obj,
  retrievedId: (obj) => obj,
  preserveErr(t, s, env) {
    const ctx = (t as { obj: MCtx }).obj;
    const marked = markedHwpts(ctx);
    // A persistent iommufd's domains go through KHO's /iommufd already.
    if (marked.length && ctx.pid > 0) return 'EBUSY';
    // check_iopt_pages_preserved, HWPT by HWPT, area by area (in IOVA order).
    for (const h of marked) {
      for (const a of h.ioas.areas) {
        const f = a.pages.file;
        if (a.pages.kind !== 'file' || !(f instanceof MShmem) || ((a.pages.mapSeals ?? 0) & REQ_SEALS) !== REQ_SEALS) return 'EINVAL';
        if (!env.preservedIn(f, s)) return 'ENOENT';
      }
    }
    return null;
  },
  preserve(t): IommufdPreserved {
    const ctx = (t as { obj: MCtx }).obj;
    const hwpts = markedHwpts(ctx);
    for (const h of hwpts) h.ioas.luFrozen = true;
    return { obj: ctx, hwpts };
  },
  unpreserve(p, env) {
    const { obj: ctx, hwpts } = p as IommufdPreserved;
    for (const io of ctx.ioases()) io.luFrozen = false;
    // An automatic HWPT whose devices all left while it was held goes now.
    for (const h of hwpts) {
      if (h.manual || h.devs.size || env.m.devices.some((d) => d.xlate.k === 'hwpt' && d.xlate.h === h) || ctx.objs.get(h.id) !== h) continue;
      ctx.objs.delete(h.id);
      syncPins(env.m);
    }
  },
  pinned: () => 0,
  /**
   * The domains the next kernel's driver restores, as the context RETRIEVE_FD will build (not yet
   * the VMM's): each area over the next kernel's inode of its memfd (the preserved folios, which
   * the restored domain maps, so its pages are resolved already), and the memfd's token.
   */
  serialize(p, _f, env): IommufdSer {
    const ctx = new MCtx(env.m.nextCtx++);
    const memfds: bigint[] = [];
    (p as IommufdPreserved).hwpts.forEach((old, k) => {
      const io: MIoas = { t: 'ioas', id: 2 * k + 1, areas: [], allowed: [] };
      const h: MHwpt = { t: 'hwpt', id: 2 * k + 2, ioas: io, devs: new Set(), restored: true, manual: true, luRestored: true };
      for (const a of old.ioas.areas) {
        const mf = env.outgoingFile(a.pages.file)!;
        const file = env.serOf(a.pages.file) as MShmem;
        const offset = a.pages.base + a.off;
        const first = offset & ~(PAGE - 1n);
        const pages: MPages = { id: env.m.nextPages++, kind: 'file', base: first, file, writable: a.w, res: new Map(), mapSeals: REQ_SEALS };
        const off = offset - first;
        const [f, l] = pageSpan(pages, off, a.last - a.start + 1n);
        for (let pg = f; pg <= l; pg++) pages.res.set(pg, file.pageId(pg)!);
        io.areas.push({ start: a.start, last: a.last, pages, off, r: a.r, w: a.w, segs: null });
        memfds.push(mf.token);
      }
      ctx.objs.set(io.id, io);
      ctx.objs.set(h.id, h);
      env.flb.domains.set(old, { h, ctx });
    });
    env.flb.iommuFiles++;
    return { ctx, memfds };
  },
  retrievable: (f, env) => f.retrieved === undefined && freeSlot(env) >= 0,
  retrieve(ser, s, env): MCtx {
    const { ctx, memfds } = ser as IommufdSer;
    const m = env.m;
    // liveupdate_get_file_incoming: each memfd an area maps is retrieved now if it was not yet.
    for (const token of memfds) {
      const f = s.files.find((x) => x.token === token)!;
      if (f.retrieved === undefined) f.retrieved = f.handler.retrieve(f.ser, s, env);
    }
    m.ctxs.push(ctx);
    syncPins(m);
    // Every device still on one of its restored domains is this iommufd's now.
    m.devices.forEach((d, i) => {
      if (d.xlate.k === 'hwpt' && d.xlate.ctx === ctx) env.flb.claimed.set(i, ctx);
    });
    return ctx;
  },
  install(obj, fd, env) {
    const ctx = obj as MCtx;
    const slot = freeSlot(env);
    ctx.fd = fd;
    ctx.slot = slot;
    env.m.slots[slot] = ctx;
  },
  /** Retrieved, and no device still on a restored domain of it without being attached again. */
  canFinish(f, env) {
    const ctx = f.retrieved as MCtx | undefined;
    if (!ctx) return false;
    return !env.m.devices.some((d) => d.xlate.k === 'hwpt' && d.xlate.ctx === ctx && d.xlate.h.luRestored && !d.attached);
  },
  finish(f, env) {
    for (const h of (f.retrieved as MCtx).hwpts()) h.luRestored = false;
    // The last iommufd file finishes the iommu FLB: the restored devices are free to bind anywhere.
    if (--env.flb.iommuFiles === 0) env.flb.claimed.clear();
  },
};

/**
 * "vfio-pci-v1". `get_id` is the device. Its preserve: EBUSY while the previous kernel's PCI FLB
 * still holds the device; an attached device goes through `iommufd_device_preserve`: its HWPT not
 * marked EINVAL, its iommufd not preserved in this session ENOENT, its domain not preserved EINVAL.
 * RETRIEVE_FD gives an unbound file of the device; it can finish once bound again.
 */
const vfioModel: LuoFileModel = {
  compatible: 'vfio-pci-v1',
  canPreserve: (t) => t.kind === 'vfio',
  id: (t) => (t as { obj: MDevice }).obj,
  preservedId: (p) => (p as VfioPreserved).obj,
  retrievedId: (obj) => obj,
  preserveErr(t, s, env) {
    const d = (t as { obj: MDevice }).obj;
    if (env.flb.pciHeld.has(env.m.devices.indexOf(d))) return 'EBUSY';
    if (!d.attached || d.xlate.k !== 'hwpt') return null;
    const { h, ctx } = d.xlate;
    if (h.luToken === undefined) return 'EINVAL';
    if (!env.preservedIn(ctx, s)) return 'ENOENT';
    const f = env.outgoingFile(ctx);
    return f && (f.obj as IommufdPreserved).hwpts.includes(h) ? null : 'EINVAL';
  },
  preserve(t): VfioPreserved {
    const d = (t as { obj: MDevice }).obj;
    return { obj: d, hwpt: d.attached && d.xlate.k === 'hwpt' ? d.xlate.h : null };
  },
  unpreserve() {},
  pinned: () => 0,
  /** The device keeps its bus mastering; with IOMMU state it stays on its domain, restored in early boot. */
  serialize(p, _f, env): MDevice {
    const { obj: d, hwpt } = p as VfioPreserved;
    const i = env.m.devices.indexOf(d);
    env.flb.pciHeld.add(i);
    env.flb.pciFiles++;
    const r = hwpt ? env.flb.domains.get(hwpt) : undefined;
    if (r) {
      d.xlate = { k: 'hwpt', h: r.h, ctx: r.ctx };
      d.attached = false;
      env.flb.claimed.set(i, null);
    }
    return d;
  },
  retrievable: (f) => f.retrieved === undefined,
  retrieve: (ser) => ser,
  install(obj, fd) {
    const d = obj as MDevice;
    d.fd = fd;
    d.bound = null;
  },
  canFinish: (f) => f.retrieved === undefined || (f.retrieved as MDevice).bound !== null,
  finish(_f, env) {
    // The last VFIO file finishes the PCI FLB: every preserved function can be opened again.
    if (--env.flb.pciFiles === 0) env.flb.pciHeld.clear();
  },
};

/** The handlers, in registration order (`luo_register_file_handler`): the first that takes a file preserves it. */
export const LUO_FILE_MODELS: LuoFileModel[] = [MEMFD_MODEL, iommufdModel, vfioModel];
export const IOMMUFD_MODEL = iommufdModel;
export const VFIO_MODEL = vfioModel;

/** Whether `f` is an iommufd or VFIO file (what LUO's reference keeps alive is not followed by the RFC side). */
export const isIommuFile = (f: MLuoFile): boolean => f.handler === iommufdModel || f.handler === vfioModel;

export type { FdTarget, MSession };
