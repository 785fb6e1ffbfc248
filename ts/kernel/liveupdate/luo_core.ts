// The Live Update Orchestrator core (kernel/liveupdate/luo_core.c, Linux 7.3): enabled by
// `liveupdate=on` with KHO on (`kho=on`); /dev/liveupdate (one opener at a time) creates and
// retrieves sessions; `reboot(LINUX_REBOOT_CMD_KEXEC)` serialises them into preserved memory
// and finalises KHO, whose tree carries the `LUO` subtree: `preserved-data` = the physical
// address of `struct luo_ser`, `blob-size` = its size. The next kernel finds its state there.
import { FdtWriter } from '../../fdt/index.js';
import { errno, KernelError } from '../../uapi/errno.js';
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  liveupdate_ioctl_create_session,
  liveupdate_ioctl_retrieve_session,
} from '../../uapi/liveupdate.js';
import { O_RDWR } from '../../uapi/mman.js';
import { offsetofend } from '../../uapi/struct.js';
import { File, type Task, type Uaccess } from '../file.js';
import { le, type Kho, type KhoNode } from '../kho/kho.js';
import type { LiveupdateFileHandler, LiveupdateFlb, LiveupdateImpl, LiveupdateSession } from '../luo.js';
import { LUO_PHASES } from '../phase-cost.js';
import type { KernelServices } from '../services.js';
import {
  checkIncoming,
  cstr,
  khoAllocPreserve,
  khoRestoreFree,
  khoUnpreserveFree,
  LUO_ABI_COMPATIBLE,
  LUO_FILE_SER_SIZE,
  LUO_KHO_ENTRY_NAME,
  LUO_SER_SIZE,
  LUO_SESSION_SER_SIZE,
  PAGE,
  putCstr,
  readBlockSet,
  writeBlockSet,
} from './abi.js';
import { LuoRegistry } from './luo_file.js';
import { Session, Sessions, type SessionFile } from './luo_session.js';

/** `kstrtobool` of `key=` on the command line: y/t/1/on true, n/f/0/off false; absent or other: false. */
function cmdlineBool(cmdline: string, key: string): boolean {
  const m = new RegExp(`(?:^|\\s)${key}=(\\S*)`).exec(cmdline);
  return m !== null && /^([yt1]|on)/i.test(m[1]!);
}

/** The LUO of one kernel. */
export class Luo implements LiveupdateImpl {
  readonly reg = new LuoRegistry();
  readonly sessions = new Sessions(this.reg, (name, work) => this.svc.phase(name, work));
  /** `luo_global.liveupdate_num`: live updates so far (what the previous kernel said). */
  readonly liveupdateNum: bigint;
  /** The outgoing `struct luo_ser` (a preserved page). */
  private readonly serPa: bigint;
  /** `sessions_pa` of the incoming state, deserialised at the first open. */
  private incomingSessions: bigint = 0n;
  private deserialized: KernelError | null | undefined;
  private inUse = false;

  constructor(
    private readonly svc: KernelServices,
    incoming: KhoNode | undefined,
  ) {
    this.reg.failFunction = (fn) => svc.failFunction.inject(fn);
    this.liveupdateNum = incoming ? this.setupIncoming(incoming) : 0n;
    // luo_state_setup: the outgoing luo_ser, named in the KHO tree from boot on.
    this.serPa = khoAllocPreserve(svc.memory, LUO_SER_SIZE);
    const b = new Uint8Array(LUO_SER_SIZE);
    putCstr(b, 0, 8, LUO_ABI_COMPATIBLE);
    new DataView(b.buffer).setBigUint64(8, this.liveupdateNum + 1n, true);
    svc.memory.write(this.serPa, b);
  }

  /** `luo_early_startup`: the incoming `luo_ser`; a bad one is a KernelError (the kernel panics). */
  private setupIncoming(node: KhoNode): bigint {
    const mem = this.svc.memory;
    const pa = node.u64('preserved-data');
    const size = node.u64('blob-size');
    if (size < BigInt(LUO_SER_SIZE)) errno('EINVAL', `LUO state is too small (${size} < ${LUO_SER_SIZE})`);
    checkIncoming(mem, pa, LUO_SER_SIZE, 'luo_ser');
    const b = mem.read(pa, LUO_SER_SIZE);
    if (cstr(b.subarray(0, 8), 'luo_ser.compatible') !== LUO_ABI_COMPATIBLE) errno('EINVAL', `LUO state is incompatible with '${LUO_ABI_COMPATIBLE}'`);
    const v = new DataView(b.buffer);
    const num = v.getBigUint64(8, true);
    this.incomingSessions = v.getBigUint64(16, true);
    const flbs = v.getBigUint64(24, true);
    if (flbs !== 0n) {
      checkIncoming(mem, flbs, PAGE, 'luo_flb_header_ser');
      this.reg.setupIncomingFlbs(mem.read(flbs, PAGE));
      khoRestoreFree(mem, flbs, PAGE);
    }
    khoRestoreFree(mem, pa, LUO_SER_SIZE);
    this.svc.log(`luo: Retrieved live update data, liveupdate number: ${num}`);
    return num;
  }

  /** `luo_session_deserialize`, once, at the first open of /dev/liveupdate; its error every time after. */
  private deserialize(): void {
    if (this.deserialized === undefined) {
      this.deserialized = null;
      const head = this.incomingSessions;
      this.incomingSessions = 0n;
      if (head !== 0n) {
        const mem = this.svc.memory;
        try {
          const { entries, pages } = readBlockSet(mem, head, LUO_SESSION_SER_SIZE, 'luo sessions');
          for (const p of pages) khoRestoreFree(mem, p, PAGE);
          this.sessions.deserialize(entries, (h) => {
            const files = readBlockSet(mem, h, LUO_FILE_SER_SIZE, 'luo files');
            for (const p of files.pages) khoRestoreFree(mem, p, PAGE);
            return files.entries;
          });
        } catch (e) {
          if (!(e instanceof KernelError)) throw e;
          this.svc.log(`luo: failed to deserialize sessions: ${e.detail ?? e.code}`);
          this.deserialized = e;
        }
      }
    }
    if (this.deserialized) errno('EIO', 'LUO deserialisation failed');
  }

  /** `luo_open`: EBUSY while another file has it open. */
  open(): File {
    if (this.inUse) errno('EBUSY', '/dev/liveupdate is open already');
    this.inUse = true;
    try {
      this.deserialize();
    } catch (e) {
      this.inUse = false;
      throw e;
    }
    return new LuoDeviceFile(this);
  }

  /** @internal `luo_release`. */
  closed(): void {
    this.inUse = false;
  }

  registerFileHandler(fh: LiveupdateFileHandler): void {
    const need = ['canPreserve', 'preserve', 'unpreserve', 'retrieve', 'finish'] as const;
    if (need.some((op) => typeof fh.ops[op] !== 'function')) errno('EINVAL', 'a handler needs can_preserve, preserve, unpreserve, retrieve and finish');
    this.reg.register(fh);
  }

  registerFlb(fh: LiveupdateFileHandler, flb: LiveupdateFlb): void {
    this.reg.registerFlb(fh, flb);
  }

  flbGetIncoming(flb: LiveupdateFlb): unknown {
    return this.reg.flbGetIncoming(flb);
  }

  flbGetOutgoing(flb: LiveupdateFlb): unknown {
    return this.reg.flbGetOutgoing(flb);
  }

  getTokenOutgoing(session: LiveupdateSession, file: File): bigint {
    const t = session instanceof Session && !session.incoming ? session.files.tokenOf(file) : null;
    return t ?? errno('ENOENT', 'the file is not preserved in this session');
  }

  getFileIncoming(session: LiveupdateSession, token: bigint): File {
    if (!(session instanceof Session) || !session.incoming) return errno('EINVAL', 'not an incoming session');
    return session.files.retrieve(token);
  }

  /**
   * `liveupdate_reboot`: freezes and serialises every outgoing session (sessions → file sets →
   * handlers' freeze), the FLBs, then finalises KHO. Any failure undoes all of it and fails the
   * reboot: a freeze with its own errno, KHO's finalisation with EAGAIN (as `liveupdate_reboot`
   * answered while KHO had one, up to 6.19: "kho_finalize() may return libfdt errors"). Sessions
   * closed before this point are gone; incoming ones never retrieved are dropped (their memory
   * was not preserved again). Both are fault-injection sites (fail_function.ts).
   *
   * The phases it reports (the cost model's LUO_PHASES), once the sessions are serialised and
   * before KHO's finalisation: `luo-serialise` (the sessions written: their records, file
   * blocks and the FLBs), `luo-freeze` (every file's freeze callback; memfd counts its folios),
   * then KHO reports `kho-finalise` with every preserved block. In the kernel each session's
   * freeze runs inside its serialisation; the timeline has them as two phases, in that order.
   * A reboot without sessions reports none (nothing is handed over).
   */
  reboot(): void {
    const mem = this.svc.memory;
    const pages: bigint[] = [];
    let sessionsPa = 0n;
    let finalizing = false;
    const frozen = { files: 0, folios: 0 };
    const ser = this.sessions.serialize((entries) => {
      const w = writeBlockSet(mem, LUO_FILE_SER_SIZE, entries);
      pages.push(...w.pages);
      return { head: w.head, count: entries.length };
    }, frozen);
    try {
      if (ser.length) {
        const w = writeBlockSet(mem, LUO_SESSION_SER_SIZE, ser);
        pages.push(...w.pages);
        sessionsPa = w.head;
      }
      const flbsPa = this.reg.serializeFlbs(mem);
      pages.push(flbsPa);
      const v = new DataView(new ArrayBuffer(16));
      v.setBigUint64(0, sessionsPa, true);
      v.setBigUint64(8, flbsPa, true);
      mem.write(this.serPa + 16n, new Uint8Array(v.buffer));
      if (ser.length) {
        this.svc.phase(LUO_PHASES.serialise, { sessions: ser.length });
        this.svc.phase(LUO_PHASES.freeze, frozen);
      }
      // kho_finalize: the tree with the LUO subtree goes to the next kernel. With no session
      // there is nothing to hand over, and the kexec stays a plain one (the IOMMU is not kept).
      if (ser.length && !this.svc.kho.active) {
        finalizing = true;
        const injected = this.svc.failFunction.inject('kho_finalize');
        if (injected) errno(injected, 'kho_finalize (injected)');
        this.svc.kho.activate(LUO_PHASES.finalise);
      }
    } catch (e) {
      for (const s of this.sessions.outgoing) s.files.unfreeze();
      for (const p of pages) khoUnpreserveFree(mem, p, PAGE);
      mem.write(this.serPa + 16n, new Uint8Array(16));
      if (finalizing && e instanceof KernelError) {
        this.svc.log(`luo: kho_finalize failed -${e.code}`);
        errno('EAGAIN', `KHO finalisation failed (${e.code})`);
      }
      throw e;
    }
    this.sessions.frozen = true;
    this.svc.log(`luo: serialised ${ser.length} sessions for live update ${this.liveupdateNum + 1n}`);
  }

  /** The KHO subtree (`kho_add_subtree(LUO_KHO_ENTRY_NAME, luo_ser, sizeof)`). */
  khoDump(w: FdtWriter): void {
    w.beginNode(LUO_KHO_ENTRY_NAME);
    w.property('preserved-data', le.u64(this.serPa));
    w.property('blob-size', le.u64(BigInt(LUO_SER_SIZE)));
    w.endNode();
  }
}

/** Union of the device's commands, by `_IOC_NR`. */
const DEV_OPS = [
  { request: LIVEUPDATE_IOCTL_CREATE_SESSION, layout: liveupdate_ioctl_create_session, minSize: offsetofend(liveupdate_ioctl_create_session, 'name') },
  { request: LIVEUPDATE_IOCTL_RETRIEVE_SESSION, layout: liveupdate_ioctl_retrieve_session, minSize: offsetofend(liveupdate_ioctl_retrieve_session, 'name') },
];

/** An open /dev/liveupdate. */
class LuoDeviceFile extends File {
  constructor(private readonly luo: Luo) {
    super(O_RDWR, '/dev/liveupdate');
  }

  /** `luo_ioctl`: EINVAL past the table, ENOTTY for a wrong type, EINVAL below the minimum size. */
  ioctl(task: Task, request: number, u: Uaccess, arg: bigint): number {
    const nr = request & 0xff;
    const op = DEV_OPS[nr];
    if (!op) return errno('EINVAL', `no /dev/liveupdate command ${nr}`);
    const usize = u.getU32(arg);
    if (op.request !== request) return errno('ENOTTY', 'not a /dev/liveupdate command');
    if (usize < op.minSize) errno('EINVAL', `size ${usize} is below ${op.minSize}`);
    const cmd = u.copyStruct(arg, op.layout, usize);
    if (this.luo.sessions.frozen) errno('EBUSY', 'the sessions are serialised for the reboot');
    cmd.fd = task.unusedFd();
    const name = cmd.name as Uint8Array;
    const file: SessionFile = op.request === LIVEUPDATE_IOCTL_CREATE_SESSION ? this.luo.sessions.create(name) : this.luo.sessions.retrieve(name);
    try {
      u.respondStruct(arg, op.layout, cmd, usize);
    } catch (e) {
      file.put();
      throw e;
    }
    task.installFd(file);
    if (op.request === LIVEUPDATE_IOCTL_RETRIEVE_SESSION) this.luo.sessions.phase(LUO_PHASES.retrieve, { sessions: 1 });
    return 0;
  }

  protected release(): void {
    this.luo.closed();
  }
}

/**
 * `liveupdate_early_init`: LUO on this kernel if the command line enables it (`liveupdate=on`)
 * and KHO is on (`kho=on`); the incoming state is read now (before the IOMMU driver, which reads
 * its FLB at init) and LUO attaches to `svc.liveupdate`.
 */
export function liveupdateEarlyInit(svc: KernelServices, incoming: KhoNode | undefined): Luo | null {
  if (!cmdlineBool(svc.cmdline, 'liveupdate')) return null;
  if (!cmdlineBool(svc.cmdline, 'kho')) {
    svc.log('luo: Disabling liveupdate because KHO is disabled');
    return null;
  }
  let luo: Luo;
  try {
    luo = new Luo(svc, incoming);
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
    // luo_restore_fail panics: the simulator logs it and boots without LUO.
    svc.log(`luo: The incoming tree failed to initialize properly [${e.code}: ${e.detail ?? ''}], disabling live update`);
    return null;
  }
  svc.liveupdate.attach(luo);
  return luo;
}

/** `luo_late_startup` + `liveupdate_ioctl_init`: /dev/liveupdate (crw------- root) and the KHO subtree. */
export function liveupdateLateInit(svc: KernelServices, kho: Kho, luo: Luo): void {
  svc.chrdevs.register({ path: '/dev/liveupdate', mode: 0o600, open: () => luo.open() });
  kho.notifiers.push({ dump: (w) => luo.khoDump(w), abort: () => {} });
}

/** Both stages at once (a kernel with nothing to restore in between). */
export function liveupdateInit(svc: KernelServices, kho: Kho, incoming: KhoNode | undefined): Luo | null {
  const luo = liveupdateEarlyInit(svc, incoming);
  if (luo) liveupdateLateInit(svc, kho, luo);
  return luo;
}
