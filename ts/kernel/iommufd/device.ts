// A bound device's attachments (drivers/iommu/iommufd/device.c): attach, replace and detach of an
// HWPT or of an IOAS through its automatic HWPT, per PASID; the IOAS's reserved regions; bind and
// unbind for VFIO; IOMMU_GET_HW_INFO. The IOMMU is reached through the core only.
import { errno, KernelError } from '../../uapi/errno.js';
import * as U from '../../uapi/iommufd.js';
import { hwptPagingAlloc } from './hw_pagetable.js';
import { HwptPaging, Ioas, IommufdDevice, type IommufdCtx, type IommufdObject, type IommufdSubsystem, type Ucmd } from './private.js';

/**
 * Ends `sid`'s restored attachment if the device has left its restored domain; with `block` it
 * leaves now (`iommufd_device_unbind` releases DMA ownership: the device is blocked).
 */
export function restoredAttachEnd(iommufd: IommufdSubsystem, sid: number, block = false): void {
  const iommu = iommufd.svc.iommu;
  if (block && iommu.isRestoredAttach(sid)) iommu.blockDevice(sid);
  const ra = iommufd.restoredAttach.get(sid);
  if (!ra || iommu.isRestoredAttach(sid)) return;
  iommufd.restoredAttach.delete(sid);
  ra.hwpt.ioas.iopt.removeReserved(ra);
  ra.hwpt.users--;
}

/** What `idev` is attached to at `pasid` (0 is IOMMU_NO_PASID). */
function attachedAt(idev: IommufdDevice, pasid: number): HwptPaging | null {
  return pasid === 0 ? idev.hwpt : (idev.pasidHwpts.get(pasid) ?? null);
}

/**
 * `iommufd_hwpt_pasid_compat`: the attachment without PASID and the PASID ones must all be on
 * ALLOC_PASID HWPTs once there is any PASID attachment.
 */
function checkPasidCompat(idev: IommufdDevice, hwpt: HwptPaging, pasid: number): void {
  if (pasid === 0) {
    if (!hwpt.pasidCompat && idev.pasidHwpts.size) errno('EINVAL', 'the device has PASID attachments: the HWPT needs ALLOC_PASID');
  } else {
    if (!hwpt.pasidCompat) errno('EINVAL', 'a PASID attachment needs an ALLOC_PASID HWPT');
    if (idev.hwpt && !idev.hwpt.pasidCompat) errno('EINVAL', 'the device is attached to an HWPT without ALLOC_PASID');
  }
}

/**
 * `iommufd_hw_pagetable_attach` at `pasid`: the reserved regions (without PASID only), then the
 * domain on the device. A PASID attachment is bookkeeping only here: the edu function has no
 * PASID capability (max_pasids 0), so `__iommu_set_group_pasid` skips it and nothing reaches
 * the driver.
 */
export function attachHwpt(idev: IommufdDevice, hwpt: HwptPaging, pasid = 0): void {
  // xa_insert into the attachment's device_array: the device is in it already.
  if (attachedAt(idev, pasid)) errno('EBUSY', `device is attached at PASID ${pasid} already`);
  if (pasid !== 0) {
    checkPasidCompat(idev, hwpt, pasid);
    idev.pasidHwpts.set(pasid, hwpt);
    hwpt.users++;
    return;
  }
  enforceResvRegions(idev, hwpt.ioas);
  try {
    checkPasidCompat(idev, hwpt, 0);
    idev.ictx.iommufd.svc.iommu.attachDevice(hwpt.domain, idev.sid);
  } catch (e) {
    hwpt.ioas.iopt.removeReserved(idev);
    throw e;
  }
  idev.hwpt = hwpt;
  hwpt.users++;
}

/** `iopt_table_enforce_dev_resv_regions`. */
function enforceResvRegions(idev: IommufdDevice, ioas: Ioas): void {
  try {
    for (const r of idev.ictx.iommufd.svc.iommu.getResvRegions(idev.sid)) ioas.iopt.reserveIova(r.start, r.start + r.length - 1n, idev);
  } catch (e) {
    ioas.iopt.removeReserved(idev);
    throw e;
  }
}

/** `iommufd_hw_pagetable_detach`: the device goes to the blocking domain. Returns the old HWPT. */
export function detachHwpt(idev: IommufdDevice, pasid = 0): HwptPaging | null {
  if (pasid !== 0) {
    const old = idev.pasidHwpts.get(pasid) ?? null;
    if (old) {
      idev.pasidHwpts.delete(pasid);
      old.users--;
    }
    return old;
  }
  const hwpt = idev.hwpt;
  if (!hwpt) return null;
  idev.ictx.iommufd.svc.iommu.blockDevice(idev.sid);
  hwpt.ioas.iopt.removeReserved(idev);
  idev.hwpt = null;
  hwpt.users--;
  return hwpt;
}

/** `iommufd_hw_pagetable_put`: an auto domain dies with its last device. */
function hwptPut(ictx: IommufdCtx, hwpt: HwptPaging): void {
  if (hwpt.autoDomain) ictx.tryDestroy(hwpt);
}

/** `iommufd_device_do_replace` at `pasid`. */
function replaceHwpt(idev: IommufdDevice, hwpt: HwptPaging, pasid = 0): HwptPaging | null {
  const old = attachedAt(idev, pasid);
  if (!old) errno('EINVAL', 'device is not attached');
  if (old === hwpt) return null;
  if (pasid !== 0) {
    checkPasidCompat(idev, hwpt, pasid);
    idev.pasidHwpts.set(pasid, hwpt);
    hwpt.users++;
    old.users--;
    return old;
  }
  const newIoas = old.ioas !== hwpt.ioas;
  if (newIoas) enforceResvRegions(idev, hwpt.ioas);
  try {
    checkPasidCompat(idev, hwpt, 0);
    idev.ictx.iommufd.svc.iommu.attachDevice(hwpt.domain, idev.sid);
  } catch (e) {
    if (newIoas) hwpt.ioas.iopt.removeReserved(idev);
    throw e;
  }
  if (newIoas) old.ioas.iopt.removeReserved(idev);
  idev.hwpt = hwpt;
  hwpt.users++;
  old.users--;
  return old;
}

/**
 * `iommufd_device_change_pt` for attach (`replace` false) or replace at `pasid` (0 is
 * IOMMU_NO_PASID): `ptId` names an HWPT, or an IOAS whose compatible auto domain is reused or
 * created. Returns the HWPT id.
 */
export function deviceChangePt(idev: IommufdDevice, ptId: number, replace: boolean, pasid = 0): number {
  const ictx = idev.ictx;
  const pt = ictx.objects.get(ptId);
  if (!pt) errno('ENOENT', `no object with id ${ptId}`);
  try {
    return changePt(idev, pt, replace, pasid);
  } finally {
    // Attached anywhere (or blocked by a failed first attach), it has left its restored domain.
    restoredAttachEnd(ictx.iommufd, idev.sid);
  }
}

function changePt(idev: IommufdDevice, pt: IommufdObject, replace: boolean, pasid: number): number {
  const ictx = idev.ictx;
  const doAttach = (h: HwptPaging): HwptPaging | null => (replace ? replaceHwpt(idev, h, pasid) : (attachHwpt(idev, h, pasid), null));
  let old: HwptPaging | null;
  let id: number;
  if (pt instanceof HwptPaging) {
    old = doAttach(pt);
    id = pt.id;
  } else if (pt instanceof Ioas) {
    ({ old, id } = autoGetDomain(idev, pt, replace, doAttach, pasid));
  } else {
    return errno('EINVAL', 'pt_id is neither an IOAS nor an HWPT');
  }
  if (old) hwptPut(ictx, old);
  return id;
}

function autoGetDomain(idev: IommufdDevice, ioas: Ioas, replace: boolean, doAttach: (h: HwptPaging) => HwptPaging | null, pasid: number): { old: HwptPaging | null; id: number } {
  for (const hwpt of ioas.hwpts) {
    if (!hwpt.autoDomain) continue;
    try {
      return { old: doAttach(hwpt), id: hwpt.id };
    } catch (e) {
      // EINVAL means incompatible: try the next one. Anything else is the answer.
      if (e instanceof KernelError && e.code === 'EINVAL') continue;
      throw e;
    }
  }
  const ictx = idev.ictx;
  const immediate = replace ? null : { attach: (h: HwptPaging) => attachHwpt(idev, h, pasid), detach: () => void detachHwpt(idev, pasid) };
  const hwpt = hwptPagingAlloc(ictx, ioas, idev, 0, immediate);
  let old: HwptPaging | null = null;
  if (replace) {
    try {
      old = doAttach(hwpt);
    } catch (e) {
      ioas.hwpts.splice(ioas.hwpts.indexOf(hwpt), 1);
      ioas.recordDomains();
      ictx.abort(hwpt);
      throw e;
    }
  }
  hwpt.autoDomain = true;
  ictx.finalize(hwpt);
  return { old, id: hwpt.id };
}

/** `iommufd_device_detach` at `pasid`. */
export function deviceDetach(idev: IommufdDevice, pasid = 0): void {
  const old = detachHwpt(idev, pasid);
  if (old) hwptPut(idev.ictx, old);
}

/** `iommufd_device_bind`: a DEVICE object; the device is claimed for DMA (blocked). */
export function deviceBind(ictx: IommufdCtx, sid: number, name: string): IommufdDevice {
  // A device the previous kernel preserved is owned by its restored iommufd until FINISH.
  const claimed = ictx.iommufd.svc.iommu.liveupdate?.claimed;
  if (claimed?.has(sid) && claimed.get(sid) !== ictx) errno('EBUSY', 'the device is owned by a preserved iommufd until its session finishes');
  const idev = new IommufdDevice(ictx, sid, name);
  ictx.reserve(idev);
  ictx.finalize(idev);
  idev.users++; // the VFIO device holds it until unbind
  // Claiming DMA ownership blocks the device, except one still translating through a domain the
  // previous kernel handed over: its VMM is re-binding it, and its DMA must not stop.
  const iommu = ictx.iommufd.svc.iommu;
  if (!iommu.isRestoredAttach(sid)) iommu.blockDevice(sid);
  return idev;
}

/** `iommufd_device_unbind`. */
export function deviceUnbind(idev: IommufdDevice): void {
  for (const pasid of [...idev.pasidHwpts.keys()]) deviceDetach(idev, pasid);
  deviceDetach(idev);
  restoredAttachEnd(idev.ictx.iommufd, idev.sid, true);
  idev.users--;
  idev.ictx.tryDestroy(idev);
}

/** IOMMU_GET_HW_INFO (`iommufd_get_hw_info`). */
export function getHwInfo(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_hw_info>): void {
  const { cmd, u } = ucmd;
  const flags = cmd.flags;
  if (flags & ~U.IOMMU_HW_INFO_FLAG_INPUT_TYPE || cmd.__reserved0 || cmd.__reserved1 || cmd.__reserved2) errno('EOPNOTSUPP', 'unknown flags or __reserved set');
  // Without INPUT_TYPE whatever the union holds asks for the default type.
  const inType = flags & U.IOMMU_HW_INFO_FLAG_INPUT_TYPE ? cmd.in_data_type : U.IOMMU_HW_INFO_TYPE_DEFAULT;
  const idev = ictx.getObject<IommufdDevice>(cmd.dev_id, 'DEVICE');
  // ops->hw_info: the driver answers the default type or its own, nothing else (EOPNOTSUPP).
  const iommu = ictx.iommufd.svc.iommu;
  const { type, data } = iommu.hwInfo(idev.sid, inType);
  const want = cmd.data_len;
  const copy = Math.min(want, data.length);
  const ptr = cmd.data_uptr;
  u.write(ptr, data.subarray(0, copy));
  if (copy < want) u.write(ptr + BigInt(copy), new Uint8Array(want - copy));
  cmd.data_len = data.length;
  cmd.out_data_type = type; // the union's output member: what respond writes
  // max_pasids is 0 (PASID needs scalable mode): no max_pasid_log2, no PASID_EXEC/PRIV.
  cmd.out_max_pasid_log2 = 0;
  let caps = 0;
  if (iommu.deviceCapable(idev.sid, 'dirty-tracking')) caps |= U.IOMMU_HW_CAP_DIRTY_TRACKING;
  if (!iommu.deviceCapable(idev.sid, 'pci-ats-supported')) caps |= U.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED;
  cmd.out_capabilities = BigInt(caps);
  ictx.respond(ucmd);
}
