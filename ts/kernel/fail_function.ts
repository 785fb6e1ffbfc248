// Function error injection (kernel/fail_function.c over lib/fault-inject.c, Linux 7.3), as debugfs
// shows it under /sys/kernel/debug/fail_function/ (CONFIG_FAIL_FUNCTION, debugfs at
// /sys/kernel/debug): `inject` (write a function name to inject into it, `!name` to stop, blanks
// to stop all; read the injected ones), `injectable` (the ALLOW_ERROR_INJECTION list, "name\tERRNO"),
// `<name>/retval` (what the function returns instead, the two's complement of -errno: `printf %#x
// -12`), and the fault_attr knobs `probability` (percent), `interval`, `times` (-1: no limit) and
// `space`. The kernel overrides the function through a kprobe; here a site asks {@link
// FailFunction.inject} at the function's entry. A kernel boots with nothing injected and
// probability 0 (nothing fails), and none of it survives a kexec.
//
// The simulator's injectable functions are its failure sites of the live update (Linux 7.3 marks
// none of them ALLOW_ERROR_INJECTION; a test kernel would): `luo_file_freeze_one` (one file's
// freeze in `liveupdate_reboot`) and `kho_finalize` (the KHO tree's finalisation at that reboot,
// the step Linux 6.19 had and 7.3's stateless KHO dropped; this simulator still builds its tree there),
// and the iommu live-update series' preserve steps at PRESERVE_FD: `iommu_liveupdate_flb_preserve`
// (the IOMMU core's FLB, with the first preserved iommufd), `iommufd_liveupdate_preserve` and
// `vfio_pci_liveupdate_preserve` (the two file handlers' preserve).
import { ERRNO, errno, type ErrnoCode } from '../uapi/errno.js';
import type { Sysfs } from './sysfs/sysfs.js';

/** `ALLOW_ERROR_INJECTION(name, ERRNO)`: the functions a site may fail, and their error type. */
export const INJECTABLE: readonly string[] = ['luo_file_freeze_one', 'kho_finalize', 'iommu_liveupdate_flb_preserve', 'iommufd_liveupdate_preserve', 'vfio_pci_liveupdate_preserve'];

const DIR = '/sys/kernel/debug/fail_function';
const MAX_ERRNO = 4095n;
const U64 = (1n << 64n) - 1n;
const ERRNO_NAME = new Map<number, ErrnoCode>(Object.entries(ERRNO).map(([k, v]) => [v, k as ErrnoCode]));
const NEG_EINVAL = (1n << 64n) - BigInt(ERRNO.EINVAL);

/** `kstrtoull(s, 0)` / `kstrtoll(s, 0)` of a written value (trailing newline allowed). */
function parseNum(data: Uint8Array, signed: boolean): bigint {
  const s = new TextDecoder().decode(data).replace(/\n$/, '');
  const m = /^([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(s);
  if (!m || (m[1] === '-' && !signed)) return errno('EINVAL', `not a number: ${JSON.stringify(s)}`);
  const digits = m[2]!;
  const v = digits.length > 1 && digits[0] === '0' && !/^0[xX]/.test(digits) ? BigInt(`0o${digits.slice(1)}`) : BigInt(digits);
  if (v > (signed ? (1n << 63n) - 1n : U64)) errno('ERANGE', 'out of range');
  return m[1] === '-' ? -v : v;
}

/** The fault injection of one kernel: `fei_fault_attr`, the injected functions and their retvals. */
export class FailFunction {
  /** `struct fault_attr` (FAULT_ATTR_INITIALIZER: interval 1, times 1, probability 0). */
  probability = 0n;
  interval = 1n;
  times = 1;
  space = 0;
  count = 0n;
  /** Injected functions in injection order, with their retval (u64). */
  private readonly injected = new Map<string, bigint>();

  constructor(
    private readonly sysfs: Sysfs,
    private readonly log: (msg: string) => void,
  ) {
    sysfs.attr(`${DIR}/injectable`, 0o444, { show: () => INJECTABLE.map((n) => `${n}\tERRNO\n`).join('') });
    sysfs.attr(`${DIR}/inject`, 0o600, {
      show: () => [...this.injected.keys()].map((n) => `${n}\n`).join(''),
      store: (_t, data) => this.write(new TextDecoder().decode(data.subarray(0, 512)).trim()),
    });
    const knob = (name: string, get: () => bigint | number, set: (v: bigint) => void, signed = false) =>
      sysfs.attr(`${DIR}/${name}`, 0o600, { show: () => `${get()}\n`, store: (_t, data) => set(parseNum(data, signed)) });
    knob('probability', () => this.probability, (v) => (this.probability = v));
    knob('interval', () => this.interval, (v) => (this.interval = v));
    knob('times', () => this.times, (v) => (this.times = Number(BigInt.asIntN(32, v))), true);
    knob('space', () => this.space, (v) => (this.space = Number(BigInt.asIntN(32, v))), true);
  }

  /** `fei_write`. */
  private write(sym: string): void {
    if (sym === '') {
      for (const n of [...this.injected.keys()]) this.remove(n);
      return;
    }
    if (sym.startsWith('!')) {
      if (!this.injected.has(sym.slice(1))) errno('ENOENT', `${sym.slice(1)} is not injected`);
      return this.remove(sym.slice(1));
    }
    // kallsyms_lookup_name: every injectable site is a symbol; other names are not modelled.
    if (!INJECTABLE.includes(sym)) errno('EINVAL', `no injectable function ${sym}`);
    if (this.injected.has(sym)) errno('EBUSY', `${sym} is injected already`);
    // fei_attr_new: retval = adjust_error_retval(addr, 0), -EINVAL for an ERRNO function.
    this.injected.set(sym, NEG_EINVAL);
    this.sysfs.attr(`${DIR}/${sym}/retval`, 0o600, {
      show: () => `${this.injected.get(sym)!.toString(16)}\n`,
      store: (_t, data) => {
        const v = parseNum(data, false);
        if (!this.injected.has(sym)) errno('ENOENT', `${sym} is no longer injected`);
        // adjust_error_retval: an ERRNO function returns -1..-MAX_ERRNO. (The simulator also
        // refuses an errno its table does not name.)
        if (v < U64 + 1n - MAX_ERRNO || !ERRNO_NAME.has(Number(U64 + 1n - v))) errno('EINVAL', `retval 0x${v.toString(16)} is not an errno this kernel returns`);
        this.injected.set(sym, v);
      },
    });
  }

  private remove(sym: string): void {
    this.injected.delete(sym);
    this.sysfs.remove(`${DIR}/${sym}`);
  }

  /** `should_fail(&fei_fault_attr, 1)` (no fail-nth, no task filter, no stack filter). */
  private shouldFail(): boolean {
    if (this.probability === 0n) return false;
    if (this.times === 0) return false;
    if (this.space > 1) {
      this.space -= 1;
      return false;
    }
    if (this.interval > 1n) {
      this.count++;
      if (this.count % this.interval !== 0n) return false;
    }
    // fault_prandom_u32_below_100(): the simulator has no kernel RNG here, so a probability
    // between 1 and 99 fails every call that reaches it; 100 is what a deterministic test writes.
    if (this.times !== -1) this.times--;
    return true;
  }

  /**
   * The kprobe at the entry of `fn`: the errno it returns instead of running, or null to run it.
   * Only functions written to `inject` can fail.
   */
  inject(fn: string): ErrnoCode | null {
    const retval = this.injected.get(fn);
    if (retval === undefined || !this.shouldFail()) return null;
    const code = ERRNO_NAME.get(Number(U64 + 1n - retval))!;
    this.log(`FAULT_INJECTION: forcing a failure of ${fn} (-${code})`);
    return code;
  }
}
