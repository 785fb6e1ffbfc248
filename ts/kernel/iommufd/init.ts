// The iommufd subsystem of one kernel (main.c's `iommufd_init`): its contexts, the persistent ids
// (RFC), what the previous kernel handed over, and /dev/iommu. It gets the kernel's services and
// guestmemfs (where long-term pins of persistent contexts are recorded), never the kernel.
import type { Guestmemfs } from '../guestmemfs/guestmemfs.js';
import type { KhoNode } from '../kho/kho.js';
import type { KernelServices } from '../services.js';
import { iommufdFopsOpen } from './main.js';
import { PersistedIommufds } from './persist.js';
import type { IommufdCtx, IommufdSubsystem, RestoredAttach } from './private.js';

/** What iommufd needs besides the kernel's services. */
export interface IommufdDeps {
  /** The guestmemfs carve-out, if `guestmemfs=` reserved one. */
  guestmemfs: Guestmemfs | null;
}

/** `struct iommufd` state of one kernel. */
export class Iommufd implements IommufdSubsystem {
  readonly guestmemfs: Guestmemfs | null;
  readonly ctxs = new Set<IommufdCtx>();
  readonly persistent = new Map<number, IommufdCtx>();
  readonly restoredAttach = new Map<number, RestoredAttach>();
  /** What the previous kernel persisted, waiting to be claimed through sysfs. */
  readonly persisted: PersistedIommufds;

  constructor(
    readonly svc: KernelServices,
    deps: IommufdDeps,
    incoming?: KhoNode,
  ) {
    this.guestmemfs = deps.guestmemfs;
    this.persisted = new PersistedIommufds(this, incoming);
  }

  pendingId(id: number): boolean {
    // Unset only while the handover is being read.
    return this.persisted?.pending.has(id) ?? false;
  }
}

/**
 * `iommufd_init`: re-hydrates what the previous kernel handed over under `/iommufd` (offered in
 * sysfs once verified) and registers /dev/iommu (crw-rw---- root root).
 */
export function iommufdInit(svc: KernelServices, deps: IommufdDeps, incoming?: KhoNode): Iommufd {
  const iommufd = new Iommufd(svc, deps, incoming);
  svc.chrdevs.register({ path: '/dev/iommu', mode: 0o660, open: (task, flags) => iommufdFopsOpen(iommufd, task, flags) });
  return iommufd;
}
