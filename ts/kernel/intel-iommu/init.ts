// The driver's init (`intel_iommu_init` → `init_dmars`): which handover the unit's tables come
// from — the RFC's `/intel-iommu` KHO node (serialise.ts) or nothing — then registration with the
// IOMMU core (`iommu_device_register`) and for the kexec shutdown.
import type { IommuUnit } from '../../hw/iommu.js';
import type { KhoNode } from '../kho/kho.js';
import type { KernelServices } from '../services.js';
import { IntelIommu } from './iommu.js';
import { intelKhoRestore } from './serialise.js';

/** Boots the VT-d driver for `unit`, adopting `khoNode` (`/intel-iommu`) if the previous kernel wrote one. */
export function intelIommuInit(svc: KernelServices, unit: IommuUnit, khoNode?: KhoNode): IntelIommu {
  if (!khoNode && svc.kho.incoming?.child('iommufd')) {
    svc.log('DMAR: the handover has persisted iommufds but no /intel-iommu state: domains not adopted, devices blocked');
  }
  const intel = new IntelIommu(svc, unit, khoNode ? (i) => intelKhoRestore(i, khoNode) : undefined);
  svc.iommu.deviceRegister(intel);
  svc.onShutdown((handover) => intel.shutdown(handover));
  return intel;
}
