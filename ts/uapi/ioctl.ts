// Every struct-taking ioctl the simulator knows, by request number and by name: the one table
// behind object arguments (Process.ioctl) and the oracle's sequence executors.
import { IOMMUFD_IOCTL_OPS } from './iommufd.js';
import type { StructLayout } from './struct.js';
import * as L from './liveupdate.js';
import * as V from './vfio.js';

/** An ioctl's name (the kernel's macro), request number and argument struct. */
export interface UapiIoctl {
  readonly name: string;
  readonly request: number;
  readonly layout: StructLayout;
}

const all: UapiIoctl[] = [
  ...[...IOMMUFD_IOCTL_OPS.values()].map(({ name, request, layout }) => ({ name, request, layout })),
  { name: 'VFIO_DEVICE_BIND_IOMMUFD', request: V.VFIO_DEVICE_BIND_IOMMUFD, layout: V.vfio_device_bind_iommufd },
  { name: 'VFIO_DEVICE_ATTACH_IOMMUFD_PT', request: V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, layout: V.vfio_device_attach_iommufd_pt },
  { name: 'VFIO_DEVICE_DETACH_IOMMUFD_PT', request: V.VFIO_DEVICE_DETACH_IOMMUFD_PT, layout: V.vfio_device_detach_iommufd_pt },
  { name: 'LIVEUPDATE_IOCTL_CREATE_SESSION', request: L.LIVEUPDATE_IOCTL_CREATE_SESSION, layout: L.liveupdate_ioctl_create_session },
  { name: 'LIVEUPDATE_IOCTL_RETRIEVE_SESSION', request: L.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, layout: L.liveupdate_ioctl_retrieve_session },
  { name: 'LIVEUPDATE_SESSION_PRESERVE_FD', request: L.LIVEUPDATE_SESSION_PRESERVE_FD, layout: L.liveupdate_session_preserve_fd },
  { name: 'LIVEUPDATE_SESSION_RETRIEVE_FD', request: L.LIVEUPDATE_SESSION_RETRIEVE_FD, layout: L.liveupdate_session_retrieve_fd },
  { name: 'LIVEUPDATE_SESSION_FINISH', request: L.LIVEUPDATE_SESSION_FINISH, layout: L.liveupdate_session_finish },
  { name: 'LIVEUPDATE_SESSION_GET_NAME', request: L.LIVEUPDATE_SESSION_GET_NAME, layout: L.liveupdate_session_get_name },
];

/** By request number. */
export const UAPI_IOCTLS: ReadonlyMap<number, UapiIoctl> = new Map(all.map((i) => [i.request, i]));
/** By name (`'IOMMU_IOAS_MAP'`). */
export const UAPI_IOCTLS_BY_NAME: ReadonlyMap<string, UapiIoctl> = new Map(all.map((i) => [i.name, i]));
