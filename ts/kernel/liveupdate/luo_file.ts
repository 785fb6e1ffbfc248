// Preserved files (kernel/liveupdate/luo_file.c) and the File-Lifecycle-Bound global state
// (luo_flb.c), Linux 7.3: the handler registry, each session's file set, and their lifecycle
// (preserve → freeze at reboot → retrieve in the next kernel → finish).
import type { PhysicalMemory } from '../../hw/memory.js';
import { errno, KernelError, type ErrnoCode } from '../../uapi/errno.js';
import type { File, Task } from '../file.js';
import type { LiveupdateFileHandler, LiveupdateFileOpArgs, LiveupdateFlb, LiveupdateSession } from '../luo.js';
import { COMPAT_LEN, cstr, khoAllocPreserve, LUO_FILE_SER_SIZE, LUO_FLB_SER_SIZE, PAGE, putCstr } from './abi.js';

/** `struct luo_file`. */
export interface LuoFile {
  readonly fh: LiveupdateFileHandler;
  /** Null in the new kernel until retrieved. */
  file: File | null;
  serializedData: bigint;
  privateData: unknown;
  retrieveStatus: 'none' | 'ok' | ErrnoCode;
  readonly token: bigint;
}

interface FlbState {
  count: number;
  data: bigint;
  obj: unknown;
  /** Incoming only. */
  retrieveStatus: 'none' | 'ok' | ErrnoCode;
  finished: boolean;
}

const state = (): FlbState => ({ count: 0, data: 0n, obj: undefined, retrieveStatus: 'none', finished: false });

/** The handlers and FLBs registered with LUO, and which objects are preserved (`luo_preserved_files`). */
export class LuoRegistry {
  readonly handlers: LiveupdateFileHandler[] = [];
  private readonly flbsOf = new Map<LiveupdateFileHandler, LiveupdateFlb[]>();
  private readonly flbs = new Map<LiveupdateFlb, { outgoing: FlbState; incoming: FlbState }>();
  /** What the previous kernel serialised of its FLBs, by compatible. */
  private incomingFlbs = new Map<string, { data: bigint; count: number }>();
  /** By `getId` (or the file itself): the file preserved or retrieved under it. */
  readonly preserved = new Map<unknown, File>();
  /** The fault-injection kprobe at a failure site's entry (kernel/fail_function): its errno, or null. */
  failFunction: (fn: string) => ErrnoCode | null = () => null;

  idOf(fh: LiveupdateFileHandler, file: File): unknown {
    return fh.ops.getId ? fh.ops.getId(file) : file;
  }

  register(fh: LiveupdateFileHandler): void {
    if (!fh.compatible || new TextEncoder().encode(fh.compatible).length >= COMPAT_LEN) errno('EINVAL', 'bad handler compatible');
    if (this.handlers.some((h) => h.compatible === fh.compatible)) errno('EEXIST', `handler ${fh.compatible} registered twice`);
    this.handlers.push(fh);
    this.flbsOf.set(fh, []);
  }

  registerFlb(fh: LiveupdateFileHandler, flb: LiveupdateFlb): void {
    const list = this.flbsOf.get(fh);
    if (!list) return errno('EINVAL', 'the file handler is not registered');
    if (list.includes(flb)) errno('EEXIST', `FLB ${flb.compatible} registered twice for ${fh.compatible}`);
    for (const other of this.flbs.keys()) if (other !== flb && other.compatible === flb.compatible) errno('EEXIST', `another FLB is ${flb.compatible}`);
    if (new TextEncoder().encode(flb.compatible).length >= COMPAT_LEN) errno('EINVAL', 'bad FLB compatible');
    list.push(flb);
    if (!this.flbs.has(flb)) this.flbs.set(flb, { outgoing: state(), incoming: state() });
  }

  /** `luo_flb_file_preserve`: every FLB of `fh` counts one more file (preserve on the first). */
  flbFilePreserve(fh: LiveupdateFileHandler): void {
    const done: LiveupdateFlb[] = [];
    try {
      for (const flb of this.flbsOf.get(fh) ?? []) {
        const s = this.flbs.get(flb)!.outgoing;
        if (s.count === 0) {
          const args = { flb, data: 0n, obj: undefined as unknown };
          flb.ops.preserve(args);
          s.data = args.data;
          s.obj = args.obj;
        }
        s.count++;
        done.push(flb);
      }
    } catch (e) {
      for (const flb of done.reverse()) this.putOutgoing(flb);
      throw e;
    }
  }

  /** `luo_flb_file_unpreserve`. */
  flbFileUnpreserve(fh: LiveupdateFileHandler): void {
    for (const flb of [...(this.flbsOf.get(fh) ?? [])].reverse()) this.putOutgoing(flb);
  }

  private putOutgoing(flb: LiveupdateFlb): void {
    const s = this.flbs.get(flb)!.outgoing;
    if (--s.count > 0) return;
    flb.ops.unpreserve({ flb, data: s.data, obj: s.obj });
    s.data = 0n;
    s.obj = undefined;
  }

  /** `luo_flb_file_finish`: the last finished file of an FLB finishes it. */
  flbFileFinish(fh: LiveupdateFileHandler): void {
    for (const flb of [...(this.flbsOf.get(fh) ?? [])].reverse()) {
      const s = this.flbs.get(flb)!.incoming;
      if (s.finished) continue;
      if (s.retrieveStatus !== 'ok') {
        try {
          this.retrieveFlb(flb);
        } catch {
          continue; // WARN_ON in the kernel: nothing to finish
        }
      }
      if (--s.count > 0) continue;
      flb.ops.finish({ flb, data: s.data, obj: s.obj });
      s.data = 0n;
      s.obj = undefined;
      s.finished = true;
    }
  }

  private retrieveFlb(flb: LiveupdateFlb): void {
    const s = this.flbs.get(flb)!.incoming;
    if (s.finished) errno('ENODATA', `FLB ${flb.compatible} finished`);
    if (s.retrieveStatus === 'ok') return;
    if (s.retrieveStatus !== 'none') errno(s.retrieveStatus, `FLB ${flb.compatible} failed to retrieve before`);
    const ser = this.incomingFlbs.get(flb.compatible);
    if (!ser) return errno(this.incomingFlbs.size ? 'ENOENT' : 'ENODATA', `no FLB ${flb.compatible} came from the previous kernel`);
    s.data = ser.data;
    s.count = ser.count;
    const args = { flb, data: ser.data, obj: undefined as unknown };
    try {
      flb.ops.retrieve(args);
    } catch (e) {
      if (e instanceof KernelError) s.retrieveStatus = e.code;
      throw e;
    }
    s.obj = args.obj;
    s.retrieveStatus = 'ok';
  }

  /** `liveupdate_flb_get_incoming`. */
  flbGetIncoming(flb: LiveupdateFlb): unknown {
    // luo_flb_get_private: an FLB's state exists from its first use, registered or not yet (the
    // IOMMU driver reads its FLB at init, before iommufd registers it with its handler).
    if (!this.flbs.has(flb)) this.flbs.set(flb, { outgoing: state(), incoming: state() });
    this.retrieveFlb(flb);
    return this.flbs.get(flb)!.incoming.obj;
  }

  /** `liveupdate_flb_get_outgoing`. */
  flbGetOutgoing(flb: LiveupdateFlb): unknown {
    const s = this.flbs.get(flb)?.outgoing;
    if (!s || s.count === 0) errno('ENOENT', `FLB ${flb.compatible} is not preserved`);
    return s.obj;
  }

  /** `luo_flb_serialize`: `luo_flb_header_ser { pgcnt, count }` + entries in one preserved page. */
  serializeFlbs(mem: PhysicalMemory): bigint {
    const live = [...this.flbs].filter(([, s]) => s.outgoing.count > 0);
    const b = new Uint8Array(PAGE);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, 1n, true);
    v.setBigUint64(8, BigInt(live.length), true);
    live.forEach(([flb, s], i) => {
      const at = 16 + i * LUO_FLB_SER_SIZE;
      putCstr(b, at, COMPAT_LEN, flb.compatible);
      v.setBigUint64(at + 48, s.outgoing.data, true);
      v.setBigUint64(at + 56, BigInt(s.outgoing.count), true);
    });
    const pa = khoAllocPreserve(mem, PAGE);
    mem.write(pa, b);
    return pa;
  }

  /** `luo_flb_setup_incoming`: what the previous kernel's FLB page says. */
  setupIncomingFlbs(page: Uint8Array): void {
    const v = new DataView(page.buffer, page.byteOffset, page.length);
    const count = Number(v.getBigUint64(8, true));
    if (count > (PAGE - 16) / LUO_FLB_SER_SIZE) errno('EINVAL', `${count} FLBs in one page`);
    for (let i = 0; i < count; i++) {
      const at = 16 + i * LUO_FLB_SER_SIZE;
      this.incomingFlbs.set(cstr(page.subarray(at, at + COMPAT_LEN), 'luo_flb_ser.name'), { data: v.getBigUint64(at + 48, true), count: Number(v.getBigUint64(at + 56, true)) });
    }
  }
}

const opArgs = (session: LiveupdateSession, f: LuoFile): LiveupdateFileOpArgs => ({
  handler: f.fh,
  session,
  retrieveStatus: f.retrieveStatus,
  file: f.file,
  serializedData: f.serializedData,
  privateData: f.privateData,
});

/** `struct luo_file_set`: one session's files, in preservation order. */
export class LuoFileSet {
  readonly files: LuoFile[] = [];

  constructor(
    private readonly reg: LuoRegistry,
    private readonly session: LiveupdateSession,
  ) {}

  /** `luo_preserve_file`, in the kernel's check order: token, fd, handler, already preserved. */
  preserve(task: Task, token: bigint, fd: number): void {
    if (this.files.some((f) => f.token === token)) errno('EEXIST', `token ${token} is used in this session`);
    let file: File;
    try {
      file = task.fget(fd);
    } catch {
      return errno('EBADF', `fd ${fd} is not open`);
    }
    try {
      const fh = this.reg.handlers.find((h) => h.ops.canPreserve(h, file));
      if (!fh) return errno('ENOENT', 'no live-update handler takes this file');
      const id = this.reg.idOf(fh, file);
      if (this.reg.preserved.has(id)) errno('EBUSY', 'the file is already preserved');
      this.reg.preserved.set(id, file);
      try {
        this.reg.flbFilePreserve(fh);
        const f: LuoFile = { fh, file, serializedData: 0n, privateData: undefined, retrieveStatus: 'none', token };
        const args = opArgs(this.session, f);
        try {
          fh.ops.preserve(args);
        } catch (e) {
          this.reg.flbFileUnpreserve(fh);
          throw e;
        }
        f.serializedData = args.serializedData;
        f.privateData = args.privateData;
        // LUO keeps the reference fget took until unpreserve or finish.
        this.files.push(f);
      } catch (e) {
        this.reg.preserved.delete(id);
        throw e;
      }
    } catch (e) {
      file.put();
      throw e;
    }
  }

  /** `luo_file_unpreserve_files`: the session closed before the reboot; newest first. */
  unpreserveAll(): void {
    while (this.files.length) {
      const f = this.files.pop()!;
      f.fh.ops.unpreserve(opArgs(this.session, f));
      this.reg.flbFileUnpreserve(f.fh);
      this.reg.preserved.delete(this.reg.idOf(f.fh, f.file!));
      f.file!.put();
    }
  }

  /** `luo_file_freeze`: freeze each file in order; on a failure unfreeze those before it. Returns the `luo_file_ser` entries. */
  freeze(work?: { files: number; folios: number }): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let i = 0; i < this.files.length; i++) {
      const f = this.files[i]!;
      // luo_file_freeze_one, an injectable site: its failure is the handler's freeze failing.
      const injected = this.reg.failFunction('luo_file_freeze_one');
      if (injected) {
        this.unfreeze(i);
        errno(injected, `freeze failed for token ${f.token} handler ${f.fh.compatible} (injected)`);
      }
      if (f.fh.ops.freeze) {
        const args = opArgs(this.session, f);
        try {
          f.fh.ops.freeze(args);
        } catch (e) {
          this.unfreeze(i);
          throw e;
        }
        f.serializedData = args.serializedData;
        if (work) work.folios += args.folios ?? 0;
      }
      if (work) work.files++;
      const b = new Uint8Array(LUO_FILE_SER_SIZE);
      putCstr(b, 0, COMPAT_LEN, f.fh.compatible);
      const v = new DataView(b.buffer);
      v.setBigUint64(48, f.serializedData, true);
      v.setBigUint64(56, f.token, true);
      out.push(b);
    }
    return out;
  }

  /** `__luo_file_unfreeze`: the files before index `upTo` (all by default). */
  unfreeze(upTo = this.files.length): void {
    for (const f of this.files.slice(0, upTo)) f.fh.ops.unfreeze?.(opArgs(this.session, f));
  }

  /** `luo_file_deserialize_one` for each entry: ENOENT for a compatible no handler has. */
  deserialize(entries: readonly Uint8Array[]): void {
    for (const b of entries) {
      const compatible = cstr(b.subarray(0, COMPAT_LEN), 'luo_file_ser.compatible');
      const fh = this.reg.handlers.find((h) => h.compatible === compatible);
      if (!fh) errno('ENOENT', `no registered handler for compatible '${compatible}'`);
      const v = new DataView(b.buffer, b.byteOffset, b.length);
      this.files.push({ fh, file: null, serializedData: v.getBigUint64(48, true), privateData: undefined, retrieveStatus: 'none', token: v.getBigUint64(56, true) });
    }
  }

  /** `luo_retrieve_file`: the file of `token` (a new reference), retrieving it the first time. */
  retrieve(token: bigint, task?: Task, work?: { files: number; folios: number }): File {
    const f = this.files.find((x) => x.token === token);
    if (!f) return errno('ENOENT', `no file with token ${token}`);
    if (f.retrieveStatus === 'ok') return f.file!.get();
    if (f.retrieveStatus !== 'none') return errno(f.retrieveStatus, 'retrieving this file failed before');
    const args = { ...opArgs(this.session, f), task };
    try {
      f.fh.ops.retrieve(args);
    } catch (e) {
      if (e instanceof KernelError) f.retrieveStatus = e.code;
      throw e;
    }
    f.file = args.file!;
    f.privateData = args.privateData;
    f.retrieveStatus = 'ok';
    if (work) {
      work.files++;
      work.folios += args.folios ?? 0;
    }
    this.reg.preserved.set(this.reg.idOf(f.fh, f.file), f.file);
    // One reference stays with LUO until finish, one goes to the caller.
    return f.file.get();
  }

  /** `luo_file_finish`: all can_finish first (EBUSY, nothing done), then finish each, newest first. */
  finish(): number {
    const n = this.files.length;
    for (const f of this.files) {
      if (f.fh.ops.canFinish && !f.fh.ops.canFinish(opArgs(this.session, f))) errno('EBUSY', `file ${f.token} cannot finish yet`);
    }
    while (this.files.length) {
      const f = this.files.pop()!;
      f.fh.ops.finish(opArgs(this.session, f));
      this.reg.flbFileFinish(f.fh);
      if (f.file) {
        this.reg.preserved.delete(this.reg.idOf(f.fh, f.file));
        f.file.put();
      }
    }
    return n;
  }

  /** `liveupdate_get_token_outgoing`. */
  tokenOf(file: File): bigint | null {
    return this.files.find((f) => f.file && this.reg.idOf(f.fh, f.file) === this.reg.idOf(f.fh, file))?.token ?? null;
  }
}
