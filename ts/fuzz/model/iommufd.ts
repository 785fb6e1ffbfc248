// iommufd contexts and their objects (reference §6): open, IOMMU_OPTION(PERSISTENT), IOAS_ALLOC,
// DESTROY and close; a context goes when nothing holds it, and a domain freed while KHO is active
// leaves the handover uncertain (domainFreed).
import { IOMMU_DESTROY, IOMMU_IOAS_ALLOC, IOMMU_OPTION, IOMMU_OPTION_OP_GET, IOMMU_OPTION_OP_SET, IOMMU_OPTION_PERSISTENT, O_RDWR } from '../../index.js';
import { reapInodes } from './guestmemfs.js';
import { syncPins } from './mm.js';
import { errs, MCtx, okAny, okv, type Alt, type MHwpt, type ModelState, type Plan, type Sys } from './state.js';

export function* planOpen(m: ModelState, c: number, persist: boolean): Generator<Plan, void, void> {
  if (m.ctxOfSlot(c)) return;
  const fd = m.peekFd();
  const ctx = new MCtx(m.nextCtx++);
  yield {
    what: 'open /dev/iommu',
    run: (s) => s.p.open('/dev/iommu', O_RDWR),
    alts: [okv(fd, () => {
      m.allocFd();
      ctx.fd = fd;
      ctx.slot = c;
      m.ctxs.push(ctx);
      m.slots[c] = ctx;
    })],
  };
  if (persist) yield* planOptSet(m, c);
}

export function* planOptSet(m: ModelState, c: number): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(c);
  if (!ctx) return;
  const run = (s: Sys) => s.p.ioctl(ctx.fd!, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET, val64: 1n }).val64;
  const what = `IOMMU_OPTION(PERSISTENT, SET) fd ${ctx.fd}`;
  if (ctx.pid) {
    // persistence-rfc.md (project completion): a second SET returns the same id. With objects
    // present the EFAULT rule may be checked first: either answer.
    yield { what, run, alts: ctx.objs.size ? [okv(BigInt(ctx.pid)), errs(['EFAULT'])] : [okv(BigInt(ctx.pid))] };
    return;
  }
  if (ctx.objs.size) {
    yield { what, run, alts: [errs(['EFAULT'])] };
    return;
  }
  const id = m.lowestFreePid();
  yield { what, run, alts: [okv(BigInt(id), () => (ctx.pid = id))] };
}

export function* planOptGet(m: ModelState, c: number): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(c);
  if (!ctx) return;
  yield { what: `IOMMU_OPTION(PERSISTENT, GET) fd ${ctx.fd}`, run: (s) => s.p.ioctl(ctx.fd!, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64, alts: [okv(BigInt(ctx.pid))] };
}

export function* planIoasAlloc(m: ModelState, c: number): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(c);
  if (!ctx) return;
  const id = ctx.lowestFreeId();
  yield {
    what: `IOMMU_IOAS_ALLOC fd ${ctx.fd}`,
    run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_ALLOC, {}).out_ioas_id,
    alts: [okv(id, () => ctx.objs.set(id, { t: 'ioas', id, areas: [], allowed: [] }))],
  };
}

export function* planClose(m: ModelState, c: number): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(c);
  if (!ctx) return;
  // Closing a serialised persistent iommufd while KHO is active cannot fail: the handover still
  // describes it (what was serialised), and a domain freed after the DUMP is not adopted (see
  // domainFreed).
  if (releaseExcluded(ctx) && !m.devices.some((d) => d.bound?.ctx === ctx)) return;
  // Preserved by LUO: closing the fd would leave the context alive under LUO's reference (not modelled).
  if (m.luoHolds(ctx)) return;
  const fd = ctx.fd!;
  yield {
    what: `close iommufd ${fd}`,
    run: (s) => s.p.close(fd),
    alts: [okAny(() => {
      m.freeFd(fd);
      m.slots[c] = null;
      ctx.fd = null;
      ctx.slot = null;
      maybeDestroyCtx(m, ctx);
    })],
  };
}

/**
 * A domain torn down while KHO is active (its context closed, or its last device gone): the blob
 * still lists it and its tables were handed over. Whether the next kernel adopts such a domain is
 * not fixed by the references (it verifies what it finds: tables left as handed over match, tables
 * unmapped first do not), so the model accepts both and learns which at the claim ('maybe'). Its
 * devices left it before the jump: they stay blocked either way.
 */
export function domainFreed(m: ModelState, h: MHwpt): void {
  if (!m.khoActive) return;
  for (const sc of m.snapshot ?? []) for (const si of sc.ioases) if (si.hwpts.some((x) => x.hwpt === h) && si.verified !== false) si.verified = 'maybe';
}

/**
 * Whether the VMM must not release `ctx` now. Releasing a frozen persistent context (exit, close,
 * unbind of its last device while KHO is active) cannot fail and is planned: the next kernel
 * finds what was serialised (the areas, the files they pin, the domain's tables; see
 * domainFreed). Nothing is excluded any more; kept as the one place to exclude such releases.
 */
export function releaseExcluded(_ctx: MCtx | null | undefined): boolean {
  return false;
}

/** A context goes when nothing holds it: no fd and no bound device (persisted ones wait to be claimed). */
export function maybeDestroyCtx(m: ModelState, ctx: MCtx): void {
  if (ctx.dead || ctx.fd !== null || !ctx.claimed) return;
  if (m.devices.some((d) => d.bound?.ctx === ctx)) return;
  ctx.dead = true;
  for (const d of m.devices) if (d.xlate.k === 'hwpt' && d.xlate.ctx === ctx) d.xlate = { k: 'blocked' };
  for (const h of ctx.hwpts()) domainFreed(m, h);
  ctx.objs.clear();
  syncPins(m);
  reapInodes(m);
}

export function* planDestroy(m: ModelState, c: number, id: number): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(c);
  if (!ctx) return;
  const o = ctx.objs.get(id);
  // Reference §4.7 and §6.
  const alts = ((): Alt[] => {
    if (!o) return [errs(['ENOENT'])];
    if (o.t === 'dev') return [errs(['EBUSY'])];
    if (o.t === 'ioas') {
      if (ctx.hwpts().some((h) => h.ioas === o)) return [errs(['EBUSY'])];
      return [okAny(() => {
        ctx.objs.delete(id);
        syncPins(m);
        reapInodes(m);
      })];
    }
    // A device attached here, or still on the restored domain behind it, holds the HWPT.
    if (o.devs.size || m.devices.some((d) => d.xlate.k === 'hwpt' && d.xlate.h === o) || m.luoHoldsHwpt(o)) return [errs(['EBUSY'])];
    return [okAny(() => {
      ctx.objs.delete(id);
      domainFreed(m, o);
      syncPins(m);
    })];
  })();
  yield {
    what: `IOMMU_DESTROY id ${id}`,
    run: (s) => s.p.ioctl(ctx.fd!, IOMMU_DESTROY, { id }) && 0,
    alts: m.frozen(ctx) ? [errs(['EBUSY', ...alts.flatMap((x) => x.err ?? [])])] : alts,
  };
}
