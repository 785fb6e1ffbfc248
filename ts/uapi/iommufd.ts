// include/uapi/linux/iommufd.h: command numbers, flags and struct layouts.
import type { IoctlRequest } from './ioc.js';
import { offsetofend, struct, union, type StructFieldName, type StructLayout } from './struct.js';

/** `IOMMUFD_TYPE` (';'). */
export const IOMMUFD_TYPE = 0x3b;
/** `IOMMUFD_CMD_BASE`. */
export const IOMMUFD_CMD_BASE = 0x80;

/** `_IO(type, nr)`: no direction or size bits, as iommufd and VFIO encode their commands. */
export const _IO = (type: number, nr: number): number => (type << 8) | nr;

/**
 * `_IO(type, nr)` of a command whose argument is `struct L`: the same number, typed with the
 * struct it takes (`export const IOMMU_IOAS_MAP: IoctlRequest<typeof iommu_ioas_map> = _IO_struct(...)`;
 * `L` comes from the declared type).
 */
export const _IO_struct = <L extends StructLayout>(type: number, nr: number): IoctlRequest<L> => _IO(type, nr) as IoctlRequest<L>;

export const IOMMU_DESTROY: IoctlRequest<typeof iommu_destroy> = _IO_struct(IOMMUFD_TYPE, 0x80);
export const IOMMU_IOAS_ALLOC: IoctlRequest<typeof iommu_ioas_alloc> = _IO_struct(IOMMUFD_TYPE, 0x81);
export const IOMMU_IOAS_ALLOW_IOVAS: IoctlRequest<typeof iommu_ioas_allow_iovas> = _IO_struct(IOMMUFD_TYPE, 0x82);
export const IOMMU_IOAS_COPY: IoctlRequest<typeof iommu_ioas_copy> = _IO_struct(IOMMUFD_TYPE, 0x83);
export const IOMMU_IOAS_IOVA_RANGES: IoctlRequest<typeof iommu_ioas_iova_ranges> = _IO_struct(IOMMUFD_TYPE, 0x84);
export const IOMMU_IOAS_MAP: IoctlRequest<typeof iommu_ioas_map> = _IO_struct(IOMMUFD_TYPE, 0x85);
export const IOMMU_IOAS_UNMAP: IoctlRequest<typeof iommu_ioas_unmap> = _IO_struct(IOMMUFD_TYPE, 0x86);
export const IOMMU_OPTION: IoctlRequest<typeof iommu_option> = _IO_struct(IOMMUFD_TYPE, 0x87);
export const IOMMU_VFIO_IOAS: IoctlRequest<typeof iommu_vfio_ioas> = _IO_struct(IOMMUFD_TYPE, 0x88);
export const IOMMU_HWPT_ALLOC: IoctlRequest<typeof iommu_hwpt_alloc> = _IO_struct(IOMMUFD_TYPE, 0x89);
export const IOMMU_GET_HW_INFO: IoctlRequest<typeof iommu_hw_info> = _IO_struct(IOMMUFD_TYPE, 0x8a);
export const IOMMU_HWPT_SET_DIRTY_TRACKING: IoctlRequest<typeof iommu_hwpt_set_dirty_tracking> = _IO_struct(IOMMUFD_TYPE, 0x8b);
export const IOMMU_HWPT_GET_DIRTY_BITMAP: IoctlRequest<typeof iommu_hwpt_get_dirty_bitmap> = _IO_struct(IOMMUFD_TYPE, 0x8c);
export const IOMMU_HWPT_INVALIDATE: IoctlRequest<typeof iommu_hwpt_invalidate> = _IO_struct(IOMMUFD_TYPE, 0x8d);
export const IOMMU_FAULT_QUEUE_ALLOC: IoctlRequest<typeof iommu_fault_alloc> = _IO_struct(IOMMUFD_TYPE, 0x8e);
export const IOMMU_IOAS_MAP_FILE: IoctlRequest<typeof iommu_ioas_map_file> = _IO_struct(IOMMUFD_TYPE, 0x8f);
export const IOMMU_VIOMMU_ALLOC: IoctlRequest<typeof iommu_viommu_alloc> = _IO_struct(IOMMUFD_TYPE, 0x90);
export const IOMMU_VDEVICE_ALLOC: IoctlRequest<typeof iommu_vdevice_alloc> = _IO_struct(IOMMUFD_TYPE, 0x91);
export const IOMMU_IOAS_CHANGE_PROCESS: IoctlRequest<typeof iommu_ioas_change_process> = _IO_struct(IOMMUFD_TYPE, 0x92);
export const IOMMU_VEVENTQ_ALLOC: IoctlRequest<typeof iommu_veventq_alloc> = _IO_struct(IOMMUFD_TYPE, 0x93);
export const IOMMU_HW_QUEUE_ALLOC: IoctlRequest<typeof iommu_hw_queue_alloc> = _IO_struct(IOMMUFD_TYPE, 0x94);
export const IOMMU_IOAS_NOIOMMU_GET_PA: IoctlRequest<typeof iommu_ioas_noiommu_get_pa> = _IO_struct(IOMMUFD_TYPE, 0x95);
/**
 * `IOMMUFD_CMD_HWPT_LU_SET_PRESERVE` of the iommu live-update series (Khawaja/Zhu, "iommu: Add
 * live update state preservation", v1 3 Feb 2026, patch 10/14). The series gave it 0x95, which
 * Linux 7.3 has given to IOMMU_IOAS_NOIOMMU_GET_PA; no posted revision is rebased past 7.3, so it
 * takes the next free number, 0x96 (README, "The upstream flow").
 */
export const IOMMUFD_CMD_HWPT_LU_SET_PRESERVE = 0x96;
/** The ioctls of posted series that Linux 7.3's headers do not have (the oracle lab's guest cannot name them). */
export const SERIES_IOCTLS: ReadonlySet<string> = new Set(['IOMMU_HWPT_LU_SET_PRESERVE']);

/** `enum iommufd_ioas_map_flags` (MAP, MAP_FILE and COPY). */
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

/** `enum iommufd_option`; PERSISTENT is the live-update RFC's. */
export const IOMMU_OPTION_RLIMIT_MODE = 0;
export const IOMMU_OPTION_HUGE_PAGES = 1;
export const IOMMU_OPTION_PERSISTENT = 2;
/** `enum iommufd_option_ops`. */
export const IOMMU_OPTION_OP_SET = 0;
export const IOMMU_OPTION_OP_GET = 1;

/** `enum iommufd_vfio_ioas_op`. */
export const IOMMU_VFIO_IOAS_GET = 0;
export const IOMMU_VFIO_IOAS_SET = 1;
export const IOMMU_VFIO_IOAS_CLEAR = 2;

/** `enum iommufd_hwpt_alloc_flags`. */
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2;
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3;
/** `enum iommu_hwpt_data_type`. */
export const IOMMU_HWPT_DATA_NONE = 0;
export const IOMMU_HWPT_DATA_VTD_S1 = 1;
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2;
export const IOMMU_HWPT_DATA_AMD_GUEST = 3;
/** `enum iommu_hwpt_vtd_s1_flags`. */
export const IOMMU_VTD_S1_SRE = 1 << 0;
export const IOMMU_VTD_S1_EAFE = 1 << 1;
export const IOMMU_VTD_S1_WPE = 1 << 2;

/** `enum iommu_hw_info_type`: NONE on output, DEFAULT on input (both 0). */
export const IOMMU_HW_INFO_TYPE_NONE = 0;
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
export const IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV = 3;
export const IOMMU_HW_INFO_TYPE_AMD = 4;
/** `enum iommufd_hw_info_flags`: `in_data_type` carries the type asked for. */
export const IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0;
/** `enum iommu_hw_info_vtd_flags`. */
export const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0;
/** `enum iommufd_hw_capabilities`. */
export const IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0;
export const IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1;
export const IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2;
export const IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED = 1 << 3;

/** `enum iommufd_hwpt_set_dirty_tracking_flags`, `enum iommufd_hwpt_get_dirty_bitmap_flags`. */
export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;
export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;

/** `enum iommu_hwpt_invalidate_data_type`, `enum iommu_hwpt_vtd_s1_invalidate_flags`. */
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0;
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;
export const IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0;

/** `enum iommu_hwpt_pgfault_flags`, `enum iommu_hwpt_pgfault_perm`, `enum iommufd_page_response_code`. */
export const IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0;
export const IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1;
export const IOMMU_PGFAULT_PERM_READ = 1 << 0;
export const IOMMU_PGFAULT_PERM_WRITE = 1 << 1;
export const IOMMU_PGFAULT_PERM_EXEC = 1 << 2;
export const IOMMU_PGFAULT_PERM_PRIV = 1 << 3;
export const IOMMUFD_PAGE_RESP_SUCCESS = 0;
export const IOMMUFD_PAGE_RESP_INVALID = 1;

/** `enum iommu_viommu_type`. */
export const IOMMU_VIOMMU_TYPE_DEFAULT = 0;
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1;
export const IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2;
/** `enum iommu_veventq_type`, `enum iommu_veventq_flag`. */
export const IOMMU_VEVENTQ_TYPE_DEFAULT = 0;
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1;
export const IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2;
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 << 0;
/** `enum iommu_hw_queue_type`. */
export const IOMMU_HW_QUEUE_TYPE_DEFAULT = 0;
export const IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1;

/** `struct iommu_iova_range`. */
export const iommu_iova_range = struct('iommu_iova_range', [
  ['start', 'u64'],
  ['last', 'u64'],
]);
export const iommu_destroy = struct('iommu_destroy', [
  ['size', 'u32'],
  ['id', 'u32'],
]);
export const iommu_ioas_alloc = struct('iommu_ioas_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['out_ioas_id>', 'u32'],
]);
export const iommu_ioas_iova_ranges = struct('iommu_ioas_iova_ranges', [
  ['size', 'u32'],
  ['ioas_id', 'u32'],
  ['num_iovas>', 'u32'],
  ['__reserved', 'u32'],
  ['allowed_iovas', 'u64', 'struct iommu_iova_range *'],
  ['out_iova_alignment>', 'u64'],
]);
export const iommu_ioas_allow_iovas = struct('iommu_ioas_allow_iovas', [
  ['size', 'u32'],
  ['ioas_id', 'u32'],
  ['num_iovas', 'u32'],
  ['__reserved', 'u32'],
  ['allowed_iovas', 'u64', 'struct iommu_iova_range *'],
]);
export const iommu_ioas_map = struct('iommu_ioas_map', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['ioas_id', 'u32'],
  ['__reserved', 'u32'],
  ['user_va', 'u64'],
  ['length', 'u64'],
  ['iova>', 'u64'],
]);
export const iommu_ioas_map_file = struct('iommu_ioas_map_file', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['ioas_id', 'u32'],
  ['fd', 's32'],
  ['start', 'u64'],
  ['length', 'u64'],
  ['iova>', 'u64'],
]);
export const iommu_ioas_copy = struct('iommu_ioas_copy', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['dst_ioas_id', 'u32'],
  ['src_ioas_id', 'u32'],
  ['length', 'u64'],
  ['dst_iova>', 'u64'],
  ['src_iova', 'u64'],
]);
export const iommu_ioas_unmap = struct('iommu_ioas_unmap', [
  ['size', 'u32'],
  ['ioas_id', 'u32'],
  ['iova', 'u64'],
  ['length>', 'u64'],
]);
export const iommu_option = struct('iommu_option', [
  ['size', 'u32'],
  ['option_id', 'u32'],
  ['op', 'u16'],
  ['__reserved', 'u16'],
  ['object_id', 'u32'],
  ['val64>', 'u64'],
]);
export const iommu_vfio_ioas = struct('iommu_vfio_ioas', [
  ['size', 'u32'],
  ['ioas_id>', 'u32'],
  ['op', 'u16'],
  ['__reserved', 'u16'],
]);
export const iommu_hwpt_alloc = struct('iommu_hwpt_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['dev_id', 'u32'],
  ['pt_id', 'u32'],
  ['out_hwpt_id>', 'u32'],
  ['__reserved', 'u32'],
  ['data_type', 'u32'],
  ['data_len', 'u32'],
  ['data_uptr', 'u64', 'void *'],
  ['fault_id', 'u32'],
  ['__reserved2', 'u32'],
]);
export const iommu_hwpt_vtd_s1 = struct('iommu_hwpt_vtd_s1', [
  ['flags', 'u64'],
  ['pgtbl_addr', 'u64'],
  ['addr_width', 'u32'],
  ['__reserved', 'u32'],
]);
export const iommu_hw_info = struct('iommu_hw_info', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['dev_id', 'u32'],
  ['data_len>', 'u32'],
  ['data_uptr', 'u64', 'void *'],
  union(['in_data_type', 'u32'], ['out_data_type>', 'u32']),
  ['out_max_pasid_log2>', 'u8'],
  ['__reserved0', 'u8'],
  ['__reserved1', 'u8'],
  ['__reserved2', 'u8'],
  ['out_capabilities>', 'u64'],
]);
export const iommu_hw_info_vtd = struct('iommu_hw_info_vtd', [
  ['flags', 'u32'],
  ['__reserved', 'u32'],
  ['cap_reg', 'u64'],
  ['ecap_reg', 'u64'],
]);
export const iommu_hwpt_set_dirty_tracking = struct('iommu_hwpt_set_dirty_tracking', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['hwpt_id', 'u32'],
  ['__reserved', 'u32'],
]);
export const iommu_hwpt_get_dirty_bitmap = struct('iommu_hwpt_get_dirty_bitmap', [
  ['size', 'u32'],
  ['hwpt_id', 'u32'],
  ['flags', 'u32'],
  ['__reserved', 'u32'],
  ['iova', 'u64'],
  ['length', 'u64'],
  ['page_size', 'u64'],
  ['data', 'u64', 'void *'],
]);
export const iommu_hwpt_invalidate = struct('iommu_hwpt_invalidate', [
  ['size', 'u32'],
  ['hwpt_id', 'u32'],
  ['data_uptr', 'u64', 'void *'],
  ['data_type', 'u32'],
  ['entry_len', 'u32'],
  ['entry_num>', 'u32'],
  ['__reserved', 'u32'],
]);
export const iommu_hwpt_vtd_s1_invalidate = struct('iommu_hwpt_vtd_s1_invalidate', [
  ['addr', 'u64'],
  ['npages', 'u64'],
  ['flags', 'u32'],
  ['__reserved', 'u32'],
]);
/** What a read of a fault queue's fd returns, one per fault. */
export const iommu_hwpt_pgfault = struct('iommu_hwpt_pgfault', [
  ['flags', 'u32'],
  ['dev_id', 'u32'],
  ['pasid', 'u32'],
  ['grpid', 'u32'],
  ['perm', 'u32'],
  ['__reserved', 'u32'],
  ['addr', 'u64'],
  ['length', 'u32'],
  ['cookie', 'u32'],
]);
/** What a write to a fault queue's fd takes, one per fault group answered. */
export const iommu_hwpt_page_response = struct('iommu_hwpt_page_response', [
  ['cookie', 'u32'],
  ['code', 'u32'],
]);
export const iommu_fault_alloc = struct('iommu_fault_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['out_fault_id>', 'u32'],
  ['out_fault_fd>', 'u32'],
]);
export const iommu_viommu_alloc = struct('iommu_viommu_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['type', 'u32'],
  ['dev_id', 'u32'],
  ['hwpt_id', 'u32'],
  ['out_viommu_id>', 'u32'],
  ['data_len', 'u32'],
  ['__reserved', 'u32'],
  ['data_uptr', 'u64', 'void *'],
]);
export const iommu_vdevice_alloc = struct('iommu_vdevice_alloc', [
  ['size', 'u32'],
  ['viommu_id', 'u32'],
  ['dev_id', 'u32'],
  ['out_vdevice_id>', 'u32'],
  ['virt_id', 'u64'],
]);
export const iommu_ioas_change_process = struct('iommu_ioas_change_process', [
  ['size', 'u32'],
  ['__reserved', 'u32'],
]);
/** Heads every vEVENT a read of a vEVENTQ's fd returns. */
export const iommufd_vevent_header = struct('iommufd_vevent_header', [
  ['flags', 'u32'],
  ['sequence', 'u32'],
]);
export const iommu_veventq_alloc = struct('iommu_veventq_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['viommu_id', 'u32'],
  ['type', 'u32'],
  ['veventq_depth', 'u32'],
  ['out_veventq_id>', 'u32'],
  ['out_veventq_fd>', 'u32'],
  ['__reserved', 'u32'],
]);
export const iommu_hw_queue_alloc = struct('iommu_hw_queue_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['viommu_id', 'u32'],
  ['type', 'u32'],
  ['index', 'u32'],
  ['out_hw_queue_id>', 'u32'],
  ['nesting_parent_iova', 'u64'],
  ['length', 'u64'],
]);
export const iommu_ioas_noiommu_get_pa = struct('iommu_ioas_noiommu_get_pa', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['ioas_id', 'u32'],
  ['__reserved', 'u32'],
  ['iova', 'u64'],
  ['length>', 'u64'],
  ['out_phys>', 'u64'],
]);

/** `struct iommu_hwpt_lu_set_preserve`: mark a paging HWPT for preservation under a token. */
export const iommu_hwpt_lu_set_preserve = struct('iommu_hwpt_lu_set_preserve', [
  ['size', 'u32'],
  ['hwpt_id', 'u32'],
  ['hwpt_token', 'u32'],
]);
export const IOMMU_HWPT_LU_SET_PRESERVE: IoctlRequest<typeof iommu_hwpt_lu_set_preserve> = _IO_struct(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_LU_SET_PRESERVE);

/** One row of `iommufd_ioctl_ops[]`: the struct and `min_size = offsetofend(last mandatory field)`. */
export interface IoctlOp {
  readonly name: string;
  readonly request: number;
  readonly layout: StructLayout;
  readonly minSize: number;
}

/** A row; `request` must be the one typed with `layout`, `last` one of its fields. */
const op = <L extends StructLayout>(name: string, request: IoctlRequest<L>, layout: L, last: StructFieldName<L>): IoctlOp => ({
  name,
  request,
  layout,
  minSize: offsetofend(layout, last),
});

/** The iommufd command table, by request number (`main.c iommufd_ioctl_ops`). */
export const IOMMUFD_IOCTL_OPS: ReadonlyMap<number, IoctlOp> = new Map(
  [
    op('IOMMU_DESTROY', IOMMU_DESTROY, iommu_destroy, 'id'),
    op('IOMMU_IOAS_ALLOC', IOMMU_IOAS_ALLOC, iommu_ioas_alloc, 'out_ioas_id'),
    op('IOMMU_IOAS_ALLOW_IOVAS', IOMMU_IOAS_ALLOW_IOVAS, iommu_ioas_allow_iovas, 'allowed_iovas'),
    op('IOMMU_IOAS_COPY', IOMMU_IOAS_COPY, iommu_ioas_copy, 'src_iova'),
    op('IOMMU_IOAS_IOVA_RANGES', IOMMU_IOAS_IOVA_RANGES, iommu_ioas_iova_ranges, 'out_iova_alignment'),
    op('IOMMU_IOAS_MAP', IOMMU_IOAS_MAP, iommu_ioas_map, 'iova'),
    op('IOMMU_IOAS_UNMAP', IOMMU_IOAS_UNMAP, iommu_ioas_unmap, 'length'),
    op('IOMMU_OPTION', IOMMU_OPTION, iommu_option, 'val64'),
    op('IOMMU_VFIO_IOAS', IOMMU_VFIO_IOAS, iommu_vfio_ioas, '__reserved'),
    op('IOMMU_HWPT_ALLOC', IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, '__reserved'),
    op('IOMMU_GET_HW_INFO', IOMMU_GET_HW_INFO, iommu_hw_info, '__reserved2'),
    op('IOMMU_HWPT_SET_DIRTY_TRACKING', IOMMU_HWPT_SET_DIRTY_TRACKING, iommu_hwpt_set_dirty_tracking, '__reserved'),
    op('IOMMU_HWPT_GET_DIRTY_BITMAP', IOMMU_HWPT_GET_DIRTY_BITMAP, iommu_hwpt_get_dirty_bitmap, 'data'),
    op('IOMMU_HWPT_INVALIDATE', IOMMU_HWPT_INVALIDATE, iommu_hwpt_invalidate, '__reserved'),
    op('IOMMU_FAULT_QUEUE_ALLOC', IOMMU_FAULT_QUEUE_ALLOC, iommu_fault_alloc, 'out_fault_fd'),
    op('IOMMU_IOAS_MAP_FILE', IOMMU_IOAS_MAP_FILE, iommu_ioas_map_file, 'iova'),
    op('IOMMU_VIOMMU_ALLOC', IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, 'out_viommu_id'),
    op('IOMMU_VDEVICE_ALLOC', IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, 'virt_id'),
    op('IOMMU_IOAS_CHANGE_PROCESS', IOMMU_IOAS_CHANGE_PROCESS, iommu_ioas_change_process, '__reserved'),
    op('IOMMU_VEVENTQ_ALLOC', IOMMU_VEVENTQ_ALLOC, iommu_veventq_alloc, 'out_veventq_fd'),
    op('IOMMU_HW_QUEUE_ALLOC', IOMMU_HW_QUEUE_ALLOC, iommu_hw_queue_alloc, 'length'),
    op('IOMMU_IOAS_NOIOMMU_GET_PA', IOMMU_IOAS_NOIOMMU_GET_PA, iommu_ioas_noiommu_get_pa, 'out_phys'),
    op('IOMMU_HWPT_LU_SET_PRESERVE', IOMMU_HWPT_LU_SET_PRESERVE, iommu_hwpt_lu_set_preserve, 'hwpt_token'),
  ].map((o) => [o.request, o]),
);
