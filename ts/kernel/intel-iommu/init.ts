// The driver's init (`intel_iommu_init` → `init_dmars`): which handover the unit's tables come
// from — the RFC's `/intel-iommu` KHO node (serialise.ts) or nothing — then registration with the
// IOMMU core (`iommu_device_register`) and for the kexec shutdown. With live update on, the iommu
// FLB comes first (`iommu_get_preserved_data(reg_phys, IOMMU_INTEL)`): what it preserved of the
// unit takes precedence over `/intel-iommu`, which a LUO kexec writes too.
import type { IommuUnit } from '../../hw/iommu.js';
import type { IommuLiveupdate } from '../iommu_liveupdate.js';
import type { KhoNode } from '../kho/kho.js';
import type { KernelServices } from '../services.js';
import { IntelIommu } from './iommu.js';
import { intelLiveupdateOps, intelLiveupdateRestore } from './liveupdate.js';
import { intelKhoRestore } from './serialise.js';

/**
 * Boots the VT-d driver for `unit`: adopts what the iommu FLB preserved (`lu`, when live update is
 * on), else `khoNode` (`/intel-iommu`) if the previous kernel wrote one, else fresh tables.
 */
export function intelIommuInit(svc: KernelServices, unit: IommuUnit, khoNode?: KhoNode, lu?: IommuLiveupdate | null): IntelIommu {
  if (!khoNode && svc.kho.incoming?.child('iommufd')) {
    svc.log('DMAR: the handover has persisted iommufds but no /intel-iommu state: domains not adopted, devices blocked');
  }
  const inc = lu?.incoming() ?? null;
  const adopt = (i: IntelIommu): bigint | null => {
    if (inc && lu) {
      try {
        const root = intelLiveupdateRestore(i, lu, inc);
        if (root !== null) return root;
      } catch (e) {
        lu.restored.clear();
        lu.claimed.clear();
        throw e;
      }
    }
    return khoNode ? intelKhoRestore(i, khoNode) : null;
  };
  const intel = new IntelIommu(svc, unit, inc || khoNode ? adopt : undefined);
  svc.iommu.deviceRegister(intel);
  lu?.setDriver(intelLiveupdateOps(intel));
  svc.onShutdown((handover) => intel.shutdown(handover));
  return intel;
}
