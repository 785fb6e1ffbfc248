// Re-entrancy and unexpected errors at the boundary between the caller and the simulated machine.
//
// Phase observers (`host.onPhase`) and KHO failure-injection hooks (`kho.failPoint`) are the
// caller's code running inside a transition of the machine, as a notifier callback or an
// interrupt handler runs inside the kernel. They may act on the hardware (memory, DMA, the
// IOMMU's registers) and read what is recorded (timeline, dmesg), but they cannot enter the
// kernel or start another transition: the Host, the Kernel and Kho refuse it (see README,
// "Re-entrancy"). This module holds the errors those refusals and the syscall boundary use.

/** Errors the caller's own code threw from an observer or a hook: passed through, never wrapped. */
const fromCallback = new WeakSet<object>();

/** Marks `e` as thrown by the caller's callback (an observer or a failure-injection hook). */
export function callbackError<T>(e: T): T {
  if (typeof e === 'object' && e !== null) fromCallback.add(e);
  return e;
}

/** Was `e` thrown by the caller's callback? */
export function isCallbackError(e: unknown): boolean {
  return typeof e === 'object' && e !== null && fromCallback.has(e);
}

/**
 * A host-level operation refused in the machine's current state: Node's `ERR_INVALID_STATE`
 * (an `Error` whose message starts `Invalid state:`, as Node's own APIs throw it).
 */
export function invalidState(msg: string): Error & { code: 'ERR_INVALID_STATE' } {
  return Object.assign(new Error(`Invalid state: ${msg}`), { code: 'ERR_INVALID_STATE' as const });
}

/**
 * A bug of the simulator surfacing through a syscall (an `ERR_PHYSMEM_*` from memory the
 * kernel mismanaged, a broken invariant): not an errno the kernel would return, so not a
 * `SyscallError`, and not the raw internal error either. Node's `ERR_INTERNAL_ASSERTION`, with
 * the original error as `cause` so that it stays visible in full.
 */
export function internalError(e: unknown, where: string): Error & { code: 'ERR_INTERNAL_ASSERTION' } {
  const what = e instanceof Error ? `${(e as { code?: unknown }).code ?? e.name}: ${e.message}` : String(e);
  return Object.assign(new Error(`${where}: internal error in the simulated kernel (${what}); this is a bug in iommu-liveupdate, see .cause`, { cause: e }), {
    code: 'ERR_INTERNAL_ASSERTION' as const,
  });
}
