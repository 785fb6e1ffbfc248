// Preserving a VFIO cdev through LUO (drivers/vfio/pci/vfio_pci_liveupdate.c and
// include/linux/kho/abi/vfio_pci.h of David Matlack's "vfio/pci: Base support to preserve a VFIO
// device file across Live Update", v2 Jan 2026, with Samiullah Khawaja's "vfio/pci: Preserve the
// iommufd state of the vfio cdev", iommu series v1 patch 13): the "vfio-pci-v1" handler.
// PRESERVE_FD of an attached device preserves its IOMMU state (`iommufd_device_preserve`: its
// HWPT must be marked, EINVAL; its iommufd preserved in the same session, ENOENT; its domain
// preserved, EINVAL); `struct vfio_pci_core_device_ser { u16 bdf; u16 domain; u8 reset_works;
// struct vfio_iommufd_ser { u32 token; } } __packed` crosses the kexec. The device is not reset
// and keeps bus mastering (shutdown, device_cdev.ts). In the next kernel the device is reachable
// only through RETRIEVE_FD (opening its node is EBUSY until the last preserved VFIO file
// finishes): the PCI core's FLB lists the preserved functions (`pci_liveupdate_register_flb`, the
// series' include/linux/kho/abi/pci.h, modelled as a page of requester IDs). RETRIEVE_FD gives a
// fresh, unbound device file; FINISH needs it bound again.
import { errno } from '../../uapi/errno.js';
import { O_RDWR } from '../../uapi/mman.js';
import type { File } from '../file.js';
import type { IommuLiveupdate } from '../iommu_liveupdate.js';
import { iommufdDevicePreserve } from '../iommufd/liveupdate.js';
import { khoAllocPreserve, khoRestore, khoRestoreFree, khoUnpreserveFree, PAGE } from '../kho/preserve.js';
import type { LiveupdateFileHandler, LiveupdateFlb } from '../luo.js';
import type { KernelServices } from '../services.js';
import { VfioDeviceFile, type VfioDevice } from './device_cdev.js';

export const VFIO_PCI_LUO_FH_COMPATIBLE = 'vfio-pci-v1';
export const PCI_LUO_FLB_COMPATIBLE = 'pci-liveupdate-v1';
/** `vfio_pci_core_device_ser`, packed. */
const SER_SIZE = 9;
const MAX_DEVS = PAGE / 8 - 1;

/** The PCI core's preserved functions: outgoing (this kernel) and incoming (the previous one's). */
export class PciLiveupdate {
  private readonly outgoing = new Set<number>();
  private page = 0n;
  /** Next kernel: functions preserved by the previous kernel, reachable through RETRIEVE_FD only. */
  readonly incoming = new Set<number>();

  readonly flb: LiveupdateFlb = {
    compatible: PCI_LUO_FLB_COMPATIBLE,
    ops: {
      preserve: (a) => {
        a.data = this.page = khoAllocPreserve(this.svc.memory, PAGE);
        a.obj = this.outgoing;
      },
      unpreserve: () => {
        khoUnpreserveFree(this.svc.memory, this.page, PAGE);
        this.page = 0n;
        this.outgoing.clear();
      },
      retrieve: (a) => {
        const mem = this.svc.memory;
        khoRestore(mem, a.data, PAGE, 'pci liveupdate page');
        const v = new DataView(mem.read(a.data, PAGE).buffer);
        const n = Number(v.getBigUint64(0, true));
        if (n > MAX_DEVS) errno('EINVAL', `${n} preserved PCI functions in one page`);
        const sids = new Set<number>();
        for (let i = 0; i < n; i++) sids.add(Number(v.getBigUint64(8 + 8 * i, true) & 0xffffn));
        a.obj = sids;
      },
      finish: (a) => {
        khoRestoreFree(this.svc.memory, a.data, PAGE);
        this.incoming.clear();
        this.svc.log('vfio-pci: liveupdate: finished; preserved functions can be opened again');
      },
    },
  };

  constructor(private readonly svc: KernelServices) {}

  /** Reads the incoming list (early, before the device nodes exist). */
  readIncoming(): void {
    try {
      for (const sid of this.svc.liveupdate.flbGetIncoming(this.flb) as Set<number>) this.incoming.add(sid);
    } catch {
      // ENODATA / ENOENT: nothing preserved.
    }
  }

  /** `pci_liveupdate_outgoing_preserve` / `_unpreserve`: rewrites the page. */
  set(sid: number, on: boolean): void {
    if (on) this.outgoing.add(sid);
    else this.outgoing.delete(sid);
    if (!this.page) return;
    const b = new Uint8Array(PAGE);
    const v = new DataView(b.buffer);
    const sids = [...this.outgoing];
    v.setBigUint64(0, BigInt(sids.length), true);
    sids.forEach((s, i) => v.setBigUint64(8 + 8 * i, BigInt(s), true));
    this.svc.memory.write(this.page, b);
  }
}

interface Private {
  sid: number;
  iommu: boolean;
}

/** The "vfio-pci-v1" handler. */
export function vfioPciLuoHandler(svc: KernelServices, devices: VfioDevice[], pci: PciLiveupdate, lu: IommuLiveupdate): LiveupdateFileHandler {
  const mem = svc.memory;
  return {
    compatible: VFIO_PCI_LUO_FH_COMPATIBLE,
    ops: {
      canPreserve: (_h, file: File) => file instanceof VfioDeviceFile,
      getId: (file: File) => (file as VfioDeviceFile).device,

      preserve(args) {
        const injected = svc.failFunction.inject('vfio_pci_liveupdate_preserve');
        if (injected) errno(injected, 'vfio-pci preserve (injected)');
        const df = args.file as VfioDeviceFile;
        const sid = df.device.sid;
        if (pci.incoming.has(sid)) errno('EBUSY', 'the device is still owned by the previous kernel\'s session');
        // If iommufd is attached, preserve the underlying domain (`iommufd_device_preserve`).
        const idev = df.iommufdDevice;
        let token = 0n;
        if (idev && df.iommufdAttached) {
          iommufdDevicePreserve(lu, args.session, idev);
          token = svc.liveupdate.getTokenOutgoing(args.session, idev.ictx as unknown as File);
        }
        let ser: bigint;
        try {
          ser = khoAllocPreserve(mem, SER_SIZE);
        } catch (e) {
          if (token) lu.unpreserveDevice(sid);
          throw e;
        }
        const b = new Uint8Array(SER_SIZE);
        const v = new DataView(b.buffer);
        v.setUint16(0, sid, true); // bdf
        v.setUint16(2, 0, true); // PCI domain
        b[4] = 1; // reset_works
        v.setUint32(5, Number(token), true);
        mem.write(ser, b);
        pci.set(sid, true);
        args.serializedData = ser;
        args.privateData = { sid, iommu: token !== 0n } satisfies Private;
      },

      unpreserve(args) {
        const p = args.privateData as Private;
        if (p.iommu) lu.unpreserveDevice(p.sid);
        pci.set(p.sid, false);
        khoUnpreserveFree(mem, args.serializedData, SER_SIZE);
      },

      retrieve(args) {
        khoRestore(mem, args.serializedData, SER_SIZE, 'vfio_pci_core_device_ser');
        const v = new DataView(mem.read(args.serializedData, SER_SIZE).buffer);
        const sid = v.getUint16(0, true);
        const dev = devices.find((d) => d.sid === sid) ?? errno('ENOENT', `no vfio-pci function ${sid.toString(16)}`);
        if (!pci.incoming.has(sid)) errno('EINVAL', 'the PCI core does not list the device as preserved');
        args.file = new VfioDeviceFile(svc, dev, O_RDWR);
        args.privateData = { sid, iommu: v.getUint32(5, true) !== 0 } satisfies Private;
        svc.log(`vfio-pci ${dev.bdf}: retrieved a preserved device file`);
      },

      /** Retrieved and bound again to an iommufd (the restored one, if it had IOMMU state). */
      canFinish(args) {
        if (args.retrieveStatus !== 'ok') return true;
        return (args.file as VfioDeviceFile).bound;
      },

      finish(args) {
        khoRestoreFree(mem, args.serializedData, SER_SIZE);
      },
    },
  };
}

/** `vfio_pci_liveupdate_init`: the handler and the PCI FLB, with live update and the series built in. */
export function vfioPciLiveupdateInit(svc: KernelServices, devices: VfioDevice[]): PciLiveupdate | null {
  const lu = svc.iommu.liveupdate;
  if (!svc.liveupdate.enabled || !lu) return null;
  const pci = new PciLiveupdate(svc);
  pci.readIncoming();
  for (const d of devices) d.liveupdateHeld = () => pci.incoming.has(d.sid);
  const fh = vfioPciLuoHandler(svc, devices, pci, lu);
  svc.liveupdate.registerFileHandler(fh);
  svc.liveupdate.registerFlb(fh, pci.flb);
  return pci;
}
