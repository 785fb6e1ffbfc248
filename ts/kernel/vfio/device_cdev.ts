// /dev/vfio/devices/vfioN (drivers/vfio/device_cdev.c): bind to an iommufd, attach to an IOAS or
// HWPT, detach; closing the fd unbinds. vfio-pci registers one node per PCI function at init.
import { errno } from '../../uapi/errno.js';
import * as V from '../../uapi/vfio.js';
import { File, type Task, type Uaccess } from '../file.js';
import { deviceBind, deviceChangePt, deviceDetach, deviceUnbind } from '../iommufd/device.js';
import { IommufdFile } from '../iommufd/main.js';
import type { IommufdCtx, IommufdDevice } from '../iommufd/private.js';
import type { KernelServices } from '../services.js';

/** A VFIO device as the kernel registered it (`struct vfio_device`). */
export interface VfioDevice {
  /** `vfioN`. */
  readonly name: string;
  /** PCI name, `0000:01:00.0`. */
  readonly bdf: string;
  /** Requester ID. */
  readonly sid: number;
  /** The open device file that bound it (cdev: one at a time). */
  boundBy: VfioDeviceFile | null;
  /** PCI_COMMAND_MASTER of the function. */
  setBusMaster(on: boolean): void;
  /** Whether the previous kernel's live update still holds it (open: EBUSY); set by vfio/liveupdate.ts. */
  liveupdateHeld: (() => boolean) | null;
}

function putU32(u: Uaccess, ptr: bigint, v: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  u.write(ptr, b);
}

/** `struct vfio_device_file`. */
export class VfioDeviceFile extends File {
  private ictx: IommufdCtx | null = null;
  private idev: IommufdDevice | null = null;
  /** `iommufd_attached`. */
  private attached = false;
  /** `vdev->pasids`: the PASIDs attached through VFIO_DEVICE_ATTACH_PASID. */
  private readonly pasids = new Set<number>();

  constructor(
    readonly svc: KernelServices,
    readonly device: VfioDevice,
    flags: number,
  ) {
    super(flags, `/dev/vfio/devices/${device.name}`);
  }

  /** `df->access_granted`. */
  get bound(): boolean {
    return this.idev !== null;
  }

  /** `device->iommufd_device`, while bound. */
  get iommufdDevice(): IommufdDevice | null {
    return this.idev;
  }

  /** `device->iommufd_attached`. */
  get iommufdAttached(): boolean {
    return this.attached;
  }

  ioctl(task: Task, request: number, u: Uaccess, arg: bigint): number {
    if (request === V.VFIO_DEVICE_BIND_IOMMUFD) return this.bind(task, u, arg);
    if (!this.bound) errno('EINVAL', 'device is not bound to an iommufd');
    if ((request === V.VFIO_DEVICE_ATTACH_IOMMUFD_PT || request === V.VFIO_DEVICE_DETACH_IOMMUFD_PT) && this.ictx!.persistentId && this.svc.kho.active) {
      errno('EBUSY', 'a persistent iommufd is frozen while KHO is active');
    }
    switch (request) {
      case V.VFIO_DEVICE_ATTACH_IOMMUFD_PT:
        return this.attachPt(u, arg);
      case V.VFIO_DEVICE_DETACH_IOMMUFD_PT:
        return this.detachPt(u, arg);
      default:
        return errno('ENOTTY', `unknown VFIO device ioctl 0x${request.toString(16)}`);
    }
  }

  /** `vfio_df_ioctl_bind_iommufd`. */
  private bind(task: Task, u: Uaccess, arg: bigint): number {
    const argsz = u.getU32(arg);
    if (argsz < V.VFIO_BIND_MINSZ) errno('EINVAL', 'argsz below minsz');
    const bind = u.copyStruct(arg, V.vfio_device_bind_iommufd, argsz);
    if (bind.flags & ~V.VFIO_DEVICE_BIND_FLAG_TOKEN || bind.iommufd < 0) errno('EINVAL', 'flags or iommufd');
    if (this.bound) errno('EINVAL', 'already bound');
    if (bind.flags & V.VFIO_DEVICE_BIND_FLAG_TOKEN) {
      // vfio_df_check_token: the UUID is copied in, then vfio-pci's match_token_uuid refuses it
      // for a function that is neither a VF nor a PF with VFs ("incorrectly provided").
      u.read(bind.token_uuid_ptr, 16);
      errno('EINVAL', 'a VF token for a device that is neither a VF nor a PF');
    }
    const file = task.fget(bind.iommufd);
    if (!(file instanceof IommufdFile)) {
      file.put();
      errno('EBADFD', 'not an iommufd');
    }
    const ictx: IommufdCtx = file; // holds a reference until unbind
    try {
      if (this.device.boundBy) errno('EINVAL', 'device is open through another file');
      const idev = deviceBind(ictx, this.device.sid, this.device.bdf);
      try {
        putU32(u, arg + 12n, idev.id);
      } catch (e) {
        deviceUnbind(idev);
        throw e;
      }
      this.ictx = ictx;
      this.idev = idev;
      this.device.boundBy = this;
      // The user driver owns the device now and may DMA (vfio_pci_core_enable).
      this.device.setBusMaster(true);
      this.svc.log(`vfio-pci ${this.device.bdf}: bound to iommufd, device id ${idev.id}`);
    } catch (e) {
      ictx.put();
      throw e;
    }
    return 0;
  }

  /**
   * `vfio_df_ioctl_attach_pt` → `vfio_iommufd_physical_attach_ioas` (attach or replace), or with
   * VFIO_DEVICE_ATTACH_PASID `vfio_iommufd_physical_pasid_attach_ioas`. vfio-pci has the PASID
   * op whatever the device: PASID 0 is IOMMU_NO_PASID itself, an attachment VFIO tracks apart
   * from `iommufd_attached`.
   */
  private attachPt(u: Uaccess, arg: bigint): number {
    const attach = u.copyStruct(arg, V.vfio_device_attach_iommufd_pt, V.VFIO_ATTACH_MINSZ);
    if (attach.argsz < V.VFIO_ATTACH_MINSZ) errno('EINVAL', 'argsz too small');
    if (attach.flags & ~V.VFIO_DEVICE_ATTACH_PASID) errno('EINVAL', 'unknown flags');
    if (attach.flags & V.VFIO_DEVICE_ATTACH_PASID) {
      if (attach.argsz < V.vfio_device_attach_iommufd_pt.size) errno('EINVAL', 'argsz does not cover pasid');
      const pasid = u.getU32(arg + 12n);
      let id: number;
      if (this.pasids.has(pasid)) {
        id = deviceChangePt(this.idev!, attach.pt_id, true, pasid);
      } else {
        this.pasids.add(pasid);
        try {
          id = deviceChangePt(this.idev!, attach.pt_id, false, pasid);
        } catch (e) {
          this.pasids.delete(pasid);
          throw e;
        }
      }
      putU32(u, arg + 8n, id);
      return 0;
    }
    const id = deviceChangePt(this.idev!, attach.pt_id, this.attached);
    this.attached = true;
    try {
      putU32(u, arg + 8n, id);
    } catch (e) {
      this.detach();
      throw e;
    }
    return 0;
  }

  /** `vfio_df_ioctl_detach_pt`. */
  private detachPt(u: Uaccess, arg: bigint): number {
    const detach = u.copyStruct(arg, V.vfio_device_detach_iommufd_pt, V.VFIO_DETACH_MINSZ);
    if (detach.argsz < V.VFIO_DETACH_MINSZ) errno('EINVAL', 'argsz too small');
    if (detach.flags & ~V.VFIO_DEVICE_DETACH_PASID) errno('EINVAL', 'unknown flags');
    if (detach.flags & V.VFIO_DEVICE_DETACH_PASID) {
      if (detach.argsz < V.vfio_device_detach_iommufd_pt.size) errno('EINVAL', 'argsz does not cover pasid');
      const pasid = u.getU32(arg + 8n);
      // A PASID VFIO did not attach is nothing to detach.
      if (this.pasids.delete(pasid)) deviceDetach(this.idev!, pasid);
      return 0;
    }
    this.detach();
    return 0;
  }

  private detach(): void {
    if (!this.attached) return;
    deviceDetach(this.idev!);
    this.attached = false;
  }

  /** Close: `vfio_df_unbind_iommufd`; the device is blocked and the iommufd reference dropped. */
  protected release(): void {
    if (!this.idev) return;
    // vfio_iommufd_physical_unbind: the PASIDs first, in order, then the attachment without.
    for (const pasid of [...this.pasids].sort((a, b) => a - b)) deviceDetach(this.idev, pasid);
    this.pasids.clear();
    deviceUnbind(this.idev);
    this.attached = false;
    this.idev = null;
    this.device.boundBy = null;
    this.svc.log(`vfio-pci ${this.device.bdf}: unbound`);
    const ictx = this.ictx!;
    this.ictx = null;
    ictx.put();
  }
}

/**
 * vfio-pci's init: every PCI function is probed by the IOMMU and gets /dev/vfio/devices/vfioN
 * (crw------- root root), in bus order. At kexec, bus mastering goes off except for the functions
 * whose DMA is handed over (still attached to a persistent domain).
 */
export function vfioPciInit(svc: KernelServices): VfioDevice[] {
  const devices = svc.pci.map((d, i): VfioDevice => {
    svc.iommu.probeDevice(d.sid, { ats: d.ats });
    svc.log(`vfio-pci ${d.bdf}: registered as /dev/vfio/devices/vfio${i}`);
    return { name: `vfio${i}`, bdf: d.bdf, sid: d.sid, boundBy: null, setBusMaster: (on) => d.setBusMaster(on), liveupdateHeld: null };
  });
  for (const dev of devices) svc.chrdevs.register({ path: `/dev/vfio/devices/${dev.name}`, mode: 0o600, open: (_task, flags) => {
        // A preserved device is reachable through RETRIEVE_FD only, until its session finishes.
        if (dev.liveupdateHeld?.()) errno('EBUSY', `${dev.bdf} is preserved by a live update: RETRIEVE_FD it`);
        return new VfioDeviceFile(svc, dev, flags);
      },
    });
  // pci_device_shutdown with kexec_in_progress.
  svc.onShutdown((handover) => {
    // A device preserved through LUO keeps its bus mastering too (the series skips its reset).
    const kept = (sid: number) => !!svc.iommu.getDomainForDev(sid)?.persistentId || !!svc.iommu.liveupdate?.isPreservedDevice(sid);
    for (const d of devices) if (!handover || !kept(d.sid)) d.setBusMaster(false);
  });
  return devices;
}
