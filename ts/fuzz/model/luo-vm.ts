// The `luoVm` operation: what a VMM does to have the upstream flow preserve a VM, as one step
// (each syscall planned and checked like the single operations).
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK } from '../../index.js';
import type { Op } from '../ops.js';
import { planAttachTo, planBind } from './device.js';
import { planMapFile } from './ioas.js';
import { planIoasAlloc, planOpen } from './iommufd.js';
import { LUO_TOKENS, type MSession, type MShmem } from './luo-files.js';
import { LUO_SEALS, LUO_SIZES, type LuoMemfds } from './luo-memfd.js';
import type { ModelState, Plan } from './state.js';

/** What `luoVm` needs of the LUO model. */
export interface LuoVmHost {
  readonly m: ModelState;
  readonly mfd: LuoMemfds;
  readonly outgoing: MSession[];
  readonly sessions: { fd: number; s: MSession }[];
  planMark(c: number, pick: number, token: number): Generator<Plan, void, void>;
  planSessionIoctl(retrieve: boolean, nameIdx: number): Generator<Plan, void, void>;
  planPreserveFd(ss: { fd: number; s: MSession }, fd: number, token: bigint): Generator<Plan, void, void>;
}

/** `luoVm`: context, a new IOAS (and guest RAM mapped into it), the device bound and attached, its HWPT marked, a session, PRESERVE_FD of each. */
export function* planLuoVm(luo: LuoVmHost, op: Extract<Op, { k: 'luoVm' }>): Generator<Plan, void, void> {
  const m = luo.m;
  if (!m.ctxOfSlot(op.c)) yield* planOpen(m, op.c, false);
  const ctx = m.ctxOfSlot(op.c);
  const d = m.devices[op.d];
  if (!ctx || !d) return;
  yield* planIoasAlloc(m, op.c);
  const io = ctx.ioases().at(-1);
  if (!io) return;
  // Guest RAM: a memfd of 4 pages, a word written, sealed SHRINK|GROW then SEAL, mapped into the IOAS.
  let ram: { fd: number; obj: MShmem } | undefined;
  if (op.mem) {
    const n = luo.mfd.memfds.length;
    yield* luo.mfd.planCreate(true);
    ram = luo.mfd.memfds[n];
    if (!ram) return;
    const k = luo.mfd.memfds.length - 1;
    yield* luo.mfd.planTruncate(k, LUO_SIZES.indexOf(4));
    yield* luo.mfd.planMmap(k, 0, true);
    yield* luo.mfd.planAccess({ k: 'mfdPoke', w: 0, pg: 1, off: 8 * op.token, words: 1, val: op.c + 7 * op.d });
    yield* luo.mfd.planSeal(k, LUO_SEALS.indexOf(F_SEAL_SHRINK | F_SEAL_GROW));
    if (op.flaw !== 1) yield* luo.mfd.planSeal(k, LUO_SEALS.indexOf(F_SEAL_SEAL));
    const at = { kind: 0, idx: 0, dPg: 0, dB: 0 };
    yield* planMapFile(m, { k: 'mapFile', c: op.c, ioas: ctx.ioases().indexOf(io), file: 6, startPg: 0, lenPg: 4, fixed: false, at, r: true, w: true }, { fd: ram.fd, file: ram.obj, seals: ram.obj.seals });
    if (op.flaw === 1) yield* luo.mfd.planSeal(k, LUO_SEALS.indexOf(F_SEAL_SEAL));
  }
  if (!d.bound) yield* planBind(m, op.d, op.c);
  if (d.bound?.ctx !== ctx) return;
  yield* planAttachTo(m, op.d, io.id);
  if (!d.attached || d.xlate.k !== 'hwpt' || d.xlate.h.ioas !== io) return;
  const h = d.xlate.h;
  yield* luo.planMark(op.c, ctx.hwpts().indexOf(h), op.token);
  let ss = luo.sessions.find((x) => !x.s.incoming);
  if (!ss) {
    yield* luo.planSessionIoctl(false, luo.outgoing.length);
    ss = luo.sessions.find((x) => !x.s.incoming);
  }
  if (!ss) return;
  const free = (): bigint => LUO_TOKENS.find((t) => !ss!.s.files.some((f) => f.token === t)) ?? LUO_TOKENS[0]!;
  if (ram && luo.mfd.memfds.includes(ram) && op.flaw !== 2) yield* luo.planPreserveFd(ss, ram.fd, free());
  yield* luo.planPreserveFd(ss, ctx.fd!, free());
  if (op.dev && d.fd !== null) yield* luo.planPreserveFd(ss, d.fd, free());
}
