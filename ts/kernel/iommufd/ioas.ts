// The IOAS commands of ioas.c that 7.3 added to the ones in main.ts: IOMMU_IOAS_CHANGE_PROCESS
// and IOMMU_IOAS_NOIOMMU_GET_PA.
import { errno } from '../../uapi/errno.js';
import type { Process } from '../process.js';
import type { Ioas, IommufdCtx } from './main.js';
import type { Ucmd } from './object.js';
import type { AccountMode, IoptPages, PinAccount } from './pages.js';

/** `need_charge_update`: whether pages charged to `a` are charged to another process than `proc`. */
function needChargeUpdate(a: PinAccount, proc: Process): boolean {
  switch (a.mode) {
    case 'none':
      return false;
    case 'mm':
      return a.mm !== proc.mm;
    case 'user':
      // The mm's pinned_vm moves too.
      return a.uid !== proc.uid || a.mm !== proc.mm;
  }
}

/**
 * IOMMU_IOAS_CHANGE_PROCESS (`iommufd_ioas_change_process`): the pins of every area of every IOAS
 * of the context are charged to the caller from now on. Only IOAS_MAP_FILE areas can move (a
 * user-VA map pins through its mm); nothing changes if anything fails.
 */
export function ioasChangeProcess(ictx: IommufdCtx, { cmd, proc }: Ucmd): void {
  if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
  // iommufd_take_all_iova_rwsem: every IOAS, by id.
  const ioases = [...ictx.objects.values()].filter((o): o is Ioas => o.type === 'IOAS').sort((a, b) => a.id - b.id);
  const areas = ioases.flatMap((ioas) => ioas.iopt.areas);
  for (const area of areas) {
    if (!area.pages) errno('EBUSY', 'an area is being unmapped');
    if (area.pages.source.type !== 'file') errno('EINVAL', 'an area was not mapped with IOMMU_IOAS_MAP_FILE');
  }
  // Each iopt_pages once, however many areas (COPY) share it.
  const all = [...new Set(areas.map((a) => a.pages as IoptPages))];
  const moving = all.filter((pages) => needChargeUpdate(pages.account, proc));
  // charge_current: what they pin, by mode, to the caller first, all or nothing (ENOMEM).
  const npinned: Record<AccountMode, number> = { none: 0, user: 0, mm: 0 };
  for (const pages of moving) npinned[pages.account.mode] += pages.npinned;
  const charged: [PinAccount, number][] = [];
  try {
    for (const mode of ['none', 'user', 'mm'] as const) {
      if (!npinned[mode]) continue;
      const to = ictx.accounter(proc, mode);
      to.charge(npinned[mode]);
      charged.push([to, npinned[mode]]);
    }
  } catch (e) {
    for (const [to, n] of charged) to.uncharge(n);
    throw e;
  }
  // Then off the old owner, and change_mm: every area's pages now belong to the caller, in their
  // mode. NONE pages included, though nothing was moved for them: their pinned_vm, counted on the
  // old mm, is taken off the caller's when they unpin, as the kernel does.
  for (const pages of moving) pages.account.uncharge(pages.npinned);
  for (const pages of all) pages.account = ictx.accounter(proc, pages.account.mode);
}

/**
 * IOMMU_IOAS_NOIOMMU_GET_PA: the IOVA → physical address lookup for VFIO's unsafe no-IOMMU
 * devices. ioas.c builds it with CONFIG_IOMMUFD_NOIOMMU, which only VFIO_NOIOMMU selects; a VT-d
 * host kernel has that off (so does the lab kernel, oracle/kernel.config), and then the stub in
 * iommufd_private.h answers EOPNOTSUPP to every call that passes the size rules, whatever it holds.
 *
 * Not modelled, the same command with CONFIG_IOMMUFD_NOIOMMU=y on this unit: no CAP_SYS_RAWIO is
 * EPERM; then flags or __reserved EOPNOTSUPP, a zero length EINVAL, iova >= ULONG_MAX EOVERFLOW,
 * no such IOAS ENOENT, nothing mapped at iova ENOENT, and a mapped iova EOPNOTSUPP again (its
 * storage domain is not the no-IOMMU one: no device here is a no-IOMMU device).
 */
export function ioasNoiommuGetPa(_ictx: IommufdCtx, _ucmd: Ucmd): void {
  errno('EOPNOTSUPP', 'built without CONFIG_IOMMUFD_NOIOMMU');
}
