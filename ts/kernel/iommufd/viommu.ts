// vIOMMUs (drivers/iommu/iommufd/viommu.c): IOMMU_VIOMMU_ALLOC, and the objects that hang on a
// vIOMMU — vDEVICEs and HW queues here, vEVENTQs in eventq.ts.
//
// A vIOMMU needs driver support, and the Intel driver has none in 7.3 (intel_iommu_ops has no
// get_viommu_size or viommu_init): VIOMMU_ALLOC fails with EOPNOTSUPP once its own checks and
// the device lookup pass. So no IOMMUFD_OBJ_VIOMMU ever exists on this unit, and every command
// taking a viommu_id ends at that lookup (ENOENT), after the checks the kernel makes before it.
// What those commands would do next (vdevice_init, the HW queue's pinned access, ...) is not
// modelled.
import { errno } from '../../uapi/errno.js';
import * as U from '../../uapi/iommufd.js';
import { type IommufdCtx, type Ucmd } from './private.js';

const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** `iommufd_get_viommu`: ENOENT, as no vIOMMU can be allocated on this unit. */
export function getViommu(ictx: IommufdCtx, id: number): never {
  ictx.getObject(id, 'VIOMMU');
  throw new Error(`iommufd: object ${id} is a vIOMMU, which the Intel driver cannot allocate`);
}

/** IOMMU_VIOMMU_ALLOC (`iommufd_viommu_alloc_ioctl`). */
export function viommuAlloc(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_viommu_alloc>): void {
  // Neither __reserved nor the driver data is looked at before the driver; hwpt_id only after it.
  if (cmd.flags || cmd.type === U.IOMMU_VIOMMU_TYPE_DEFAULT) errno('EOPNOTSUPP', 'flags must be 0 and type not DEFAULT');
  ictx.getObject(cmd.dev_id, 'DEVICE');
  // iommufd_device_get_iommu_dev is the VT-d unit; its ops lack get_viommu_size / viommu_init.
  errno('EOPNOTSUPP', 'the Intel IOMMU driver has no vIOMMU support');
}

/** IOMMU_VDEVICE_ALLOC (`iommufd_vdevice_alloc_ioctl`). */
export function vdeviceAlloc(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_vdevice_alloc>): void {
  // virt_id > ULONG_MAX (it indexes an xarray) is EINVAL, which no u64 is on a 64-bit kernel.
  getViommu(ictx, cmd.viommu_id);
}

/** IOMMU_HW_QUEUE_ALLOC (`iommufd_hw_queue_alloc_ioctl`). */
export function hwQueueAlloc(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_hw_queue_alloc>): void {
  if (cmd.flags || cmd.type === U.IOMMU_HW_QUEUE_TYPE_DEFAULT) errno('EOPNOTSUPP', 'flags must be 0 and type not DEFAULT');
  const length = cmd.length;
  if (!length) errno('EINVAL', 'zero length');
  if (cmd.nesting_parent_iova + length - 1n > U64_MAX) errno('EOVERFLOW', 'nesting_parent_iova + length - 1 overflows');
  getViommu(ictx, cmd.viommu_id);
}
