// The upstream flow's model (Linux 7.3: kernel/liveupdate/luo_core.c, luo_session.c, luo_file.c,
// mm/memfd.c, mm/memfd_luo.c, kernel/fail_function.c; the errnos the real kernel gave in
// oracle/sequences/95-luo.seq): memfds with seals, /dev/liveupdate (one opener), sessions,
// PRESERVE_FD / RETRIEVE_FD / FINISH / GET_NAME, closing a session (unpreserve, or finish in the
// next kernel), the reboot (every file frozen, sessions serialised, KHO finalised, or the errno of
// an injected failure with nothing changed), the next kernel's sessions (each retrieved once, its
// files in any order, the same bytes, the seals of PRESERVE_FD), and what is left unretrieved
// dropped at the next kexec. Preserved files go through a per-kind handler model
// (LUO_FILE_MODELS, as LUO's file handlers): memfd (luo-files.ts); iommufd and VFIO cdev (the iommu
// live-update series, luo-iommu.ts) across the reboot, with IOMMU_HWPT_LU_SET_PRESERVE, the frozen
// IOAS, restored domains, can_finish and the PCI and iommu FLBs; failures injected at the freeze,
// finalise and preserve sites (luo-fail.ts).
import {
  F_GET_SEALS,
  IOMMU_HWPT_LU_SET_PRESERVE,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LINUX_REBOOT_CMD_KEXEC,
  O_RDWR,
} from '../../index.js';
import type { Op } from '../ops.js';
import { planAttachTo, planBind } from './device.js';
import { planMapFile } from './ioas.js';
import { khoDump, jump, planAfterJump, planKho } from './liveupdate.js';
import { copyAttr, freshAttr, injectAt, LUO_FAIL_ERRNOS, planArm, shouldFail, type FaultAttr } from './luo-fail.js';
import { LuoMemfds } from './luo-memfd.js';
import { planLuoVm } from './luo-vm.js';
import { LUO_NAMES, LUO_TOKENS, MEMFD_MODEL, type FdTarget, type LuoEnv, type LuoFlbs, type MLuoFile, type MSession, type MShmem } from './luo-files.js';
import { isIommuFile, IOMMUFD_MODEL, LUO_FILE_MODELS, markedHwpts, VFIO_MODEL, type IommufdPreserved, type VfioPreserved } from './luo-iommu.js';
import { errs, hex, okAny, okv, type Alt, type MCtx, type MDevice, type MHwpt, type ModelState, type Plan } from './state.js';

export { LUO_FAIL_ERRNOS } from './luo-fail.js';
export { F_ALL_SEALS, LUO_SEALS, LUO_SIZES, VA_LUO, WIN_PAGES, WINDOWS } from './luo-memfd.js';
export { LUO_NAMES, LUO_TOKENS, type FdTarget, type LuoFileModel, type MLuoFile, type MSession, type MShmem } from './luo-files.js';
export { LUO_FILE_MODELS } from './luo-iommu.js';

/** The failure sites (kernel/fail_function.ts INJECTABLE) a reboot operation arms: 1, 2. */
export const LUO_SITES = ['', 'luo_file_freeze_one', 'kho_finalize'] as const;
/** The sites a PRESERVE_FD operation arms (its `inject` 1..3): the iommu FLB's, iommufd's and VFIO's preserve. */
export const LUO_PRESERVE_SITES = ['', 'iommu_liveupdate_flb_preserve', 'iommufd_liveupdate_preserve', 'vfio_pci_liveupdate_preserve'] as const;
/** An fd no one holds (EBADF). */
const BAD_FD = 999;

const freshFlbs = (): LuoFlbs => ({ pciHeld: new Set(), pciFiles: 0, iommuFiles: 0, claimed: new Map(), domains: new Map() });

const nameBytes = (n: string | Uint8Array): Uint8Array => (typeof n === 'string' ? new TextEncoder().encode(n) : n);
/** The name as the kernel keys it (up to the NUL, or all 64 bytes). */
const nameKey = (n: string | Uint8Array): string => {
  const b = nameBytes(n);
  const z = b.indexOf(0);
  return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
};

/** The LUO side of a fuzzed host, beside the RFC model it shares the VMM and the kernel with. */
export class LuoModel {
  readonly enabled: boolean;
  outgoing: MSession[] = [];
  incoming: MSession[] = [];
  fa = freshAttr();
  // The VMM's fds and mappings.
  dev: number | null = null;
  sessions: { fd: number; s: MSession }[] = [];
  readonly mfd: LuoMemfds;
  pipe: [number, number] | null = null;
  /** The kexec image is loaded (a failed reboot keeps it). */
  private loaded = false;

  /** The next kernel's view of the previous one's FLBs. */
  flb = freshFlbs();
  private readonly env: LuoEnv;
  /** At the jump: what each preserved file (by its id) serialised. */
  private readonly serialised = new Map<unknown, unknown>();

  constructor(readonly m: ModelState) {
    this.enabled = m.cfg.flow === 'luo';
    this.mfd = new LuoMemfds(m);
    const self = this;
    this.env = {
      m,
      get flb() {
        return self.flb;
      },
      preservedIn: (id, s) => !s.incoming && s.files.some((f) => f.handler.preservedId(f.obj) === id),
      outgoingFile: (id) => this.outgoingFile(id),
      serOf: (id) => this.serialised.get(id),
    };
    // The sessions close with the VMM, while what they finish with (bound devices) is still there.
    m.exitFirstHooks.push(() => {
      for (const { s } of this.sessions) this.release(s);
      this.sessions = [];
    });
    m.exitHooks.push(() => this.vmmGone());
    m.jumpHooks.push(() => this.nextKernel());
    m.luoHolds = (o) => this.held(o);
    m.luoPinned = (d) => this.pinned(d);
    m.luoHoldsHwpt = (h) => this.holdsHwpt(h);
    m.luoOpenErr = (i) => (this.flb.pciHeld.has(i) ? 'EBUSY' : null);
    m.luoBindErr = (i, ctx) => (this.flb.claimed.has(i) && this.flb.claimed.get(i) !== ctx ? 'EBUSY' : null);
    m.luoExitBlocked = () => this.exitBlocked();
    m.luoIommuState = () =>
      this.outgoing.some((s) => s.files.some((f) => (f.handler === IOMMUFD_MODEL && (f.obj as IommufdPreserved).hwpts.length > 0) || (f.handler === VFIO_MODEL && (f.obj as VfioPreserved).hwpt)));
  }

  private outgoingFile(id: unknown): MLuoFile | undefined {
    for (const s of this.outgoing) for (const f of s.files) if (f.handler.preservedId(f.obj) === id) return f;
    return undefined;
  }

  /** Preserved in an outgoing session by VFIO. */
  private pinned(d: MDevice): boolean {
    return !!this.outgoingFile(d);
  }

  /** An HWPT an outgoing preserved iommufd serialised (it holds it until unpreserve). */
  private holdsHwpt(h: MHwpt): boolean {
    return this.outgoing.some((s) => s.files.some((f) => f.handler === IOMMUFD_MODEL && (f.obj as IommufdPreserved).hwpts.includes(h)));
  }

  /**
   * A reboot the model does not follow: an iommufd handed over twice (LUO and the RFC's persistent
   * iommufds), or the IOMMU unit's state preserved by LUO (a device with IOMMU state) while the
   * RFC's handover has domains too (the driver adopts one of the two).
   */
  private rebootExcluded(): boolean {
    const files = this.outgoing.flatMap((s) => s.files);
    if (files.some((f) => f.handler === IOMMUFD_MODEL && (f.obj as IommufdPreserved).obj.pid > 0)) return true;
    const unit = files.some((f) => f.handler === VFIO_MODEL && (f.obj as VfioPreserved).hwpt);
    return unit && (this.m.liveCtxs().some((c) => c.pid > 0) || !!this.m.snapshot?.length);
  }

  /** What a reboot hands over, for the coverage: the iommu files and whether a domain and a device's IOMMU state go. */
  private rebootTag(): string | undefined {
    const files = this.outgoing.flatMap((s) => s.files);
    const fd = files.filter((f) => f.handler === IOMMUFD_MODEL);
    const vf = files.filter((f) => f.handler === VFIO_MODEL);
    if (!fd.length && !vf.length) return undefined;
    const hw = fd.some((f) => (f.obj as IommufdPreserved).hwpts.length) ? '+domain' : '';
    const dev = vf.some((f) => (f.obj as VfioPreserved).hwpt) ? '+device-on-domain' : '';
    return `reboot with ${fd.length ? 'iommufd' : ''}${fd.length && vf.length ? '+' : ''}${vf.length ? 'vfio' : ''}${hw}${dev}${files.length > fd.length + vf.length ? '+memfd' : ''}`;
  }

  /** An incoming session that cannot finish now. */
  private canFinish(s: MSession): boolean {
    return s.files.every((f) => !f.handler.canFinish || f.handler.canFinish(f, this.env));
  }

  /** The VMM's exit would leave what the model does not follow: an iommufd or VFIO file LUO keeps alive after the exit (its session cannot finish). */
  private exitBlocked(): boolean {
    return this.incoming.some((s) => s.files.some((f) => f.retrieved !== undefined && isIommuFile(f)) && (!this.sessions.some((x) => x.s === s) || !this.canFinish(s)));
  }

  /** The VMM's fds are gone (exit, kexec): sessions released, mappings gone. */
  private vmmGone(): void {
    for (const { s } of this.sessions) this.release(s);
    this.mfd.gone();
    this.dev = null;
    this.sessions = [];
    this.pipe = null;
  }

  /** The jump: outgoing sessions become the next kernel's incoming ones; the rest is dropped. */
  private nextKernel(): void {
    this.sessions = []; // their sessions were serialised, not released
    this.vmmGone();
    // The FLBs the previous kernel serialised; what it left unretrieved or unfinished is dropped.
    this.flb = freshFlbs();
    const ser = (f: MLuoFile): unknown => {
      const z = f.handler.serialize(f.obj, f, this.env);
      this.serialised.set(f.handler.preservedId(f.obj), z);
      return z;
    };
    this.incoming = this.outgoing.map((s) => ({
      name: s.name,
      incoming: true,
      retrieved: false,
      files: s.files.map((f) => ({ token: f.token, handler: f.handler, obj: null, ser: ser(f) })),
    }));
    this.serialised.clear();
    this.outgoing = [];
    this.fa = freshAttr();
    this.loaded = false;
  }

  /**
   * `luo_session_release`: an outgoing session unpreserves its files; an incoming one finishes and
   * goes, unless a file cannot finish: then LUO keeps it (and its files) until the next update.
   */
  private release(s: MSession): void {
    if (s.incoming) {
      if (!this.canFinish(s)) return;
      this.finish(s);
      this.incoming = this.incoming.filter((x) => x !== s);
    } else {
      for (const f of [...s.files].reverse()) f.handler.unpreserve(f.obj, this.env);
      s.files = [];
      this.outgoing = this.outgoing.filter((x) => x !== s);
    }
  }

  /** `luo_file_finish`: each file finishes, newest first; LUO lets go of it (what was never retrieved is freed). */
  private finish(s: MSession): void {
    for (const f of [...s.files].reverse()) f.handler.finish?.(f, this.env);
    s.files = [];
  }

  /** `luo_preserved_files`: what is preserved in an outgoing session or retrieved and not finished. */
  private held(id: unknown): boolean {
    for (const s of this.outgoing) for (const f of s.files) if (f.handler.preservedId(f.obj) === id) return true;
    for (const s of this.incoming) for (const f of s.files) if (f.retrieved !== undefined && f.handler.retrievedId(f.retrieved) === id) return true;
    return false;
  }

  /** Pages pinned by preserved files (they count in host.kernel.pinnedPages()). */
  pinnedPages(): number {
    let n = 0;
    for (const s of this.outgoing) for (const f of s.files) n += f.handler.pinned(f.obj);
    return n;
  }

  /** What fd `fd` of the VMM is. */
  private targetOf(fd: number): FdTarget {
    const mf = this.mfd.memfds.find((x) => x.fd === fd);
    if (mf) return { kind: 'memfd', obj: mf.obj };
    if (this.sessions.some((x) => x.fd === fd)) return { kind: 'session' };
    if (fd === this.dev) return { kind: 'luodev' };
    if (this.pipe?.includes(fd)) return { kind: 'pipe' };
    const ctx = this.m.slots.find((c) => c && !c.dead && c.fd === fd);
    if (ctx) return { kind: 'iommufd', obj: ctx };
    const d = this.m.devices.find((x) => x.fd === fd);
    if (d) return { kind: 'vfio', obj: d };
    return this.m.fds.has(fd) ? { kind: 'other' } : { kind: 'none' };
  }

  *planClose(fd: number, what: string, then: () => void): Generator<Plan, void, void> {
    yield { what: `close ${fd} (${what})`, run: (s) => s.p.close(fd), alts: [okAny(() => { this.m.freeFd(fd); then(); })] };
  }

  // ---- /dev/liveupdate and sessions ----

  /** open /dev/liveupdate: ENOENT without LUO, EBUSY while the VMM has it open. */
  *planOpen(): Generator<Plan, void, void> {
    const fd = this.m.peekFd();
    const alt = !this.enabled ? errs(['ENOENT']) : this.dev !== null ? errs(['EBUSY']) : okv(fd, () => { this.m.allocFd(); this.dev = fd; });
    yield { what: 'open /dev/liveupdate', run: (s) => s.p.open('/dev/liveupdate', O_RDWR), alts: [alt] };
  }

  *planCloseDev(): Generator<Plan, void, void> {
    if (this.dev !== null) yield* this.planClose(this.dev, '/dev/liveupdate', () => (this.dev = null));
  }

  /** CREATE_SESSION or RETRIEVE_SESSION (opening the device first if need be). */
  *planSessionIoctl(retrieve: boolean, nameIdx: number): Generator<Plan, void, void> {
    if (this.dev === null) yield* this.planOpen();
    const dev = this.dev;
    if (dev === null) return;
    const name = LUO_NAMES[nameIdx % LUO_NAMES.length]!;
    const key = nameKey(name);
    const fd = this.m.peekFd();
    let alt: Alt;
    if (!retrieve) {
      const len = nameBytes(name).indexOf(0) < 0 ? nameBytes(name).length : nameBytes(name).indexOf(0);
      if (len === 0 || len > 63) alt = errs(['EINVAL']);
      else if (this.outgoing.some((s) => s.name === key)) alt = errs(['EEXIST']);
      else
        alt = okv(fd, () => {
          this.m.allocFd();
          const s: MSession = { name: key, incoming: false, retrieved: false, files: [] };
          this.outgoing.push(s);
          this.sessions.push({ fd, s });
        });
    } else {
      const s = this.incoming.find((x) => x.name === key);
      if (!s) alt = errs(['ENOENT']);
      else if (s.retrieved) alt = errs(['EINVAL']);
      else
        alt = okv(fd, () => {
          this.m.allocFd();
          s.retrieved = true;
          this.sessions.push({ fd, s });
        });
    }
    yield {
      what: `ioctl ${dev} LIVEUPDATE_IOCTL_${retrieve ? 'RETRIEVE' : 'CREATE'}_SESSION ${JSON.stringify(typeof name === 'string' ? name : '<64 bytes, no NUL>')}`,
      run: (s) => (retrieve ? s.p.ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name }).fd : s.p.ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, { name }).fd),
      alts: [alt],
    };
  }

  private sessionAt(pick: number) {
    return this.sessions.length ? this.sessions[pick % this.sessions.length]! : null;
  }

  /** A session of the kind a command applies to (`incoming`) for picks 0..2, any session for 3 (EINVAL if the wrong kind). */
  private sessionFor(pick: number, incoming: boolean) {
    const pool = this.sessions.filter((x) => x.s.incoming === incoming);
    return pick % 4 !== 3 && pool.length ? pool[pick % pool.length]! : this.sessionAt(pick);
  }

  /**
   * PRESERVE_FD in luo_preserve_file's order: an incoming session EINVAL, then a token in use
   * EEXIST, a bad fd EBADF, no handler ENOENT, preserved (or retrieved and not finished) EBUSY.
   * src: 0 a memfd, 1 a session fd, 2 /dev/liveupdate, 3 a pipe, 4 a closed fd, 5 an iommufd or
   * guestmemfs fd of the RFC side, 6 a VFIO device fd. With `inject` 1..3 a preserve site is armed
   * first (LUO_PRESERVE_SITES, its next call failing with LUO_FAIL_ERRNOS[err]).
   */
  *planPreserve(op: Extract<Op, { k: 'luoPreserve' }>): Generator<Plan, void, void> {
    const ss = this.sessionFor(op.s, false);
    if (!ss) return;
    if (op.src === 3 && !this.pipe) {
      const r = this.m.peekFd();
      const w = this.m.peekFd(r);
      yield { what: 'pipe', run: (sy) => sy.p.pipe(), alts: [okv([r, w], () => { this.m.allocFd(); this.m.allocFd(); this.pipe = [r, w]; })] };
    }
    const rfc = [...this.m.slots.filter((c) => c && !c.dead).map((c) => c!.fd!), ...this.m.fileFds.filter((f) => f).map((f) => f!.fd)];
    const devs = this.m.devices.flatMap((d) => (d.fd !== null ? [d.fd] : []));
    const fd =
      op.src === 0 ? (this.mfd.at(op.pick)?.fd ?? BAD_FD)
      : op.src === 1 ? this.sessionAt(op.pick)!.fd
      : op.src === 2 ? (this.dev ?? BAD_FD)
      : op.src === 3 ? this.pipe![op.pick % 2]!
      : op.src === 5 && rfc.length ? rfc[op.pick % rfc.length]!
      : op.src === 6 && devs.length ? devs[op.pick % devs.length]!
      : BAD_FD;
    const site = LUO_PRESERVE_SITES[(op.inject ?? 0) % LUO_PRESERVE_SITES.length]!;
    if (site) yield* planArm(this.m, () => this.fa, site, 1, LUO_FAIL_ERRNOS[(op.err ?? 0) % LUO_FAIL_ERRNOS.length]!);
    yield* this.planPreserveFd(ss, fd, LUO_TOKENS[op.token % LUO_TOKENS.length]!);
  }

  /**
   * PRESERVE_FD of `fd` under `token`: LUO's checks, then the FLBs' preserve on their first file
   * (the iommu FLB with the first iommufd: a failure site), the handler's preserve (its failure
   * site at entry, then its own refusal); any failure leaves nothing preserved.
   */
  *planPreserveFd(ss: { fd: number; s: MSession }, fd: number, token: bigint): Generator<Plan, void, void> {
    const s = ss.s;
    const t = this.targetOf(fd);
    const fh = LUO_FILE_MODELS.find((h) => h.canPreserve(t));
    // The RFC's KHO is active: LUO's IOMMU state would share the VT-d tables with its handover (ModelState.luoIommuState).
    if (this.m.khoActive && (fh === IOMMUFD_MODEL || fh === VFIO_MODEL)) return;
    const fa = copyAttr(this.fa);
    const withFa = (a: Alt): Alt => ({ ...a, then: (o) => { this.fa = fa; a.then?.(o); } });
    let alt: Alt;
    if (s.incoming) alt = errs(['EINVAL']);
    else if (s.files.some((f) => f.token === token)) alt = errs(['EEXIST']);
    else if (t.kind === 'none') alt = errs(['EBADF']);
    else if (!fh) alt = errs(['ENOENT']);
    else if (this.held(fh.id(t))) alt = errs(['EBUSY']);
    else {
      const firstIommufd = fh === IOMMUFD_MODEL && !this.outgoing.some((x) => x.files.some((f) => f.handler === IOMMUFD_MODEL));
      const injected =
        (firstIommufd ? injectAt(fa, 'iommu_liveupdate_flb_preserve') : null) ??
        (fh === IOMMUFD_MODEL ? injectAt(fa, 'iommufd_liveupdate_preserve') : fh === VFIO_MODEL ? injectAt(fa, 'vfio_pci_liveupdate_preserve') : null);
      const own = injected ?? fh.preserveErr?.(t, s, this.env) ?? null;
      alt = withFa(own ? errs([own]) : okAny(() => s.files.push({ token, handler: fh, obj: fh.preserve(t, s, this.env) })));
    }
    const tag = `PRESERVE_FD ${fh?.compatible ?? t.kind}${fh === IOMMUFD_MODEL && markedHwpts((t as { obj: MCtx }).obj).length ? '+marked' : fh === VFIO_MODEL && (t as { obj: MDevice }).obj.attached ? '+attached' : ''}`;
    yield { what: `ioctl ${ss.fd} LIVEUPDATE_SESSION_PRESERVE_FD fd ${fd} token ${hex(token)}`, run: (sy) => void sy.p.ioctl(ss.fd, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token }), alts: [alt], tag };
  }

  /**
   * RETRIEVE_FD: an outgoing session EINVAL; a token not there (or finished) ENOENT; again: the
   * same file (memfds; an iommufd or VFIO file is retrieved once, into a free context slot).
   */
  *planRetrieveFd(pick: number, tokenIdx: number): Generator<Plan, void, void> {
    const ss = this.sessionFor(pick, true);
    if (!ss) return;
    const token = LUO_TOKENS[tokenIdx % LUO_TOKENS.length]!;
    const f = ss.s.incoming ? ss.s.files.find((x) => x.token === token) : undefined;
    if (f?.handler.retrievable && !f.handler.retrievable(f, this.env)) return;
    yield* this.planRetrieveFile(ss, token, f);
  }

  private *planRetrieveFile(ss: { fd: number; s: MSession }, token: bigint, f: MLuoFile | undefined): Generator<Plan, void, void> {
    const fd = this.m.peekFd();
    const alt = !ss.s.incoming
      ? errs(['EINVAL'])
      : !f
        ? errs(['ENOENT'])
        : okv(fd, () => {
            this.m.allocFd();
            if (f.retrieved === undefined) f.retrieved = f.handler.retrieve(f.ser, ss.s, this.env);
            if (f.handler === MEMFD_MODEL) this.mfd.memfds.push({ fd, obj: f.retrieved as MShmem });
            else f.handler.install(f.retrieved, fd, this.env);
          });
    const tag = `RETRIEVE_FD ${f?.handler.compatible ?? '-'}${f?.retrieved !== undefined ? ' again' : ''}`;
    yield { what: `ioctl ${ss.fd} LIVEUPDATE_SESSION_RETRIEVE_FD token ${hex(token)}`, run: (s) => s.p.ioctl(ss.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, { token }).fd, alts: [alt], tag };
  }

  /** FINISH: an outgoing session EINVAL; EBUSY (nothing done) while a file's can_finish refuses; else every file finishes. */
  *planFinish(pick: number): Generator<Plan, void, void> {
    const ss = this.sessionFor(pick, true);
    if (ss) yield* this.planFinishSession(ss);
  }

  private *planFinishSession(ss: { fd: number; s: MSession }): Generator<Plan, void, void> {
    const alt = !ss.s.incoming ? errs(['EINVAL']) : this.canFinish(ss.s) ? okAny(() => this.finish(ss.s)) : errs(['EBUSY']);
    const tag = `FINISH ${ss.s.files.some(isIommuFile) ? 'iommufd/vfio' : 'memfd'}`;
    yield { what: `ioctl ${ss.fd} LIVEUPDATE_SESSION_FINISH`, run: (s) => void s.p.ioctl(ss.fd, LIVEUPDATE_SESSION_FINISH, {}), alts: [alt], tag };
  }

  *planGetName(ss: { fd: number; s: MSession }): Generator<Plan, void, void> {
    const want = new Uint8Array(64);
    want.set(new TextEncoder().encode(ss.s.name));
    yield { what: `ioctl ${ss.fd} LIVEUPDATE_SESSION_GET_NAME`, run: (s) => s.p.ioctl(ss.fd, LIVEUPDATE_SESSION_GET_NAME, {}).name, alts: [okv(want)] };
  }

  *planCloseSession(pick: number): Generator<Plan, void, void> {
    const ss = this.sessionAt(pick);
    if (ss) yield* this.planClose(ss.fd, `session ${ss.s.name}`, () => { this.sessions = this.sessions.filter((x) => x !== ss); this.release(ss.s); });
  }

  // ---- the reboot ----

  /**
   * What reboot does now: every preserved file's luo_file_freeze_one (each a should_fail when
   * injected), then, with sessions and KHO not active yet, kho_finalize (EAGAIN when it fails).
   */
  private predictReboot(): { err: string | null; fa: FaultAttr } {
    const fa = copyAttr(this.fa);
    if (!this.enabled) return { err: null, fa };
    const freeze = fa.injected.get('luo_file_freeze_one');
    if (freeze) for (const s of this.outgoing) for (const _f of s.files) if (shouldFail(fa)) return { err: freeze, fa };
    if (this.outgoing.length && !this.m.khoActive && fa.injected.has('kho_finalize') && shouldFail(fa)) return { err: 'EAGAIN', fa };
    return { err: null, fa };
  }

  /**
   * The reboot of the LUO world (and the `kexec` operation there): KHO activated by userspace first
   * if `kho` (the RFC's way), a failure site armed if `inject`, kexec_file_load, reboot; a failed
   * reboot changes nothing (and is retried if `retry`); then the next kernel and a new VMM.
   */
  *planReboot(op: { kho: boolean; inject: number; nth: number; err: number; retry: boolean; rehydrate: number; viaHwpt: boolean; retrieve?: boolean }): Generator<Plan, void, void> {
    const m = this.m;
    if (this.rebootExcluded()) return;
    if (op.kho && !m.khoActive) yield* planKho(m, true);
    const site = LUO_SITES[op.inject % LUO_SITES.length]!;
    if (site) yield* planArm(m, () => this.fa, site, op.nth, LUO_FAIL_ERRNOS[op.err % LUO_FAIL_ERRNOS.length]!);
    if (!this.loaded) yield { what: 'kexec_file_load', run: (s) => s.p.kexecFileLoad({}), alts: [okAny(() => (this.loaded = true))] };
    for (let attempt = 0; attempt < (op.retry ? 2 : 1); attempt++) {
      const k0 = m.kexecs;
      const { err, fa } = this.predictReboot();
      const alt = err
        ? errs([err], () => (this.fa = fa))
        : okAny(() => {
            // liveupdate_reboot: with sessions, KHO is finalised (the RFC side is serialised with it).
            if (this.outgoing.length && !m.khoActive) khoDump(m);
            jump(m);
          });
      yield { what: `reboot(LINUX_REBOOT_CMD_KEXEC)${err ? ` (expect ${err})` : ''}`, run: (s) => s.p.reboot(LINUX_REBOOT_CMD_KEXEC), alts: [alt], tag: this.rebootTag() };
      if (m.kexecs !== k0) {
        yield* planAfterJump(m, op.rehydrate, op.viaHwpt);
        if (op.retrieve) yield* this.planRehydrate(op.rehydrate);
        return;
      }
    }
  }

  /**
   * The VMM takes its preserved state back: every incoming session retrieved and each of its files
   * (level ≥ 1); then (level 2) each retrieved device bound to the iommufd that owns it (or the
   * first context), attached again to the HWPT it is restored on, and every session finished.
   */
  private *planRehydrate(level: number): Generator<Plan, void, void> {
    if (level < 1) return;
    for (const s of this.incoming) {
      if (s.retrieved) continue;
      const idx = LUO_NAMES.findIndex((n) => nameKey(n) === s.name);
      if (idx >= 0) yield* this.planSessionIoctl(true, idx);
    }
    for (const ss of this.sessions.filter((x) => x.s.incoming)) {
      for (const f of ss.s.files) if (f.retrieved === undefined && (!f.handler.retrievable || f.handler.retrievable(f, this.env))) yield* this.planRetrieveFile(ss, f.token, f);
    }
    if (level < 2) return;
    const m = this.m;
    const todo = m.devices.flatMap((d, i) => (d.fd !== null && !d.bound && this.retrievedDevice(d) ? [i] : []));
    for (const i of todo) {
      const d = m.devices[i]!;
      const owner = this.flb.claimed.get(i) ?? m.slots.find((c) => c && !c.dead) ?? null;
      if (owner?.slot === null || owner?.slot === undefined) continue;
      yield* planBind(m, i, owner.slot);
      if (d.bound && !d.attached && d.xlate.k === 'hwpt' && d.xlate.ctx === d.bound.ctx) yield* planAttachTo(m, i, d.xlate.h.id);
    }
    for (const ss of this.sessions.filter((x) => x.s.incoming)) yield* this.planFinishSession(ss);
  }

  private retrievedDevice(d: MDevice): boolean {
    return this.incoming.some((s) => s.files.some((f) => f.handler === VFIO_MODEL && f.retrieved === d));
  }

  // ---- the iommu live-update series ----

  /**
   * IOMMU_HWPT_LU_SET_PRESERVE (ENOTTY without LUO): ENOENT for an id that is not a paging HWPT,
   * EBUSY once the iommufd is preserved (its HWPT set was serialised), EADDRINUSE for a token
   * another marked HWPT of the context has; marking again replaces the token.
   */
  *planMark(c: number, pick: number, token: number): Generator<Plan, void, void> {
    const ctx = this.m.ctxOfSlot(c);
    if (!ctx) return;
    const hs = ctx.hwpts();
    const io = ctx.ioases();
    const id = pick < 3 && hs.length ? hs[pick % hs.length]!.id : io.length && pick % 2 ? io[0]!.id : 99;
    const h = hs.find((x) => x.id === id);
    const tok = 1 + token;
    const alt = !this.enabled
      ? errs(['ENOTTY'])
      : !h
        ? errs(['ENOENT'])
        : this.outgoingFile(ctx)
          ? errs(['EBUSY'])
          : hs.some((x) => x !== h && x.luToken === tok)
            ? errs(['EADDRINUSE'])
            : okAny(() => (h.luToken = tok));
    const fd = ctx.fd!;
    yield { what: `IOMMU_HWPT_LU_SET_PRESERVE hwpt ${id} token ${tok}`, run: (s) => void s.p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: id, hwpt_token: tok }), alts: [alt], tag: 'HWPT_LU_SET_PRESERVE' };
  }



  /** The deep check's LUO part: every memfd's seals, every session's name. */
  *planCheck(): Generator<Plan, void, void> {
    for (const mf of this.mfd.memfds) yield { what: `fcntl ${mf.fd} F_GET_SEALS`, run: (s) => s.p.fcntl(mf.fd, F_GET_SEALS), alts: [okv(mf.obj.seals)] };
    for (const ss of this.sessions) yield* this.planGetName(ss);
  }

  /** One LUO operation. */
  *plan(op: Op): Generator<Plan, void, void> {
    switch (op.k) {
      case 'mfdCreate':
        return yield* this.mfd.planCreate(op.seal);
      case 'mfdClose':
        return yield* this.mfd.planMemfdClose(op.m);
      case 'mfdTruncate':
        return yield* this.mfd.planTruncate(op.m, op.size);
      case 'mfdSeal':
        return yield* this.mfd.planSeal(op.m, op.seals);
      case 'mfdMmap':
        return yield* this.mfd.planMmap(op.m, op.w, op.write);
      case 'mfdPoke':
      case 'mfdPeek':
        return yield* this.mfd.planAccess(op);
      case 'luoOpen':
        return yield* this.planOpen();
      case 'luoCloseDev':
        return yield* this.planCloseDev();
      case 'luoCreate':
        return yield* this.planSessionIoctl(false, op.name);
      case 'luoRetrieve':
        return yield* this.planSessionIoctl(true, op.name);
      case 'luoPreserve':
        return yield* this.planPreserve(op);
      case 'luoRetrieveFd':
        return yield* this.planRetrieveFd(op.s, op.token);
      case 'luoFinish':
        return yield* this.planFinish(op.s);
      case 'luoGetName': {
        const ss = this.sessionAt(op.s);
        return ss ? yield* this.planGetName(ss) : undefined;
      }
      case 'luoCloseSession':
        return yield* this.planCloseSession(op.s);
      case 'luoReboot':
        return yield* this.planReboot({ ...op, kho: false, viaHwpt: false });
      case 'luoMark':
        return yield* this.planMark(op.c, op.pick, op.token);
      case 'luoVm':
        return this.enabled ? yield* planLuoVm(this, op) : undefined;
      case 'mfdMapFile': {
        const mf = this.mfd.at(op.m);
        if (!mf) return;
        const at = { kind: 0, idx: 0, dPg: 0, dB: 0 };
        const mapOp = { k: 'mapFile' as const, c: op.c, ioas: op.ioas, file: 6, startPg: 0, lenPg: op.lenPg || mf.obj.npages, fixed: false, at, r: true, w: true };
        return yield* planMapFile(this.m, mapOp, { fd: mf.fd, file: mf.obj, seals: mf.obj.seals });
      }
      default:
        return;
    }
  }
}
