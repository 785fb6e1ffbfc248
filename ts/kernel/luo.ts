// The Live Update Orchestrator's in-kernel interface (include/linux/liveupdate.h, Linux 7.3):
// what a subsystem implements to have its files preserved across a kexec, and the seam it calls.
// The core knows no implementation: kernel/liveupdate (ts/kernel/liveupdate/) attaches one at
// boot when the command line enables LUO; until then every call is EOPNOTSUPP, as with
// CONFIG_LIVEUPDATE off, and `reboot` does nothing.
import { errno, type ErrnoCode } from '../uapi/errno.js';
import type { File, Task } from './file.js';

/** A session as handlers see it (`struct liveupdate_session`): opaque, named. */
export interface LiveupdateSession {
  readonly name: string;
}

/**
 * `struct liveupdate_file_op_args`. `serializedData` is the u64 handle that crosses the kexec in
 * `luo_file_ser.data` (a physical address of the handler's preserved state, as memfd does);
 * `privateData` never crosses (it is this kernel's JS object).
 */
export interface LiveupdateFileOpArgs {
  readonly handler: LiveupdateFileHandler;
  /** The session the file is (or was) preserved in. */
  readonly session: LiveupdateSession;
  /** For can_finish / finish: 'none' (never retrieved), 'ok', or the errno retrieve failed with. */
  readonly retrieveStatus: 'none' | 'ok' | ErrnoCode;
  /** The file; `retrieve` sets it. Null in finish when the file was never retrieved. */
  file: File | null;
  serializedData: bigint;
  privateData: unknown;
  /** retrieve: the task of RETRIEVE_FD (`current`), absent for an in-kernel retrieval. */
  task?: Task;
  /**
   * Set by freeze or retrieve for the phase cost model (not in the kernel's struct): memfd folios
   * the handler's state covers at freeze, or restored at retrieve.
   */
  folios?: number;
}

/**
 * `struct liveupdate_file_ops`: the lifecycle of one preserved file. A failure is a thrown
 * KernelError (`return -EXXX`).
 *
 * - `canPreserve` (required): a cheap check whether this handler takes `file`.
 * - `preserve` (required): PRESERVE_FD; saves the state (preserved memory) and sets
 *   `serializedData`, optionally `privateData`. The workload still runs.
 * - `unpreserve` (required): the session was closed before the reboot; undo `preserve`.
 * - `freeze` / `unfreeze` (optional): inside reboot(), userspace is stopped; a last update of
 *   the state (may change `serializedData`). If any freeze fails, those already frozen are
 *   unfrozen and reboot fails.
 * - `retrieve` (required, next kernel): RETRIEVE_FD; rebuilds the file from `serializedData`
 *   and sets `file`. Called once per file; a failure is remembered and returned again.
 * - `canFinish` (optional): may FINISH proceed for this file (all prerequisites restored)?
 * - `finish` (required): FINISH or the session's close; the last cleanup (free what was never
 *   retrieved). LUO lets go of the file afterwards.
 * - `getId` (optional): the identity that makes "already preserved" (EBUSY) per object rather
 *   than per open file (memfd: the inode).
 */
export interface LiveupdateFileOps {
  canPreserve(handler: LiveupdateFileHandler, file: File): boolean;
  preserve(args: LiveupdateFileOpArgs): void;
  unpreserve(args: LiveupdateFileOpArgs): void;
  freeze?(args: LiveupdateFileOpArgs): void;
  unfreeze?(args: LiveupdateFileOpArgs): void;
  retrieve(args: LiveupdateFileOpArgs): void;
  canFinish?(args: LiveupdateFileOpArgs): boolean;
  finish(args: LiveupdateFileOpArgs): void;
  getId?(file: File): unknown;
}

/** `struct liveupdate_file_handler`: `compatible` names the handler across the kexec (≤ 47 bytes). */
export interface LiveupdateFileHandler {
  readonly compatible: string;
  readonly ops: LiveupdateFileOps;
}

/** `struct liveupdate_flb_op_args`. */
export interface LiveupdateFlbOpArgs {
  readonly flb: LiveupdateFlb;
  /** The u64 handle that crosses the kexec (`luo_flb_ser.data`). */
  data: bigint;
  /** The live object (this kernel's). */
  obj: unknown;
}

/**
 * `struct liveupdate_flb_ops`: global state whose life is bound to the files that need it (the
 * IOMMU core's preserved state for iommufd and VFIO files). Counted across all sessions.
 *
 * - `preserve`: the first dependent file is preserved; set `data` (and `obj`).
 * - `unpreserve`: the last dependent file was unpreserved before the reboot.
 * - `retrieve`: next kernel, on the first {@link Liveupdate.flbGetIncoming}; rebuild `obj` from `data`.
 * - `finish`: next kernel, the last dependent file finished.
 */
export interface LiveupdateFlbOps {
  preserve(args: LiveupdateFlbOpArgs): void;
  unpreserve(args: LiveupdateFlbOpArgs): void;
  retrieve(args: LiveupdateFlbOpArgs): void;
  finish(args: LiveupdateFlbOpArgs): void;
}

/** `struct liveupdate_flb`: `compatible` names it across the kexec (≤ 47 bytes). */
export interface LiveupdateFlb {
  readonly compatible: string;
  readonly ops: LiveupdateFlbOps;
}

/** What kernel/liveupdate implements behind {@link Liveupdate}. */
export interface LiveupdateImpl {
  registerFileHandler(fh: LiveupdateFileHandler): void;
  registerFlb(fh: LiveupdateFileHandler, flb: LiveupdateFlb): void;
  flbGetIncoming(flb: LiveupdateFlb): unknown;
  flbGetOutgoing(flb: LiveupdateFlb): unknown;
  getTokenOutgoing(session: LiveupdateSession, file: File): bigint;
  getFileIncoming(session: LiveupdateSession, token: bigint): File;
  reboot(): void;
}

/** The seam subsystems call (a kernel's `services.liveupdate`). */
export class Liveupdate {
  private impl: LiveupdateImpl | null = null;

  /** `liveupdate_enabled()`: the command line enabled it and KHO is on. */
  get enabled(): boolean {
    return this.impl !== null;
  }

  /** @internal kernel/liveupdate attaches itself when it boots enabled. */
  attach(impl: LiveupdateImpl): void {
    if (this.impl) throw new Error('LUO attached twice');
    this.impl = impl;
  }

  private get on(): LiveupdateImpl {
    return this.impl ?? errno('EOPNOTSUPP', 'live update is not enabled (boot with kho=on liveupdate=on)');
  }

  /** `liveupdate_register_file_handler`: EOPNOTSUPP when disabled, EEXIST for a duplicate compatible. */
  registerFileHandler(fh: LiveupdateFileHandler): void {
    this.on.registerFileHandler(fh);
  }

  /** `liveupdate_register_flb`: `fh`'s files depend on `flb` (EEXIST twice, EINVAL unregistered fh). */
  registerFlb(fh: LiveupdateFileHandler, flb: LiveupdateFlb): void {
    this.on.registerFlb(fh, flb);
  }

  /** `liveupdate_flb_get_incoming`: the FLB's object in the new kernel (retrieved on first use); ENODATA if none came. */
  flbGetIncoming(flb: LiveupdateFlb): unknown {
    return this.on.flbGetIncoming(flb);
  }

  /** `liveupdate_flb_get_outgoing`: the FLB's live object while a dependent file is preserved; ENOENT otherwise. */
  flbGetOutgoing(flb: LiveupdateFlb): unknown {
    return this.on.flbGetOutgoing(flb);
  }

  /** `liveupdate_get_token_outgoing`: the token `file` is preserved under in `session`; ENOENT if it is not. */
  getTokenOutgoing(session: LiveupdateSession, file: File): bigint {
    return this.on.getTokenOutgoing(session, file);
  }

  /** `liveupdate_get_file_incoming`: the file of `token` in an incoming `session` (retrieved if need be). */
  getFileIncoming(session: LiveupdateSession, token: bigint): File {
    return this.on.getFileIncoming(session, token);
  }

  /** `liveupdate_reboot()` from `kernel_kexec`: serialise and freeze; a failure fails the reboot. */
  reboot(): void {
    this.impl?.reboot();
  }
}
