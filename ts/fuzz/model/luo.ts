// The upstream flow's model (Linux 7.3: kernel/liveupdate/luo_core.c, luo_session.c, luo_file.c,
// mm/memfd.c, mm/memfd_luo.c, kernel/fail_function.c; the errnos the real kernel gave in
// oracle/sequences/95-luo.seq): memfds with seals, /dev/liveupdate (one opener), sessions,
// PRESERVE_FD / RETRIEVE_FD / FINISH / GET_NAME, closing a session (unpreserve, or finish in the
// next kernel), the reboot (every file frozen, sessions serialised, KHO finalised, or the errno of
// an injected failure with nothing changed), the next kernel's sessions (each retrieved once, its
// files in any order, the same bytes, the seals of PRESERVE_FD), and what is left unretrieved
// dropped at the next kexec. Preserved files go through a per-kind handler model
// (LUO_FILE_MODELS, as LUO's file handlers): memfd; iommufd and VFIO cdev (the iommu live-update
// series) for PRESERVE_FD and unpreserve only: while one is preserved the generator neither reboots
// nor closes / unbinds it (luo-files.ts).
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LINUX_REBOOT_CMD_KEXEC,
  MAP_FIXED,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
} from '../../index.js';
import { PAGE } from '../intervals.js';
import type { Op } from '../ops.js';
import { khoDump, jump, planAfterJump, planKho } from './liveupdate.js';
import { crossesReboot, LUO_FILE_MODELS, type FdTarget, type MSession, type MShmem } from './luo-files.js';
import { errs, hex, okAny, okv, pattern, type Alt, type ModelState, type Plan } from './state.js';

export { LUO_FILE_MODELS, type FdTarget, type LuoFileModel, type MLuoFile, type MSession, type MShmem } from './luo-files.js';

export const F_ALL_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;
/** Session names an operation picks: three good ones, the longest good one, empty, 64 bytes without a NUL. */
export const LUO_NAMES: readonly (string | Uint8Array)[] = ['vm-a', 'vm-b', 'vm-c', 'L'.repeat(63), '', new Uint8Array(64).fill(0x78)];
export const LUO_TOKENS: readonly bigint[] = [1n, 2n, 3n, 0xffff_ffff_ffff_ffffn];
/** Seal sets F_ADD_SEALS tries (0x40 is no seal: EINVAL). */
export const LUO_SEALS: readonly number[] = [F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE, F_SEAL_EXEC, F_SEAL_SHRINK | F_SEAL_GROW, 0, 0x40];
/** memfd sizes ftruncate tries, in pages (512: one 2 MiB folio). */
export const LUO_SIZES: readonly number[] = [0, 1, 2, 3, 4, 16, 17, 512, 513];
/** The errnos an injected failure returns. */
export const LUO_FAIL_ERRNOS: readonly string[] = ['ENOSPC', 'ENOMEM', 'EIO', 'EBUSY', 'EAGAIN', 'EPERM'];
const ERRNO_NR: Record<string, number> = { ENOSPC: 28, ENOMEM: 12, EIO: 5, EBUSY: 16, EAGAIN: 11, EPERM: 1 };
/** The failure sites (kernel/fail_function.ts INJECTABLE) a reboot operation arms: 1, 2. */
export const LUO_SITES = ['', 'luo_file_freeze_one', 'kho_finalize'] as const;
const FF = '/sys/kernel/debug/fail_function';

/** The VMM maps memfd windows here: window w at VA_LUO + w * WIN_STRIDE, WIN_PAGES long. */
export const VA_LUO = 0x7000_0000n;
export const WINDOWS = 3;
export const WIN_PAGES = 16;
const WIN_STRIDE = 64n * PAGE;
const MAX_MEMFDS = 4;
/** An fd no one holds (EBADF). */
const BAD_FD = 999;

/** `fei_fault_attr` and the injected functions (kernel/fail_function.ts), as the model tracks them. */
interface FaultAttr {
  probability: bigint;
  interval: bigint;
  times: number;
  count: bigint;
  injected: Map<string, string>;
}
const freshAttr = (): FaultAttr => ({ probability: 0n, interval: 1n, times: 1, count: 0n, injected: new Map() });

/** `should_fail` on a copy: whether the call fails (and the attr after it). */
function shouldFail(a: FaultAttr): boolean {
  if (a.probability === 0n || a.times === 0) return false;
  if (a.interval > 1n) {
    a.count++;
    if (a.count % a.interval !== 0n) return false;
  }
  if (a.times !== -1) a.times--;
  return true;
}

const nameBytes = (n: string | Uint8Array): Uint8Array => (typeof n === 'string' ? new TextEncoder().encode(n) : n);
/** The name as the kernel keys it (up to the NUL, or all 64 bytes). */
const nameKey = (n: string | Uint8Array): string => {
  const b = nameBytes(n);
  const z = b.indexOf(0);
  return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
};
const sealName = (v: number) => `0x${v.toString(16)}`;

/** The LUO side of a fuzzed host, beside the RFC model it shares the VMM and the kernel with. */
export class LuoModel {
  readonly enabled: boolean;
  outgoing: MSession[] = [];
  incoming: MSession[] = [];
  fa = freshAttr();
  // The VMM's fds and mappings.
  dev: number | null = null;
  sessions: { fd: number; s: MSession }[] = [];
  memfds: { fd: number; obj: MShmem }[] = [];
  wins: ({ obj: MShmem; write: boolean; counted: boolean } | null)[] = [];
  pipe: [number, number] | null = null;
  /** The kexec image is loaded (a failed reboot keeps it). */
  private loaded = false;

  constructor(private readonly m: ModelState) {
    this.enabled = m.cfg.flow === 'luo';
    m.exitHooks.push(() => this.vmmGone());
    m.jumpHooks.push(() => this.nextKernel());
    m.luoHolds = (o) => this.outgoing.some((s) => s.files.some((f) => f.handler.preservedId(f.obj) === o));
  }

  /** An outgoing session preserves a file whose handler model does not cross the reboot (iommufd, VFIO). */
  private holdsUnrebootable(): boolean {
    return this.outgoing.some((s) => s.files.some((f) => !crossesReboot(f.handler)));
  }

  /** The VMM's fds are gone (exit, kexec): sessions released, mappings gone. */
  private vmmGone(): void {
    for (const { s } of this.sessions) this.release(s);
    for (const w of this.wins) if (w?.counted) w.obj.writableMaps--;
    this.dev = null;
    this.sessions = [];
    this.memfds = [];
    this.wins = [];
    this.pipe = null;
  }

  /** The jump: outgoing sessions become the next kernel's incoming ones; the rest is dropped. */
  private nextKernel(): void {
    this.sessions = []; // their sessions were serialised, not released
    this.vmmGone();
    this.incoming = this.outgoing.map((s) => ({
      name: s.name,
      incoming: true,
      retrieved: false,
      files: s.files.map((f) => ({ token: f.token, handler: f.handler, obj: null, ser: f.handler.serialize(f.obj, f) })),
    }));
    this.outgoing = [];
    this.fa = freshAttr();
    this.loaded = false;
  }

  /** `luo_session_release`: an outgoing session unpreserves its files; an incoming one finishes and goes. */
  private release(s: MSession): void {
    if (s.incoming) {
      this.finish(s);
      this.incoming = this.incoming.filter((x) => x !== s);
    } else {
      for (const f of [...s.files].reverse()) f.handler.unpreserve(f.obj);
      s.files = [];
      this.outgoing = this.outgoing.filter((x) => x !== s);
    }
  }

  /** `luo_file_finish`: LUO lets go of every file (what was never retrieved is freed). */
  private finish(s: MSession): void {
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
    const mf = this.memfds.find((x) => x.fd === fd);
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

  // ---- memfds ----

  *planCreate(seal: boolean): Generator<Plan, void, void> {
    if (this.memfds.length >= MAX_MEMFDS) return;
    const fd = this.m.peekFd();
    yield {
      what: `memfd_create luo${seal ? ' MFD_ALLOW_SEALING' : ''}`,
      run: (s) => s.p.memfd_create('luo', seal ? MFD_ALLOW_SEALING : 0),
      alts: [okv(fd, () => {
        this.m.allocFd();
        this.memfds.push({ fd, obj: { seals: seal ? 0 : F_SEAL_SEAL, npages: 0, data: new Map(), preservedIn: null, writableMaps: 0 } });
      })],
    };
  }

  private memfdAt(pick: number) {
    return this.memfds.length ? this.memfds[pick % this.memfds.length]! : null;
  }

  *planClose(fd: number, what: string, then: () => void): Generator<Plan, void, void> {
    yield { what: `close ${fd} (${what})`, run: (s) => s.p.close(fd), alts: [okAny(() => { this.m.freeFd(fd); then(); })] };
  }

  *planMemfdClose(pick: number): Generator<Plan, void, void> {
    const mf = this.memfdAt(pick);
    if (mf) yield* this.planClose(mf.fd, 'memfd', () => (this.memfds = this.memfds.filter((x) => x !== mf)));
  }

  /** ftruncate (whole pages): the seals, then LUO's freeze (shmem_setattr). */
  *planTruncate(pick: number, sizeIdx: number): Generator<Plan, void, void> {
    const mf = this.memfdAt(pick);
    if (!mf) return;
    const { obj } = mf;
    const np = LUO_SIZES[sizeIdx % LUO_SIZES.length]!;
    let alt: Alt;
    if ((np < obj.npages && obj.seals & F_SEAL_SHRINK) || (np > obj.npages && obj.seals & F_SEAL_GROW)) alt = errs(['EPERM']);
    else if (np !== obj.npages && obj.preservedIn) alt = errs(['EPERM']);
    else
      alt = okAny(() => {
        for (const k of [...obj.data.keys()]) if (k >= np) obj.data.delete(k);
        obj.npages = np;
      });
    yield { what: `ftruncate ${mf.fd} ${np} pages`, run: (s) => s.p.ftruncate(mf.fd, BigInt(np) * PAGE), alts: [alt] };
  }

  /** F_ADD_SEALS in memfd_add_seals' order, then F_GET_SEALS. */
  *planSeal(pick: number, sealIdx: number): Generator<Plan, void, void> {
    const mf = this.memfdAt(pick);
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
      if (seals & F_SEAL_WRITE && !(obj.seals & F_SEAL_WRITE) && (obj.writableMaps > 0 || (obj.preservedIn && obj.npages > 0))) alt = errs(['EBUSY']);
      else alt = okv(0, () => (obj.seals |= seals));
    }
    const arg = LUO_SEALS[sealIdx % LUO_SEALS.length]!;
    yield { what: `fcntl ${mf.fd} F_ADD_SEALS ${sealName(arg)}`, run: (s) => s.p.fcntl(mf.fd, F_ADD_SEALS, arg), alts: [alt] };
    yield { what: `fcntl ${mf.fd} F_GET_SEALS`, run: (s) => s.p.fcntl(mf.fd, F_GET_SEALS), alts: [okv(obj.seals)] };
  }

  /** mmap MAP_SHARED|MAP_FIXED of WIN_PAGES at window `w` (replacing what was there). */
  *planMmap(pick: number, w: number, write: boolean): Generator<Plan, void, void> {
    const mf = this.memfdAt(pick);
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
      const got = reach ? (win!.obj.data.get(pg)?.slice(off, off + n) ?? new Uint8Array(n)) : null;
      yield { what: `memRead ${hex(va)} +${n}`, run: (s) => s.p.memRead(va, n), alts: [got ? okv(got) : errs(['EFAULT'])] };
      return;
    }
    const data = pattern(op.val, n);
    const ok = reach && win!.write;
    yield {
      what: `memWrite ${hex(va)} +${n}`,
      run: (s) => s.p.memWrite(va, data),
      alts: [ok ? okAny(() => {
        let p = win!.obj.data.get(pg);
        if (!p) win!.obj.data.set(pg, (p = new Uint8Array(4096)));
        p.set(data, off);
      }) : errs(['EFAULT'])],
    };
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
   * guestmemfs fd of the RFC side, 6 a VFIO device fd. Then the handler's own preserve (VFIO: an
   * attached device EINVAL, its HWPT not being marked).
   */
  *planPreserve(op: Extract<Op, { k: 'luoPreserve' }>): Generator<Plan, void, void> {
    const ss = this.sessionFor(op.s, false);
    if (!ss) return;
    const s = ss.s;
    if (op.src === 3 && !this.pipe) {
      const r = this.m.peekFd();
      const w = this.m.peekFd(r);
      yield { what: 'pipe', run: (sy) => sy.p.pipe(), alts: [okv([r, w], () => { this.m.allocFd(); this.m.allocFd(); this.pipe = [r, w]; })] };
    }
    const rfc = [...this.m.slots.filter((c) => c && !c.dead).map((c) => c!.fd!), ...this.m.fileFds.filter((f) => f).map((f) => f!.fd)];
    const devs = this.m.devices.flatMap((d) => (d.fd !== null ? [d.fd] : []));
    const fd =
      op.src === 0 ? (this.memfdAt(op.pick)?.fd ?? BAD_FD)
      : op.src === 1 ? this.sessionAt(op.pick)!.fd
      : op.src === 2 ? (this.dev ?? BAD_FD)
      : op.src === 3 ? this.pipe![op.pick % 2]!
      : op.src === 5 && rfc.length ? rfc[op.pick % rfc.length]!
      : op.src === 6 && devs.length ? devs[op.pick % devs.length]!
      : BAD_FD;
    const token = LUO_TOKENS[op.token % LUO_TOKENS.length]!;
    const t = this.targetOf(fd);
    const fh = LUO_FILE_MODELS.find((h) => h.canPreserve(t));
    let alt: Alt;
    if (s.incoming) alt = errs(['EINVAL']);
    else if (s.files.some((f) => f.token === token)) alt = errs(['EEXIST']);
    else if (t.kind === 'none') alt = errs(['EBADF']);
    else if (!fh) alt = errs(['ENOENT']);
    else if (this.held(fh.id(t))) alt = errs(['EBUSY']);
    else if (fh.preserveErr?.(t)) alt = errs([fh.preserveErr(t)!]);
    else alt = okAny(() => s.files.push({ token, handler: fh, obj: fh.preserve(t, s) }));
    yield { what: `ioctl ${ss.fd} LIVEUPDATE_SESSION_PRESERVE_FD fd ${fd} token ${hex(token)}`, run: (sy) => void sy.p.ioctl(ss.fd, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token }), alts: [alt] };
  }

  /** RETRIEVE_FD: an outgoing session EINVAL; a token not there (or finished) ENOENT; again: the same file. */
  *planRetrieveFd(pick: number, tokenIdx: number): Generator<Plan, void, void> {
    const ss = this.sessionFor(pick, true);
    if (!ss) return;
    const token = LUO_TOKENS[tokenIdx % LUO_TOKENS.length]!;
    const f = ss.s.incoming ? ss.s.files.find((x) => x.token === token) : undefined;
    const fd = this.m.peekFd();
    const alt = !ss.s.incoming
      ? errs(['EINVAL'])
      : !f
        ? errs(['ENOENT'])
        : okv(fd, () => {
            this.m.allocFd();
            if (f.retrieved === undefined) f.retrieved = f.handler.retrieve(f.ser, ss.s);
            const t = f.handler.target(f.retrieved);
            if (t.kind === 'memfd') this.memfds.push({ fd, obj: t.obj });
          });
    yield { what: `ioctl ${ss.fd} LIVEUPDATE_SESSION_RETRIEVE_FD token ${hex(token)}`, run: (s) => s.p.ioctl(ss.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, { token }).fd, alts: [alt] };
  }

  /** FINISH: an outgoing session EINVAL; else every file finishes (memfd has no can_finish). */
  *planFinish(pick: number): Generator<Plan, void, void> {
    const ss = this.sessionFor(pick, true);
    if (!ss) return;
    const alt = ss.s.incoming ? okAny(() => this.finish(ss.s)) : errs(['EINVAL']);
    yield { what: `ioctl ${ss.fd} LIVEUPDATE_SESSION_FINISH`, run: (s) => void s.p.ioctl(ss.fd, LIVEUPDATE_SESSION_FINISH, {}), alts: [alt] };
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

  private *planWrite(path: string, value: string, then: () => void): Generator<Plan, void, void> {
    const fd = this.m.peekFd();
    yield { what: `open ${path}`, run: (s) => s.p.open(path, O_WRONLY), alts: [okv(fd, () => this.m.allocFd())] };
    yield { what: `write ${JSON.stringify(value)} > ${path}`, run: (s) => s.p.write(fd, value), alts: [okv(value.length, then)] };
    yield { what: `close ${fd}`, run: (s) => s.p.close(fd), alts: [okAny(() => this.m.freeFd(fd))] };
  }

  /**
   * Arms one failure site so that its `nth` next call fails with `err`: only it injected,
   * probability 100, interval count + nth (count goes on from earlier failures), times 1.
   */
  private *planArm(site: string, nth: number, err: string): Generator<Plan, void, void> {
    const fa = this.fa;
    yield* this.planWrite(`${FF}/inject`, '\n', () => fa.injected.clear());
    yield* this.planWrite(`${FF}/inject`, site, () => fa.injected.set(site, 'EINVAL'));
    const retval = `0x${((1n << 64n) - BigInt(ERRNO_NR[err]!)).toString(16)}`;
    yield* this.planWrite(`${FF}/${site}/retval`, retval, () => fa.injected.set(site, err));
    yield* this.planWrite(`${FF}/probability`, '100', () => (fa.probability = 100n));
    const interval = fa.count + BigInt(nth);
    yield* this.planWrite(`${FF}/interval`, String(interval), () => (fa.interval = interval));
    yield* this.planWrite(`${FF}/times`, '1', () => (fa.times = 1));
  }

  /**
   * What reboot does now: every preserved file's luo_file_freeze_one (each a should_fail when
   * injected), then, with sessions and KHO not active yet, kho_finalize (EAGAIN when it fails).
   */
  private predictReboot(): { err: string | null; fa: FaultAttr } {
    const fa: FaultAttr = { ...this.fa, injected: new Map(this.fa.injected) };
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
  *planReboot(op: { kho: boolean; inject: number; nth: number; err: number; retry: boolean; rehydrate: number; viaHwpt: boolean }): Generator<Plan, void, void> {
    const m = this.m;
    // The iommufd and VFIO handler models stop at PRESERVE_FD: no reboot while one is preserved.
    if (this.holdsUnrebootable()) return;
    if (op.kho && !m.khoActive) yield* planKho(m, true);
    const site = LUO_SITES[op.inject % LUO_SITES.length]!;
    if (site) yield* this.planArm(site, op.nth, LUO_FAIL_ERRNOS[op.err % LUO_FAIL_ERRNOS.length]!);
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
      yield { what: `reboot(LINUX_REBOOT_CMD_KEXEC)${err ? ` (expect ${err})` : ''}`, run: (s) => s.p.reboot(LINUX_REBOOT_CMD_KEXEC), alts: [alt] };
      if (m.kexecs !== k0) return yield* planAfterJump(m, op.rehydrate, op.viaHwpt);
    }
  }

  /** The deep check's LUO part: every memfd's seals, every session's name. */
  *planCheck(): Generator<Plan, void, void> {
    for (const mf of this.memfds) yield { what: `fcntl ${mf.fd} F_GET_SEALS`, run: (s) => s.p.fcntl(mf.fd, F_GET_SEALS), alts: [okv(mf.obj.seals)] };
    for (const ss of this.sessions) yield* this.planGetName(ss);
  }

  /** One LUO operation. */
  *plan(op: Op): Generator<Plan, void, void> {
    switch (op.k) {
      case 'mfdCreate':
        return yield* this.planCreate(op.seal);
      case 'mfdClose':
        return yield* this.planMemfdClose(op.m);
      case 'mfdTruncate':
        return yield* this.planTruncate(op.m, op.size);
      case 'mfdSeal':
        return yield* this.planSeal(op.m, op.seals);
      case 'mfdMmap':
        return yield* this.planMmap(op.m, op.w, op.write);
      case 'mfdPoke':
      case 'mfdPeek':
        return yield* this.planAccess(op);
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
      default:
        return;
    }
  }
}
