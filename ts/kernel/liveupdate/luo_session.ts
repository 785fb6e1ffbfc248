// LUO sessions (kernel/liveupdate/luo_session.c, Linux 7.3): named sets of preserved files; the
// session fd and its ioctls; serialisation at reboot and deserialisation in the next kernel.
import { errno } from '../../uapi/errno.js';
import {
  LIVEUPDATE_CMD_SESSION_BASE,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  liveupdate_session_finish,
  liveupdate_session_get_name,
  liveupdate_session_preserve_fd,
  liveupdate_session_retrieve_fd,
} from '../../uapi/liveupdate.js';
import { O_RDWR } from '../../uapi/mman.js';
import { offsetofend, type StructLayout } from '../../uapi/struct.js';
import { File, type Task, type Uaccess } from '../file.js';
import type { LiveupdateSession } from '../luo.js';
import { LUO_PHASES, type PhaseWork } from '../phase-cost.js';
import { cstr, LUO_SESSION_SER_SIZE, putCstr } from './abi.js';
import { LuoFileSet, type LuoRegistry } from './luo_file.js';

export const NAME_LEN = 64;

/** `struct luo_session`. */
export class Session implements LiveupdateSession {
  /** Set on an incoming session once retrieved (then only the incoming commands apply). */
  retrieved = false;
  readonly files: LuoFileSet;
  constructor(
    readonly name: string,
    reg: LuoRegistry,
    /** Came from the previous kernel. */
    readonly incoming: boolean,
  ) {
    this.files = new LuoFileSet(reg, this);
  }
}

/** The outgoing and incoming session lists (`luo_session_global`). */
export class Sessions {
  readonly outgoing: Session[] = [];
  readonly incoming: Session[] = [];
  /** Set by a successful serialisation: the sessions are frozen for the jump. */
  frozen = false;

  constructor(
    readonly reg: LuoRegistry,
    /** Reports a phase of the live update with its work (`services.phase`): RETRIEVE_* and FINISH. */
    readonly phase: (name: string, work: PhaseWork) => void = () => {},
  ) {}

  /** `luo_session_create`: EINVAL for an empty or unterminated name, EEXIST for one in use. */
  create(name: Uint8Array): SessionFile {
    const n = name.indexOf(0);
    const len = n < 0 ? name.length : n;
    if (len === 0 || len > NAME_LEN - 1) errno('EINVAL', 'a session name is 1 to 63 bytes and a NUL');
    const s = new Session(new TextDecoder().decode(name.subarray(0, len)), this.reg, false);
    if (this.outgoing.some((x) => x.name === s.name)) errno('EEXIST', `session ${s.name} exists`);
    this.outgoing.push(s);
    return new SessionFile(this, s);
  }

  /** `luo_session_retrieve`: ENOENT for a name that did not come over, EINVAL if retrieved already. */
  retrieve(name: Uint8Array): SessionFile {
    const n = name.indexOf(0);
    const key = new TextDecoder().decode(name.subarray(0, n < 0 ? NAME_LEN : n));
    const s = this.incoming.find((x) => x.name === key);
    if (!s) return errno('ENOENT', `no incoming session ${key}`);
    if (s.retrieved) errno('EINVAL', `session ${key} was retrieved already`);
    s.retrieved = true;
    return new SessionFile(this, s);
  }

  /** `luo_session_release`: an outgoing session unpreserves its files; an incoming one finishes. */
  release(s: Session): void {
    if (s.retrieved) {
      // A session whose files cannot finish stays with LUO (dropped at the next update).
      s.files.finish();
      this.incoming.splice(this.incoming.indexOf(s), 1);
    } else {
      s.files.unpreserveAll();
      this.outgoing.splice(this.outgoing.indexOf(s), 1);
    }
  }

  /**
   * `luo_session_serialize`: freezes each outgoing session's files and returns the
   * `luo_session_ser` entries; a failure unfreezes the sessions before it and is rethrown.
   */
  serialize(writeFiles: (entries: Uint8Array[]) => { head: bigint; count: number }, work?: { files: number; folios: number }): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let i = 0; i < this.outgoing.length; i++) {
      const s = this.outgoing[i]!;
      let files: { head: bigint; count: number };
      try {
        const entries = s.files.freeze(work);
        try {
          files = entries.length ? writeFiles(entries) : { head: 0n, count: 0 };
        } catch (e) {
          s.files.unfreeze();
          throw e;
        }
      } catch (e) {
        for (const t of this.outgoing.slice(0, i).reverse()) t.files.unfreeze();
        throw e;
      }
      const b = new Uint8Array(LUO_SESSION_SER_SIZE);
      putCstr(b, 0, NAME_LEN, s.name);
      const v = new DataView(b.buffer);
      v.setBigUint64(64, files.head, true);
      v.setBigUint64(72, BigInt(files.count), true);
      out.push(b);
    }
    return out;
  }

  /**
   * `luo_session_deserialize_one` for each entry: the session and its files (`readFiles` reads a
   * file set's blocks). EEXIST for a duplicate name, EINVAL for a count that does not match.
   */
  deserialize(entries: readonly Uint8Array[], readFiles: (head: bigint) => Uint8Array[]): void {
    for (const b of entries) {
      const name = cstr(b.subarray(0, NAME_LEN), 'luo_session_ser.name');
      const v = new DataView(b.buffer, b.byteOffset, b.length);
      const head = v.getBigUint64(64, true);
      const count = v.getBigUint64(72, true);
      if (!name || this.incoming.some((x) => x.name === name)) errno('EEXIST', `incoming session '${name}' twice or unnamed`);
      const s = new Session(name, this.reg, true);
      this.incoming.push(s);
      if (head === 0n) {
        if (count !== 0n) errno('EINVAL', `session ${name}: ${count} files and no blocks`);
        continue;
      }
      const files = readFiles(head);
      if (BigInt(files.length) !== count) errno('EINVAL', `session ${name}: file count mismatch, ${count} expected, ${files.length} found`);
      s.files.deserialize(files);
    }
  }
}

/** One session command: its struct, minimum size, and which sessions it applies to. */
interface SessionOp {
  request: number;
  layout: StructLayout;
  minSize: number;
  type: 'incoming' | 'outgoing' | 'all';
}

/** `luo_session_ioctl_ops`, indexed by `_IOC_NR - LIVEUPDATE_CMD_SESSION_BASE`. */
const OPS: SessionOp[] = [
  { request: LIVEUPDATE_SESSION_PRESERVE_FD, layout: liveupdate_session_preserve_fd, minSize: offsetofend(liveupdate_session_preserve_fd, 'token'), type: 'outgoing' },
  { request: LIVEUPDATE_SESSION_RETRIEVE_FD, layout: liveupdate_session_retrieve_fd, minSize: offsetofend(liveupdate_session_retrieve_fd, 'token'), type: 'incoming' },
  { request: LIVEUPDATE_SESSION_FINISH, layout: liveupdate_session_finish, minSize: offsetofend(liveupdate_session_finish, 'reserved'), type: 'incoming' },
  { request: LIVEUPDATE_SESSION_GET_NAME, layout: liveupdate_session_get_name, minSize: offsetofend(liveupdate_session_get_name, 'name'), type: 'all' },
];

/** The session fd (`[luo_session] NAME`, an anon inode). */
export class SessionFile extends File {
  constructor(
    private readonly sessions: Sessions,
    readonly session: Session,
  ) {
    super(O_RDWR, `anon_inode:[luo_session] ${session.name}`);
  }

  /** `luo_session_ioctl`: EINVAL outside the table, ENOTTY for a wrong type, EINVAL for the wrong kind of session. */
  ioctl(task: Task, request: number, u: Uaccess, arg: bigint): number {
    const nr = request & 0xff;
    const op = nr >= LIVEUPDATE_CMD_SESSION_BASE ? OPS[nr - LIVEUPDATE_CMD_SESSION_BASE] : undefined;
    if (!op) return errno('EINVAL', `no session command ${nr}`);
    const usize = u.getU32(arg);
    if (op.request !== request) return errno('ENOTTY', 'not a LUO session command');
    const s = this.session;
    const valid = op.type === 'all' || (op.type === 'incoming') === s.retrieved;
    if (!valid) errno('EINVAL', `${op.layout.name} does not apply to ${s.retrieved ? 'an incoming' : 'an outgoing'} session`);
    if (usize < op.minSize) errno('EINVAL', `size ${usize} is below ${op.minSize}`);
    const cmd = u.copyStruct(arg, op.layout, usize) as Record<string, number | bigint | Uint8Array>;
    if (this.sessions.frozen) errno('EBUSY', 'the sessions are serialised for the reboot');
    const respond = () => u.respondStruct(arg, op.layout, cmd as never, usize);
    switch (op.request) {
      case LIVEUPDATE_SESSION_PRESERVE_FD:
        s.files.preserve(task, cmd.token as bigint, cmd.fd as number);
        respond();
        return 0;
      case LIVEUPDATE_SESSION_RETRIEVE_FD: {
        cmd.fd = task.unusedFd();
        const work = { files: 0, folios: 0 };
        const file = s.files.retrieve(cmd.token as bigint, task, work);
        try {
          respond();
        } catch (e) {
          file.put();
          throw e;
        }
        task.installFd(file);
        // A file retrieved before is a new reference only: no work, no phase.
        if (work.files) this.sessions.phase(LUO_PHASES.retrieve, work);
        return 0;
      }
      case LIVEUPDATE_SESSION_FINISH: {
        if (cmd.reserved) errno('EINVAL', 'reserved must be 0');
        const files = s.files.finish();
        respond();
        this.sessions.phase(LUO_PHASES.finish, { sessions: 1, files });
        return 0;
      }
      default: {
        if (cmd.reserved) errno('EINVAL', 'reserved must be 0');
        const name = new Uint8Array(NAME_LEN);
        name.set(new TextEncoder().encode(s.name));
        cmd.name = name;
        respond();
        return 0;
      }
    }
  }

  protected release(): void {
    try {
      this.sessions.release(this.session);
    } catch {
      /* "Unable to finish session on release": LUO keeps it until the next update */
    }
  }
}
