// include/uapi/linux/vfio.h: the VFIO cdev (iommufd) device ioctls.
import { _IO, _IO_struct } from './iommufd.js';
import type { IoctlRequest } from './ioc.js';
import { offsetofend, struct } from './struct.js';

/** `VFIO_TYPE` (';') and `VFIO_BASE`. */
export const VFIO_TYPE = 0x3b;
export const VFIO_BASE = 100;

export const VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0);
export const VFIO_DEVICE_BIND_IOMMUFD: IoctlRequest<typeof vfio_device_bind_iommufd> = _IO_struct(VFIO_TYPE, VFIO_BASE + 18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT: IoctlRequest<typeof vfio_device_attach_iommufd_pt> = _IO_struct(VFIO_TYPE, VFIO_BASE + 19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT: IoctlRequest<typeof vfio_device_detach_iommufd_pt> = _IO_struct(VFIO_TYPE, VFIO_BASE + 20);

/** `VFIO_DEVICE_BIND_FLAG_TOKEN`, `VFIO_DEVICE_ATTACH_PASID`, `VFIO_DEVICE_DETACH_PASID`. */
export const VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0;
export const VFIO_DEVICE_ATTACH_PASID = 1 << 0;
export const VFIO_DEVICE_DETACH_PASID = 1 << 0;

export const vfio_device_bind_iommufd = struct('vfio_device_bind_iommufd', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['iommufd', 's32'],
  ['out_devid>', 'u32'],
  ['token_uuid_ptr', 'u64', 'void *'],
]);
export const vfio_device_attach_iommufd_pt = struct('vfio_device_attach_iommufd_pt', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['pt_id>', 'u32'],
  ['pasid', 'u32'],
]);
export const vfio_device_detach_iommufd_pt = struct('vfio_device_detach_iommufd_pt', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['pasid', 'u32'],
]);

/** `minsz` of each device ioctl: VFIO reads only this much unless a flag asks for more. */
export const VFIO_BIND_MINSZ = offsetofend(vfio_device_bind_iommufd, 'out_devid');
export const VFIO_ATTACH_MINSZ = offsetofend(vfio_device_attach_iommufd_pt, 'pt_id');
export const VFIO_DETACH_MINSZ = offsetofend(vfio_device_detach_iommufd_pt, 'flags');
