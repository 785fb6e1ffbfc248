// Failure injection as the LUO model drives and predicts it (kernel/fail_function.c over
// lib/fault-inject.c; the simulator's sites in kernel/fail_function.ts INJECTABLE): the
// `fei_fault_attr` the model tracks, `should_fail`, and arming one site through debugfs.
import { O_WRONLY } from '../../index.js';
import { okAny, okv, type ModelState, type Plan } from './state.js';

/** The errnos an injected failure returns. */
export const LUO_FAIL_ERRNOS: readonly string[] = ['ENOSPC', 'ENOMEM', 'EIO', 'EBUSY', 'EAGAIN', 'EPERM'];
const ERRNO_NR: Record<string, number> = { ENOSPC: 28, ENOMEM: 12, EIO: 5, EBUSY: 16, EAGAIN: 11, EPERM: 1 };
const FF = '/sys/kernel/debug/fail_function';

/** `fei_fault_attr` and the injected functions (kernel/fail_function.ts), as the model tracks them. */
export interface FaultAttr {
  probability: bigint;
  interval: bigint;
  times: number;
  count: bigint;
  injected: Map<string, string>;
}
export const freshAttr = (): FaultAttr => ({ probability: 0n, interval: 1n, times: 1, count: 0n, injected: new Map() });
export const copyAttr = (a: FaultAttr): FaultAttr => ({ ...a, injected: new Map(a.injected) });

/** `should_fail` on a copy: whether the call fails (and the attr after it). */
export function shouldFail(a: FaultAttr): boolean {
  if (a.probability === 0n || a.times === 0) return false;
  if (a.interval > 1n) {
    a.count++;
    if (a.count % a.interval !== 0n) return false;
  }
  if (a.times !== -1) a.times--;
  return true;
}

/** The kprobe at `site`'s entry, on a copy: its errno if it fails now, else null. */
export function injectAt(a: FaultAttr, site: string): string | null {
  const err = a.injected.get(site);
  return err !== undefined && shouldFail(a) ? err : null;
}

function* planWrite(m: ModelState, path: string, value: string, then: () => void): Generator<Plan, void, void> {
  const fd = m.peekFd();
  yield { what: `open ${path}`, run: (s) => s.p.open(path, O_WRONLY), alts: [okv(fd, () => m.allocFd())] };
  yield { what: `write ${JSON.stringify(value)} > ${path}`, run: (s) => s.p.write(fd, value), alts: [okv(value.length, then)] };
  yield { what: `close ${fd}`, run: (s) => s.p.close(fd), alts: [okAny(() => m.freeFd(fd))] };
}

/**
 * Arms one failure site so that its `nth` next call fails with `err`: only it injected,
 * probability 100, interval count + nth (count goes on from earlier failures), times 1.
 */
export function* planArm(m: ModelState, fa: () => FaultAttr, site: string, nth: number, err: string): Generator<Plan, void, void> {
  yield* planWrite(m, `${FF}/inject`, '\n', () => fa().injected.clear());
  yield* planWrite(m, `${FF}/inject`, site, () => fa().injected.set(site, 'EINVAL'));
  const retval = `0x${((1n << 64n) - BigInt(ERRNO_NR[err]!)).toString(16)}`;
  yield* planWrite(m, `${FF}/${site}/retval`, retval, () => fa().injected.set(site, err));
  yield* planWrite(m, `${FF}/probability`, '100', () => (fa().probability = 100n));
  const interval = fa().count + BigInt(nth);
  yield* planWrite(m, `${FF}/interval`, String(interval), () => (fa().interval = interval));
  yield* planWrite(m, `${FF}/times`, '1', () => (fa().times = 1));
}
