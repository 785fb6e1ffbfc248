// The IOMMU core's live-update state (drivers/iommu/liveupdate.c, include/linux/kho/abi/iommu.h
// of the iommu live-update series, Khawaja, v2 27 Apr 2026 / tree iommu/phase1): an FLB
// ("iommu-liveupdate", version 1) bound to the iommufd handler's files. Its `struct iommu_flb_ser`
// points at three chains of preserved pages — IOMMU units (`iommu_hw_ser`: token = register base,
// type, and the VT-d root table), domains (`iommu_domain_ser`: top table and level) and devices
// (`iommu_device_ser`: requester ID, the domain's and unit's serialised addresses, the DID as
// attachment id). Created with the first preserved iommufd, freed with the last unpreserved; the
// next kernel's driver reads it at init (before anything can attach) and re-attaches the devices,
// and the last finished iommufd finishes it, which ends the restored devices' ownership claim.
//
// Domains are opaque here (the core file iommu.ts holds their type and this object).
import type { PhysicalMemory } from '../hw/memory.js';
import { errno, KernelError, type ErrnoCode } from '../uapi/errno.js';
import { khoAllocPreserve, khoRestore, khoRestoreFree, khoUnpreserveFree, PAGE } from './kho/preserve.js';
import type { Liveupdate, LiveupdateFileHandler, LiveupdateFlb, LiveupdateFlbOpArgs } from './luo.js';

export const IOMMU_LUO_FLB_COMPATIBLE = 'iommu-liveupdate';
export const IOMMU_LUO_FLB_VERSION = 1n;
/** `enum iommu_type_ser`: IOMMU_INVALID 0; the VT-d patch adds IOMMU_INTEL. */
export const IOMMU_INTEL = 1n;
const FLAG_DELETED = 1;
/** `struct iommu_flb_ser { u64 version, iommu_array_phys, iommu_domain_array_phys, device_array_phys; }`. */
const FLB_SER_SIZE = 32;
/** `struct iommu_array_hdr_ser { u64 next_array_phys; u64 nr_objects; }`. */
const ARRAY_HDR = 16;
/** `iommu_hw_ser` {hdr, token, type} + the VT-d part {root_table}; `iommu_domain_ser`; `iommu_device_ser`. */
const HW_SIZE = 32;
const DOMAIN_SIZE = 40;
const DEVICE_SIZE = 40;

type Kind = 'hw' | 'domain' | 'device';
const SIZE: Record<Kind, number> = { hw: HW_SIZE, domain: DOMAIN_SIZE, device: DEVICE_SIZE };
const perPage = (k: Kind) => Math.floor((PAGE - ARRAY_HDR) / SIZE[k]);

/** What a driver implements for the live update (`iommu_ops->preserve*`, iommupt's `preserve`). */
export interface IommuLiveupdateOps {
  /** `ops->preserve`: root and context tables preserved; the unit's token and root table. */
  preserveHw(): { token: bigint; type: bigint; rootTable: bigint };
  unpreserveHw(): void;
  /** The domain's `pt->ops->preserve`: every table page preserved; its top table and level. */
  preserveDomain(domain: object): { top: bigint; level: number; vasz: number };
  unpreserveDomain(domain: object): void;
  /** `ops->preserve_device`: the DID the device's context entry holds. */
  preserveDevice(sid: number, domain: object): number;
}

/** A serialised object and where it lives. */
interface Obj {
  kind: Kind;
  pa: bigint;
  flags: number;
  bytes: Uint8Array;
}

/** The outgoing FLB object (`struct iommu_flb_obj`). */
interface Outgoing {
  ser: bigint;
  chains: Record<Kind, bigint[]>;
  counts: Record<Kind, number>;
  domains: Map<object, Obj>;
  devices: Map<number, { obj: Obj; domain: object }>;
  hw: { obj: Obj; refs: number } | null;
}

/** What the previous kernel preserved, as the next kernel reads it. */
export interface IommuIncoming {
  hws: { pa: bigint; token: bigint; type: bigint; rootTable: bigint }[];
  domains: { pa: bigint; top: bigint; level: number; vasz: number }[];
  devices: { sid: number; did: number; domainPa: bigint; hwPa: bigint }[];
  pages: bigint[];
}

/** The IOMMU core's live update of one kernel. */
export class IommuLiveupdate {
  private driver: IommuLiveupdateOps | null = null;
  /** Next kernel: the domains the driver restored, by their `iommu_domain_ser` address. */
  readonly restored = new Map<bigint, object>();
  /**
   * Next kernel: devices the driver re-attached to a restored domain, and the context that owns
   * them (the iommufd retrieved from LUO, or null until it is): binding another iommufd is EBUSY
   * until FINISH releases them.
   */
  readonly claimed = new Map<number, unknown>();
  private incomingCache: IommuIncoming | null | undefined;
  /** The fault-injection kprobe (kernel/fail_function.ts) at a site's entry: its errno, or null. */
  failFunction: (fn: string) => ErrnoCode | null = () => null;

  readonly flb: LiveupdateFlb = {
    compatible: IOMMU_LUO_FLB_COMPATIBLE,
    ops: {
      preserve: (a) => this.flbPreserve(a),
      unpreserve: (a) => this.flbUnpreserve(a),
      retrieve: (a) => this.flbRetrieve(a),
      finish: (a) => this.flbFinish(a),
    },
  };

  constructor(
    private readonly mem: PhysicalMemory,
    private readonly lu: Liveupdate,
    private readonly log: (msg: string) => void,
  ) {}

  /** The driver's hooks (`iommu_device_register` with preserve ops). */
  setDriver(ops: IommuLiveupdateOps): void {
    this.driver = ops;
  }

  /** `iommu_liveupdate_register_flb`: `fh`'s files depend on the IOMMU state. */
  registerFlb(fh: LiveupdateFileHandler): void {
    this.lu.registerFlb(fh, this.flb);
  }

  // ---- the FLB -------------------------------------------------------------------------------

  private flbPreserve(a: LiveupdateFlbOpArgs): void {
    const injected = this.failFunction('iommu_liveupdate_flb_preserve');
    if (injected) errno(injected, 'iommu FLB preserve (injected)');
    const ser = khoAllocPreserve(this.mem, FLB_SER_SIZE);
    const out: Outgoing = { ser, chains: { hw: [], domain: [], device: [] }, counts: { hw: 0, domain: 0, device: 0 }, domains: new Map(), devices: new Map(), hw: null };
    try {
      for (const k of ['hw', 'domain', 'device'] as const) out.chains[k].push(khoAllocPreserve(this.mem, PAGE));
    } catch (e) {
      for (const k of ['hw', 'domain', 'device'] as const) for (const p of out.chains[k]) khoUnpreserveFree(this.mem, p, PAGE);
      khoUnpreserveFree(this.mem, ser, FLB_SER_SIZE);
      throw e;
    }
    const v = new DataView(new ArrayBuffer(FLB_SER_SIZE));
    v.setBigUint64(0, IOMMU_LUO_FLB_VERSION, true);
    v.setBigUint64(8, out.chains.hw[0]!, true);
    v.setBigUint64(16, out.chains.domain[0]!, true);
    v.setBigUint64(24, out.chains.device[0]!, true);
    this.mem.write(ser, new Uint8Array(v.buffer));
    a.obj = out;
    a.data = ser;
  }

  private flbUnpreserve(a: LiveupdateFlbOpArgs): void {
    const out = a.obj as Outgoing;
    for (const k of ['hw', 'domain', 'device'] as const) for (const p of out.chains[k]) khoUnpreserveFree(this.mem, p, PAGE);
    khoUnpreserveFree(this.mem, out.ser, FLB_SER_SIZE);
  }

  /** Next kernel: reads and checks every array (the kernel BUG()s on a bad one; here: EINVAL). */
  private flbRetrieve(a: LiveupdateFlbOpArgs): void {
    khoRestore(this.mem, a.data, FLB_SER_SIZE, 'iommu_flb_ser');
    const v = new DataView(this.mem.read(a.data, FLB_SER_SIZE).buffer);
    if (v.getBigUint64(0, true) !== IOMMU_LUO_FLB_VERSION) errno('EINVAL', 'iommu FLB version mismatch');
    const inc: IommuIncoming = { hws: [], domains: [], devices: [], pages: [a.data] };
    const walk = (head: bigint, k: Kind, each: (pa: bigint, d: DataView) => void) => {
      if (head === 0n) errno('EINVAL', `iommu FLB: no ${k} array`);
      for (let pa = head, n = 0; pa !== 0n; n++) {
        if (n > 4096 || inc.pages.includes(pa)) errno('EINVAL', `iommu FLB: the ${k} chain is corrupted`);
        khoRestore(this.mem, pa, PAGE, `iommu ${k} array`);
        inc.pages.push(pa);
        const b = this.mem.read(pa, PAGE);
        const d = new DataView(b.buffer);
        const nr = Number(d.getBigUint64(8, true));
        if (nr > perPage(k)) errno('EINVAL', `iommu FLB: ${nr} ${k} objects in one page`);
        for (let i = 0; i < nr; i++) {
          const off = ARRAY_HDR + i * SIZE[k];
          const o = new DataView(b.buffer, off, SIZE[k]);
          if (!(o.getUint32(4, true) & FLAG_DELETED)) each(pa + BigInt(off), o);
        }
        pa = d.getBigUint64(0, true);
      }
    };
    walk(v.getBigUint64(8, true), 'hw', (pa, o) => inc.hws.push({ pa, token: o.getBigUint64(8, true), type: o.getBigUint64(16, true), rootTable: o.getBigUint64(24, true) }));
    walk(v.getBigUint64(16, true), 'domain', (pa, o) => inc.domains.push({ pa, top: o.getBigUint64(8, true), level: Number(o.getBigUint64(16, true)), vasz: o.getUint32(24, true) }));
    walk(v.getBigUint64(24, true), 'device', (_pa, o) =>
      inc.devices.push({ sid: o.getUint32(8, true), did: Number(o.getBigUint64(16, true)), domainPa: o.getBigUint64(24, true), hwPa: o.getBigUint64(32, true) }),
    );
    a.obj = inc;
  }

  /** The last dependent file finished: the state is freed and the restored devices are released. */
  private flbFinish(a: LiveupdateFlbOpArgs): void {
    const inc = a.obj as IommuIncoming;
    for (const p of inc.pages) khoRestoreFree(this.mem, p, p === a.data ? FLB_SER_SIZE : PAGE);
    this.claimed.clear();
    this.restored.clear();
    this.log('iommu: liveupdate: finished; restored domains are ordinary domains of their iommufds now');
  }

  private outgoing(): Outgoing {
    const out = this.lu.flbGetOutgoing(this.flb) as Outgoing | undefined;
    return out ?? errno('EINVAL', 'no outgoing IOMMU state');
  }

  /** Allocates an object slot in `k`'s chain (a new preserved page when the last is full). */
  private alloc(out: Outgoing, k: Kind): Obj {
    const idx = out.counts[k];
    const page = Math.floor(idx / perPage(k));
    if (page >= out.chains[k].length) {
      const next = khoAllocPreserve(this.mem, PAGE);
      const prev = out.chains[k][out.chains[k].length - 1]!;
      this.mem.writeU64(prev, next);
      out.chains[k].push(next);
    }
    out.counts[k]++;
    const pa = out.chains[k][page]! + BigInt(ARRAY_HDR + (idx % perPage(k)) * SIZE[k]);
    this.mem.writeU64(out.chains[k][page]! + 8n, BigInt((idx % perPage(k)) + 1));
    return { kind: k, pa, flags: 0, bytes: new Uint8Array(SIZE[k]) };
  }

  private write(o: Obj): void {
    const v = new DataView(o.bytes.buffer);
    v.setUint32(0, 1, true); // hdr.ref_count
    v.setUint32(4, o.flags, true);
    this.mem.write(o.pa, o.bytes);
  }

  private remove(o: Obj): void {
    o.flags |= FLAG_DELETED;
    this.write(o);
  }

  // ---- what iommufd and VFIO call --------------------------------------------------------------

  /** `iommu_preserve_domain`: EOPNOTSUPP without driver support, EBUSY if preserved already. Returns the `iommu_domain_ser` address. */
  preserveDomain(domain: object): bigint {
    if (!this.driver) return errno('EOPNOTSUPP', 'the IOMMU driver cannot preserve domains');
    const out = this.outgoing();
    if (out.domains.has(domain)) errno('EBUSY', 'the domain is preserved already');
    const o = this.alloc(out, 'domain');
    let r: { top: bigint; level: number; vasz: number };
    try {
      r = this.driver.preserveDomain(domain);
    } catch (e) {
      this.remove(o);
      throw e;
    }
    const v = new DataView(o.bytes.buffer);
    v.setBigUint64(8, r.top, true);
    v.setBigUint64(16, BigInt(r.level), true);
    v.setUint32(24, r.vasz, true);
    this.write(o);
    out.domains.set(domain, o);
    return o.pa;
  }

  /** `iommu_unpreserve_domain`. */
  unpreserveDomain(domain: object): void {
    let out: Outgoing;
    try {
      out = this.outgoing();
    } catch {
      return;
    }
    const o = out.domains.get(domain);
    if (!o) return;
    this.driver!.unpreserveDomain(domain);
    this.remove(o);
    out.domains.delete(domain);
  }

  /**
   * `iommu_preserve_device`: the domain must be preserved and the device not (EINVAL); the unit
   * is preserved with its first device. Returns the `iommu_device_ser` address.
   */
  preserveDevice(domain: object, sid: number): bigint {
    if (!this.driver) return errno('EOPNOTSUPP', 'the IOMMU driver cannot preserve devices');
    const out = this.outgoing();
    const dom = out.domains.get(domain);
    if (!dom) return errno('EINVAL', 'the device is attached to a domain that is not preserved');
    if (out.devices.has(sid)) errno('EINVAL', 'the device is preserved already');
    const o = this.alloc(out, 'device');
    try {
      if (!out.hw) {
        const h = this.alloc(out, 'hw');
        let r: { token: bigint; type: bigint; rootTable: bigint };
        try {
          r = this.driver.preserveHw();
        } catch (e) {
          this.remove(h);
          throw e;
        }
        const hv = new DataView(h.bytes.buffer);
        hv.setBigUint64(8, r.token, true);
        hv.setBigUint64(16, r.type, true);
        hv.setBigUint64(24, r.rootTable, true);
        this.write(h);
        out.hw = { obj: h, refs: 0 };
      }
      const did = this.driver.preserveDevice(sid, domain);
      out.hw.refs++;
      const v = new DataView(o.bytes.buffer);
      v.setUint32(8, sid, true);
      v.setUint32(12, 0, true); // pci_domain_nr
      v.setBigUint64(16, BigInt(did), true); // attachment_id: the DID on VT-d
      v.setBigUint64(24, dom.pa, true);
      v.setBigUint64(32, out.hw.obj.pa, true);
      this.write(o);
    } catch (e) {
      this.remove(o);
      this.putHw(out);
      throw e;
    }
    out.devices.set(sid, { obj: o, domain });
    return o.pa;
  }

  private putHw(out: Outgoing): void {
    if (!out.hw || out.hw.refs > 0) return;
    this.driver!.unpreserveHw();
    this.remove(out.hw.obj);
    out.hw = null;
  }

  /** `iommu_unpreserve_device`. */
  unpreserveDevice(sid: number): void {
    let out: Outgoing;
    try {
      out = this.outgoing();
    } catch {
      return;
    }
    const d = out.devices.get(sid);
    if (!d) return;
    this.remove(d.obj);
    out.devices.delete(sid);
    out.hw!.refs--;
    this.putHw(out);
  }

  /** At shutdown: whether `sid` is handed over (keeps its context entry and bus mastering). */
  isPreservedDevice(sid: number): boolean {
    if (!this.lu.enabled) return false;
    try {
      return this.outgoing().devices.has(sid);
    } catch {
      return false;
    }
  }

  /** Next kernel: what the previous one preserved (read once), or null if nothing came or it cannot be read. */
  incoming(): IommuIncoming | null {
    if (this.incomingCache !== undefined) return this.incomingCache;
    this.incomingCache = null;
    if (!this.lu.enabled) return null;
    try {
      this.incomingCache = this.lu.flbGetIncoming(this.flb) as IommuIncoming;
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      if (e.code !== 'ENODATA' && e.code !== 'ENOENT') this.log(`iommu: liveupdate: Failed to restore IOMMU Live Update FLB: ${e.detail ?? e.code}`);
    }
    return this.incomingCache;
  }
}
