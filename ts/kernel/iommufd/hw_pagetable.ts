// Paging HWPTs (drivers/iommu/iommufd/hw_pagetable.c): allocating a paging domain for an IOAS,
// IOMMU_HWPT_ALLOC, the dirty-tracking commands (which no legacy-mode domain supports) and
// IOMMU_HWPT_INVALIDATE. `struct iommufd_hwpt_paging` itself is in private.ts.
import { errno, KernelError } from '../../uapi/errno.js';
import * as U from '../../uapi/iommufd.js';
import { PAGE_SIZE } from '../mm.js';
import { ULONG_MAX } from './io_pagetable.js';
import { HwptPaging, Ioas, type IommufdCtx, type IommufdDevice, type Ucmd } from './private.js';

const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** How the auto-domain path attaches the device before the new domain joins the IOAS. */
export interface ImmediateAttach {
  attach(hwpt: HwptPaging): void;
  detach(): void;
}

/**
 * `iommufd_hwpt_paging_alloc`: a new paging domain on `ioas`. With `immediateAttach` the device
 * is attached before the domain joins the IOAS (the auto-domain path, device.ts).
 */
export function hwptPagingAlloc(ictx: IommufdCtx, ioas: Ioas, idev: IommufdDevice, flags: number, immediateAttach: ImmediateAttach | null, userData = false): HwptPaging {
  const iommu = ictx.iommufd.svc.iommu;
  const valid = U.IOMMU_HWPT_ALLOC_NEST_PARENT | U.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | U.IOMMU_HWPT_FAULT_ID_VALID | U.IOMMU_HWPT_ALLOC_PASID;
  if (flags & ~valid) errno('EOPNOTSUPP', 'unknown HWPT_ALLOC flags');
  if (flags & U.IOMMU_HWPT_ALLOC_DIRTY_TRACKING && !iommu.deviceCapable(idev.sid, 'dirty-tracking')) errno('EOPNOTSUPP', 'no dirty tracking in legacy mode');
  if (flags & U.IOMMU_HWPT_FAULT_ID_VALID && flags & U.IOMMU_HWPT_ALLOC_NEST_PARENT) errno('EOPNOTSUPP', 'FAULT_ID_VALID with NEST_PARENT');
  // ops->domain_alloc_paging_flags (the driver never sees FAULT_ID_VALID).
  const domain = iommu.pagingDomainAlloc(idev.sid, flags & ~U.IOMMU_HWPT_FAULT_ID_VALID, userData);
  domain.persistentId = ictx.persistentId;
  const hwpt = new HwptPaging(ioas, domain, false);
  hwpt.pasidCompat = !!(flags & U.IOMMU_HWPT_ALLOC_PASID);
  ictx.reserve(hwpt);
  try {
    immediateAttach?.attach(hwpt);
    try {
      ioas.iopt.addDomain(domain);
      hwpt.inIopt = true;
    } catch (e) {
      immediateAttach?.detach();
      throw e;
    }
  } catch (e) {
    ictx.abort(hwpt);
    throw e;
  }
  ioas.hwpts.push(hwpt);
  ioas.recordDomains();
  return hwpt;
}

/** IOMMU_HWPT_ALLOC (`iommufd_hwpt_alloc`). */
export function hwptAlloc(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_hwpt_alloc>): void {
  const { cmd } = ucmd;
  const flags = cmd.flags;
  const dataType = cmd.data_type;
  if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
  if ((dataType === U.IOMMU_HWPT_DATA_NONE) !== !cmd.data_len) errno('EINVAL', 'data_type and data_len disagree');
  const idev = ictx.getObject<IommufdDevice>(cmd.dev_id, 'DEVICE');
  const pt = ictx.objects.get(cmd.pt_id);
  if (!pt) errno('EINVAL', `no object with id ${cmd.pt_id}`);
  let hwpt: HwptPaging;
  if (pt instanceof Ioas) {
    hwpt = hwptPagingAlloc(ictx, pt, idev, flags, null, dataType !== U.IOMMU_HWPT_DATA_NONE);
  } else if (pt instanceof HwptPaging) {
    // iommufd_hwpt_nested_alloc: the parent must be a NEST_PARENT paging HWPT.
    if (flags & ~(U.IOMMU_HWPT_FAULT_ID_VALID | U.IOMMU_HWPT_ALLOC_PASID) || !cmd.data_len) errno('EOPNOTSUPP', 'nested allocation flags or data');
    if (pt.autoDomain || !pt.nestParent) errno('EINVAL', 'parent is not a NEST_PARENT HWPT');
    return errno('EOPNOTSUPP', 'nesting needs scalable mode');
  } else {
    return errno('EINVAL', 'pt_id is neither an IOAS nor an HWPT');
  }
  try {
    if (flags & U.IOMMU_HWPT_FAULT_ID_VALID) {
      // The domain exists (the driver never saw the flag); now the queue its faults go to.
      const fault = ictx.getObject(cmd.fault_id, 'FAULT');
      hwpt.fault = fault;
      fault.users++;
      hwpt.domain.iopfHandler = true;
    }
    cmd.out_hwpt_id = hwpt.id;
    ictx.respond(ucmd);
  } catch (e) {
    ictx.abort(hwpt);
    throw e;
  }
  ictx.finalize(hwpt);
}

/** IOMMU_HWPT_SET_DIRTY_TRACKING (`iommufd_hwpt_set_dirty_tracking`). */
export function hwptSetDirtyTracking(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_hwpt_set_dirty_tracking>): void {
  // iommufd_hwpt_set_dirty_tracking checks the flags only, not __reserved.
  if (cmd.flags & ~U.IOMMU_HWPT_DIRTY_TRACKING_ENABLE) errno('EOPNOTSUPP', 'unknown flags');
  ictx.getObject<HwptPaging>(cmd.hwpt_id, 'HWPT_PAGING');
  errno('EOPNOTSUPP', 'the domain has no dirty-tracking ops');
}

/** IOMMU_HWPT_GET_DIRTY_BITMAP (`iommufd_hwpt_get_dirty_bitmap`). */
export function hwptGetDirtyBitmap(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_hwpt_get_dirty_bitmap>): void {
  if (cmd.flags & ~U.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR || cmd.__reserved) errno('EOPNOTSUPP', 'unknown flags or __reserved set');
  const hwpt = ictx.getObject<HwptPaging>(cmd.hwpt_id, 'HWPT_PAGING');
  // iommufd_check_iova_range
  const iova = cmd.iova;
  const length = cmd.length;
  const pageSize = cmd.page_size;
  // A zero length is refused before length - 1 is formed.
  if (length === 0n) errno('EINVAL', 'zero length');
  const last = iova + length - 1n;
  if (last > ULONG_MAX) errno('EOVERFLOW', 'iova + length overflows');
  const end = (last + 1n) & U64_MAX;
  const align = hwpt.ioas.iopt.iovaAlignment - 1n;
  if (iova & align || end & align) errno('EINVAL', 'range not aligned to iova_alignment');
  if (pageSize === 0n) errno('EINVAL', 'page_size is 0');
  if (iova & (pageSize - 1n) || end & (pageSize - 1n)) errno('EINVAL', 'range not aligned to page_size');
  errno('EOPNOTSUPP', 'the domain has no dirty-tracking ops');
}

/** IOMMU_HWPT_INVALIDATE (`iommufd_hwpt_invalidate`). */
export function hwptInvalidate(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_hwpt_invalidate>): void {
  const { cmd } = ucmd;
  const fail = (): never => {
    if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
    // Bounds so that one call cannot pin the CPU (IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX = 1 << 19).
    const num = cmd.entry_num;
    const len = cmd.entry_len;
    if (num && (!cmd.data_uptr || !len || len > PAGE_SIZE || num > 1 << 19)) errno('EINVAL', 'bad entry array');
    if (!ictx.objects.get(cmd.hwpt_id)) errno('ENOENT', `no object with id ${cmd.hwpt_id}`);
    // Nested HWPTs and vIOMMUs take user invalidations; legacy mode can create neither.
    return errno('EINVAL', 'only a nested HWPT or a vIOMMU takes user invalidations');
  };
  let failure: unknown;
  try {
    fail();
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
    failure = e;
  }
  // Every outcome writes entry_num back as the number handled; a fault doing so is EFAULT.
  cmd.entry_num = 0;
  ictx.respond(ucmd);
  throw failure;
}

/**
 * The iommufds preserved in an outgoing LUO session (the iommufd-v1 handler's preserve adds,
 * its unpreserve removes): their set of marked HWPTs was serialised and their IOASes frozen.
 */
export const luPreservedCtxs = new WeakSet<IommufdCtx>();

/**
 * IOMMU_HWPT_LU_SET_PRESERVE (`iommufd_hwpt_lu_set_preserve`, iommu live-update series patch
 * 10): marks a paging HWPT to be preserved with the iommufd, under a token unique among the
 * context's marked HWPTs (EADDRINUSE). Marking again replaces the token. Without live update
 * (`CONFIG_IOMMU_LIVEUPDATE` off, here: no `liveupdate=on`) the stub answers ENOTTY, after the
 * size rules as for every table entry. Once the iommufd is preserved (PRESERVE_FD serialised
 * `iommufd_lu` and froze the marked HWPTs' IOASes), a new mark or token could not reach the next
 * kernel: EBUSY, as the frozen IOAS answers, until the session unpreserves it.
 */
export function hwptLuSetPreserve(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_hwpt_lu_set_preserve>): void {
  if (!ictx.iommufd.svc.liveupdate.enabled) errno('ENOTTY', 'live update is not enabled');
  const target = ictx.getObject<HwptPaging>(cmd.hwpt_id, 'HWPT_PAGING');
  if (luPreservedCtxs.has(ictx)) errno('EBUSY', 'the iommufd is preserved: its HWPT set was serialised');
  for (const obj of ictx.objects.values()) {
    if (obj instanceof HwptPaging && obj !== target && obj.luPreserve && obj.luToken === cmd.hwpt_token) errno('EADDRINUSE', `token ${cmd.hwpt_token} marks HWPT ${obj.id} already`);
  }
  target.luPreserve = true;
  target.luToken = cmd.hwpt_token;
}
