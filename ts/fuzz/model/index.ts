// The reference model of what user space and devices can observe of the simulated host, and the
// planner that turns a fuzzer operation into concrete system calls with their expected outcomes.
// Laid out by subsystem: state.ts (what the model knows; the lowest module), mm.ts, guestmemfs.ts,
// iommufd.ts, ioas.ts, device.ts, process.ts, liveupdate.ts, check.ts; this file dispatches.
//
// Every rule here is written from the kernel's rules as the references state them, not from the
// simulator's code:
//   - /work/shared/reference/iommufd-uapi.md §4 (errno order of MAP, MAP_FILE, COPY, UNMAP,
//     ALLOW_IOVAS, IOVA_RANGES, DESTROY), §5 (automatic IOVA allocation), §6 (object ids, lowest
//     free per context; DESTROY is EBUSY while referenced, a bound device is always referenced by
//     its driver), §7 (areas, iopt_pages shared by COPY, pins per iopt_pages), §10 (checklist);
//   - drivers/iommu/iommufd/device.c (attach finds the IOAS's automatic HWPT or allocates one,
//     a second attach replaces, detach destroys an automatic HWPT with its last device, the MSI
//     window is reserved per attached device, the aperture per domain);
//   - VT-d (reference vtd.md): a PTE is present iff R or W, a read of a non-readable page faults
//     0x6 and a write of a non-writable one 0x5, beyond MGAW 0x4, no context entry 0x1/0x2;
//   - /work/shared/reference/persistence-rfc.md §1.4 (persistent ids: global, lowest free from 1,
//     SET on a context with objects is EFAULT), §1.8 (re-hydration through
//     /sys/kernel/iommufd_persisted/<id>/iommufd returns an fd of the reader; ids from 1), §1.9
//     (guestmemfs-only maps, file pins, unlink EBUSY), §2 (guestmemfs: 2 MiB blocks, ENOMEM when
//     full, EBUSY while serialised, a mappings block per file), §3.1 (KHO active/DUMP/ABORT), and
//     the project's completions listed at its end (every VMA checked, pins per area, claim once,
//     re-hydrated context stays persistent and bound to its domain, only persistent devices keep
//     translating through kexec, domains verified before adoption);
//   - README.md's statements of the simulated kernel's contract (freeze while KHO is active, a
//     restored area per file segment, restored HWPTs behave as automatic ones and are held by
//     each device still on them until it leaves (its MSI window with it; unbind blocks it), bus
//     mastering cleared at kexec for every device whose DMA is not handed over and set again by
//     VFIO bind; pins of the old kernel end with it, so what only they kept is free after the jump).
// Where the references leave an order or an outcome open, the model accepts each reading (an
// errno set, or "unknown" for a device's translation) instead of guessing the simulator's choice.
import { DmaFault, SyscallError } from '../../index.js';
import type { Op } from '../ops.js';
import { planCheck } from './check.js';
import { planAttach, planAttachTo, planBind, planDetach, planDma, planUnbind } from './device.js';
import { gmFreeBlocks, planGmCreate, planGmTruncate, planGmUnlink } from './guestmemfs.js';
import { planAllow, planCopy, planMap, planMapFile, planUnmap } from './ioas.js';
import { planClose, planDestroy, planIoasAlloc, planOpen, planOptGet, planOptSet } from './iommufd.js';
import { handoverPlan, planClaimPick, planKexec, planKho, type HandoverPlan } from './liveupdate.js';
import { LuoModel } from './luo.js';
import { pinCountOf, pinnedPages, planCpu } from './mm.js';
import { planExit, planSetup } from './process.js';
import { CHUNK_PAGES, ModelState, type Obs, type Plan, type Sys } from './state.js';

export type { HandoverPlan } from './liveupdate.js';
export { DEFAULT_WORLD, pattern, type Alt, type MArea, type MCtx, type MDevice, type MHwpt, type MIoas, type Obs, type Plan, type Sys, type WorldConfig } from './state.js';

/** The model of one fuzzed host: its state (state.ts) and the planner. */
export class Model extends ModelState {
  /** The upstream flow's side (sessions, memfds): model/luo.ts. */
  readonly luo = new LuoModel(this);

  /** The plans of one operation (empty when it does not apply to the current state). */
  *plan(op: Op): Generator<Plan, void, void> {
    switch (op.k) {
      case 'open':
        return yield* planOpen(this, op.c, op.persist);
      case 'close':
        return yield* planClose(this, op.c);
      case 'optSet':
        return yield* planOptSet(this, op.c);
      case 'optGet':
        return yield* planOptGet(this, op.c);
      case 'ioasAlloc':
        return yield* planIoasAlloc(this, op.c);
      case 'map':
        return yield* planMap(this, op);
      case 'mapFile':
        return yield* planMapFile(this, op);
      case 'copy':
        return yield* planCopy(this, op);
      case 'unmap':
        return yield* planUnmap(this, op);
      case 'allow':
        return yield* planAllow(this, op);
      case 'destroy':
        return yield* planDestroy(this, op.c, op.id);
      case 'bind':
        return yield* planBind(this, op.d, op.c);
      case 'attach':
        return yield* planAttach(this, op.d, op.mode, op.pick);
      case 'detach':
        return yield* planDetach(this, op.d);
      case 'unbind':
        return yield* planUnbind(this, op.d);
      case 'dmaRead':
      case 'dmaWrite':
        return yield* planDma(this, op);
      case 'cpuWrite':
      case 'cpuRead':
        return yield* planCpu(this, op);
      case 'gmCreate':
        return yield* planGmCreate(this, op.f);
      case 'gmTruncate':
        return yield* planGmTruncate(this, op.f, op.blocks);
      case 'gmUnlink':
        return yield* planGmUnlink(this, op.f);
      case 'kho':
        return yield* planKho(this, op.on);
      case 'kexec':
        // With LUO on, reboot runs liveupdate_reboot() first: the LUO model plans it.
        if (this.luo.enabled) return yield* this.luo.planReboot({ ...op, inject: 0, nth: 1, err: 0, retry: false });
        return yield* planKexec(this, op.kho, op.rehydrate, op.viaHwpt);
      case 'claim':
        return yield* planClaimPick(this, op.pick);
      case 'corruptKexec':
        // The Rig runs the update itself (fuzz/handover.ts); here only KHO's activation is modelled.
        if (!this.khoActive) yield* planKho(this, true);
        return;
      case 'exit':
        return yield* planExit(this);
      case 'vm':
        return yield* planVm(this, op);
      case 'check':
        yield* planCheck(this);
        return yield* this.luo.planCheck();
      default:
        return yield* this.luo.plan(op);
    }
  }

  /** The VMM's set-up at boot (the Rig runs it before the first operation). */
  *planSetup(): Generator<Plan, void, void> {
    yield* planSetup(this);
  }

  /** host.kernel.pinnedPages(): every pinned page of every iopt_pages of a claimed context. */
  pinnedPages(): number {
    return pinnedPages(this) + this.luo.pinnedPages();
  }

  /** Pin count of one backing page (p.pinCount). */
  pinCountOf(pageId: number): number {
    return pinCountOf(this, pageId);
  }

  /** Free guestmemfs blocks. */
  gmFreeBlocks(): number {
    return gmFreeBlocks(this);
  }

  /** Before a live update (KHO active): the persistent VMMs and their devices, and the IOVAs worth probing. */
  handoverPlan(): HandoverPlan {
    return handoverPlan(this);
  }
}

/** `vm`: a whole persistent VM in one operation (context, IOAS, guest file, MAP, bind, attach). */
function* planVm(m: ModelState, op: Extract<Op, { k: 'vm' }>): Generator<Plan, void, void> {
  if (!m.ctxOfSlot(op.c)) yield* planOpen(m, op.c, op.persist);
  const ctx = m.ctxOfSlot(op.c);
  if (!ctx) return;
  if (!ctx.ioases().length) yield* planIoasAlloc(m, op.c);
  const io = ctx.ioases()[0];
  if (!io) return;
  if (!m.names.has(`f${op.f}`)) yield* planGmCreate(m, op.f);
  if (m.fileFds[op.f] && m.fileFds[op.f]!.inode.blocks.length === 0) yield* planGmTruncate(m, op.f, op.blocks);
  const slot = m.fileFds[op.f];
  if (slot && slot.inode.blocks.length) {
    yield* planMap(m, { k: 'map', c: op.c, ioas: ctx.ioases().indexOf(io), src: 2 + op.f, offPg: 0, offB: 0, lenPg: slot.inode.blocks.length * CHUNK_PAGES, lenB: 0, fixed: false, at: { kind: 0, idx: 0, dPg: 0, dB: 0 }, r: true, w: true });
  }
  const d = m.devices[op.d];
  if (!d) return;
  if (!d.bound) yield* planBind(m, op.d, op.c);
  if (d.bound?.ctx === ctx && !(d.attached && d.xlate.k === 'hwpt' && d.xlate.h.ioas === io)) yield* planAttachTo(m, op.d, io.id);
}

/** Runs one plan's syscall and classifies what happened. */
export function observe(sys: Sys, plan: Plan): Obs {
  try {
    return { t: 'ok', v: plan.run(sys) };
  } catch (e) {
    if (e instanceof SyscallError) return { t: 'err', code: e.code, syscall: e.syscall };
    if (e instanceof DmaFault) return { t: 'fault', reason: e.reason, iova: e.iova, write: e.write };
    throw e;
  }
}
