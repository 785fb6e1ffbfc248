// PCI devices with a DMA engine whose every request goes through the VT-d unit.
import { invalidArgValue } from '../errors.js';
import type { IommuUnit } from './iommu.js';

/** `0000:01:00.0` → requester ID (bus << 8 | device << 3 | function). */
export function parseBdf(bdf: string): number {
  const m = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/i.exec(bdf);
  if (!m || parseInt(m[3]!, 16) > 0x1f) {
    throw invalidArgValue(`bad PCI address ${JSON.stringify(bdf)}: want dddd:bb:dd.f`);
  }
  if (m[1] !== '0000') throw invalidArgValue(`only PCI segment 0000 is modelled (${bdf})`);
  return (parseInt(m[2]!, 16) << 8) | (parseInt(m[3]!, 16) << 3) | parseInt(m[4]!, 10);
}

/**
 * A DMA request that did not complete. `reason` is the VT-d fault reason (FRCD.FR) the IOMMU
 * recorded, or 0 when the device's bus mastering is off and the request never left it.
 */
export class DmaFault extends Error {
  readonly code = 'ERR_DMA_FAULT';
  constructor(
    readonly bdf: string,
    readonly iova: bigint,
    readonly reason: number,
    readonly write: boolean,
  ) {
    super(
      reason
        ? `DMA ${write ? 'write' : 'read'} by ${bdf} at 0x${iova.toString(16)} faulted (reason 0x${reason.toString(16)})`
        : `DMA ${write ? 'write' : 'read'} by ${bdf} at 0x${iova.toString(16)}: bus mastering is disabled`,
    );
    this.name = 'DmaFault';
  }
}

/** The device side of DMA: reads and writes IOVAs through the unit, page by page. */
export class DmaEngine {
  constructor(
    private readonly dev: PciDevice,
    private readonly unit: IommuUnit,
    private readonly onFault: (sid: number, iova: bigint, reason: number, write: boolean) => void,
  ) {}

  /** Reads `n` bytes at `iova`; throws {@link DmaFault} (after the pages before it were read). */
  read(iova: bigint, n: number): Uint8Array {
    const buf = new Uint8Array(n);
    this.readInto(iova, buf);
    return buf;
  }

  /** Reads into `buf` at `iova` (no allocation). */
  readInto(iova: bigint, buf: Uint8Array): void {
    if (!this.dev.busMaster) throw new DmaFault(this.dev.bdf, iova, 0, false);
    const reason = this.unit.dmaRead(this.dev.sid, iova, buf);
    if (reason) this.fault(this.unit.lastFaultIova, reason, false);
  }

  /** Writes `bytes` at `iova`; throws {@link DmaFault} (after the pages before it were written). */
  write(iova: bigint, bytes: Uint8Array): void {
    if (!this.dev.busMaster) throw new DmaFault(this.dev.bdf, iova, 0, true);
    const reason = this.unit.dmaWrite(this.dev.sid, iova, bytes);
    if (reason) this.fault(this.unit.lastFaultIova, reason, true);
  }

  /**
   * Translates a burst of IOVAs in one call: `out[i]` gets the PA or TRANSLATION_FAULTED,
   * `opts.faults[i]` the reason. Returns how many faulted; faults are recorded, not thrown.
   */
  translate(iovas: BigUint64Array, out: BigUint64Array, opts: { write: boolean; faults?: Uint8Array }): number {
    return this.unit.translate(this.dev.sid, iovas, out, opts);
  }

  private fault(iova: bigint, reason: number, write: boolean): never {
    this.onFault(this.dev.sid, iova, reason, write);
    throw new DmaFault(this.dev.bdf, iova, reason, write);
  }
}

/** A PCI function as {@link Host.boot} takes it. */
export interface PciDeviceOptions {
  /** `dddd:bb:dd.f`; only segment 0000 is modelled. */
  bdf: string;
  /**
   * Whether the function has a PCIe ATS extended capability (default false). The VT-d driver
   * gives it ATS only if the unit has ECAP.DT too (`intel_iommu_probe_device`); otherwise
   * IOMMU_GET_HW_INFO reports IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED for it.
   */
  ats?: boolean;
  /** PCI vendor ID (config offset 0), for identification only (default: none). */
  vendorId?: number;
  /** PCI device ID (config offset 2), for identification only (default: none). */
  deviceId?: number;
}

/** A PCI function behind the IOMMU. */
export class PciDevice {
  readonly sid: number;
  readonly dma: DmaEngine;
  /** Has a PCIe ATS capability ({@link PciDeviceOptions.ats}). */
  readonly ats: boolean;
  /** PCI vendor and device ID, if given. */
  readonly vendorId: number | undefined;
  readonly deviceId: number | undefined;
  /**
   * PCI_COMMAND_MASTER. Set at cold boot; a kexec clears it for every device that is not handed
   * over (`pci_device_shutdown`), and binding to VFIO sets it again.
   */
  busMaster = true;

  constructor(
    readonly bdf: string,
    unit: IommuUnit,
    onFault: (sid: number, iova: bigint, reason: number, write: boolean) => void,
    opts: Omit<PciDeviceOptions, 'bdf'> = {},
  ) {
    this.sid = parseBdf(bdf);
    this.dma = new DmaEngine(this, unit, onFault);
    this.ats = opts.ats ?? false;
    this.vendorId = opts.vendorId;
    this.deviceId = opts.deviceId;
  }
}
