// Every struct-taking ioctl the simulator knows, by request number and by name: the one table
// behind object arguments (Process.ioctl) and the oracle's sequence executors.
import { IOMMUFD_IOCTL_OPS } from './iommufd.js';
import { anyIoctlRequest, type AnyIoctlRequest, type IoctlRequest } from './ioc.js';
import type { StructLayout } from './struct.js';
import * as L from './liveupdate.js';
import * as V from './vfio.js';

export * from './ioc.js';

/** An ioctl's name (the kernel's macro), request number and argument struct. */
export interface UapiIoctl {
  readonly name: string;
  /** Loosely typed: the struct is `layout`, known at runtime (see {@link AnyIoctlRequest}). */
  readonly request: AnyIoctlRequest;
  readonly layout: StructLayout;
}

/** A row; `request` must be the one typed with `layout`. */
const entry = <L extends StructLayout>(name: string, request: IoctlRequest<L>, layout: L): UapiIoctl => ({ name, request: anyIoctlRequest(request), layout });

const all: UapiIoctl[] = [
  ...[...IOMMUFD_IOCTL_OPS.values()].map(({ name, request, layout }): UapiIoctl => ({ name, request: anyIoctlRequest(request), layout })),
  entry('VFIO_DEVICE_BIND_IOMMUFD', V.VFIO_DEVICE_BIND_IOMMUFD, V.vfio_device_bind_iommufd),
  entry('VFIO_DEVICE_ATTACH_IOMMUFD_PT', V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, V.vfio_device_attach_iommufd_pt),
  entry('VFIO_DEVICE_DETACH_IOMMUFD_PT', V.VFIO_DEVICE_DETACH_IOMMUFD_PT, V.vfio_device_detach_iommufd_pt),
  entry('LIVEUPDATE_IOCTL_CREATE_SESSION', L.LIVEUPDATE_IOCTL_CREATE_SESSION, L.liveupdate_ioctl_create_session),
  entry('LIVEUPDATE_IOCTL_RETRIEVE_SESSION', L.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, L.liveupdate_ioctl_retrieve_session),
  entry('LIVEUPDATE_SESSION_PRESERVE_FD', L.LIVEUPDATE_SESSION_PRESERVE_FD, L.liveupdate_session_preserve_fd),
  entry('LIVEUPDATE_SESSION_RETRIEVE_FD', L.LIVEUPDATE_SESSION_RETRIEVE_FD, L.liveupdate_session_retrieve_fd),
  entry('LIVEUPDATE_SESSION_FINISH', L.LIVEUPDATE_SESSION_FINISH, L.liveupdate_session_finish),
  entry('LIVEUPDATE_SESSION_GET_NAME', L.LIVEUPDATE_SESSION_GET_NAME, L.liveupdate_session_get_name),
];

/** By request number. */
export const UAPI_IOCTLS: ReadonlyMap<number, UapiIoctl> = new Map(all.map((i) => [i.request, i]));
/** By name (`'IOMMU_IOAS_MAP'`). */
export const UAPI_IOCTLS_BY_NAME: ReadonlyMap<string, UapiIoctl> = new Map(all.map((i) => [i.name, i]));
