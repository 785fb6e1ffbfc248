// Preserving an iommufd through LUO (drivers/iommu/iommufd/liveupdate.c and
// include/linux/kho/abi/iommufd.h of the iommu live-update series, Khawaja/Zhu, v1 3 Feb 2026,
// with the checks of its later revisions): the "iommufd-v1" file handler, registered with the
// IOMMU core's FLB. PRESERVE_FD makes the IOAS of every HWPT marked by IOMMU_HWPT_LU_SET_PRESERVE
// immutable, checks that every area is a memfd sealed (SEAL|GROW|SHRINK) when it was mapped and
// preserved in the same session, and preserves each HWPT's domain through the IOMMU core;
// `struct iommufd_lu { u32 nr_hwpts; struct iommufd_hwpt_lu { u32 token; u64 domain_data;
// bool reclaimed; } __packed hwpts[]; }` crosses the kexec.
//
// Ahead of upstream (the series' phase 1 answers RETRIEVE_FD with EOPNOTSUPP and never finishes):
// after `iommufd_lu` this handler writes each preserved HWPT's areas (IOVA, length, the memfd's
// LUO token and offset, access), and RETRIEVE_FD builds an iommufd whose HWPTs — one IOAS and
// one HWPT per preserved HWPT, ids 1, 2, ... in the order of their old ids — are bound to the
// domains the IOMMU driver restored in early boot, with the IOASes rebuilt from the retrieved
// memfds, as the cover letter's phase 2 and the review describe. FINISH needs every restored
// device re-attached by its VMM.
import { errno } from '../../uapi/errno.js';
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, O_RDWR } from '../../uapi/mman.js';
import type { File } from '../file.js';
import type { IommuDomain } from '../iommu.js';
import type { IommuLiveupdate } from '../iommu_liveupdate.js';
import { checkIncoming, khoAllocPreserve, khoRestore, khoRestoreFree, khoUnpreserveFree } from '../kho/preserve.js';
import type { LiveupdateFileHandler, LiveupdateFileOpArgs, LiveupdateSession } from '../luo.js';
import { PAGE_SIZE } from '../mm.js';
import { luPreservedCtxs } from './hw_pagetable.js';
import { IommufdFile } from './main.js';
import { IoptPages } from './pages.js';
import { abandonRestoredHwpts, HwptPaging, Ioas, RestoredAttach, type IommufdDevice, type IommufdSubsystem } from './private.js';

/** `IOMMUFD_LUO_COMPATIBLE`. */
export const IOMMUFD_LUO_COMPATIBLE = 'iommufd-v1';
const HWPT_LU_SIZE = 13;
/** This simulator's area record (ahead of upstream): hwpt index, prot, iova, length, memfd token, offset. */
const AREA_SIZE = 40;
const REQ_SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK;
const PAGE = BigInt(PAGE_SIZE);

interface Preserved {
  hwpts: HwptPaging[];
  size: number;
}

/** Marked HWPTs of `ictx`, in object-id order (`xa_for_each`). */
const markedHwpts = (ictx: IommufdFile): HwptPaging[] => [...ictx.objects.entries()].sort(([a], [b]) => a - b).flatMap(([, o]) => (o instanceof HwptPaging && o.luPreserve ? [o] : []));

/** `iommufd_set_ioas_mutable`: every IOAS of the context. */
function setIoasMutable(ictx: IommufdFile): void {
  for (const o of ictx.objects.values()) if (o instanceof Ioas) o.iopt.luMapImmutable = false;
}

/** `check_iopt_pages_preserved`: file-backed, sealed at map time, preserved in `session` (ENOENT). */
function checkAreas(iommufd: IommufdSubsystem, session: LiveupdateSession, hwpt: HwptPaging): void {
  for (const area of hwpt.ioas.iopt.areas) {
    const src = area.pages?.source;
    if (!src || src.type !== 'file') errno('EINVAL', 'only memfd (IOMMU_IOAS_MAP_FILE) areas can be preserved');
    if (((src.seals ?? 0) & REQ_SEALS) !== REQ_SEALS) errno('EINVAL', 'the memfd was not sealed with F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK when it was mapped');
    iommufd.svc.liveupdate.getTokenOutgoing(session, src.file!);
  }
}

/** The iommufd handler (`iommufd_liveupdate_register_lufs`). */
export function iommufdLuoHandler(iommufd: IommufdSubsystem, lu: IommuLiveupdate): LiveupdateFileHandler {
  const svc = iommufd.svc;
  const mem = svc.memory;

  return {
    compatible: IOMMUFD_LUO_COMPATIBLE,
    ops: {
      canPreserve: (_h, file: File) => file instanceof IommufdFile,

      preserve(args: LiveupdateFileOpArgs) {
        const injected = svc.failFunction.inject('iommufd_liveupdate_preserve');
        if (injected) errno(injected, 'iommufd preserve (injected)');
        const ictx = args.file as IommufdFile;
        const hwpts = markedHwpts(ictx);
        // A persistent iommufd (the RFC's IOMMU_OPTION PERSISTENT) hands its domains over through
        // KHO's /iommufd already: the same domain preserved twice (iommu_preserve_domain's EBUSY).
        if (hwpts.length && ictx.persistentId) errno('EBUSY', 'a persistent iommufd hands its domains over through KHO');
        const done: HwptPaging[] = [];
        let ser = 0n;
        let size = 0;
        try {
          for (const h of hwpts) {
            h.ioas.iopt.luMapImmutable = true;
            if (!h.domain) errno('EINVAL', `HWPT ${h.id} has no domain`);
            checkAreas(iommufd, args.session, h);
          }
          const areas = hwpts.flatMap((h, i) => h.ioas.iopt.areas.map((a) => ({ i, a })));
          const head = 4 + hwpts.length * HWPT_LU_SIZE;
          const areasAt = Math.ceil(head / 8) * 8;
          size = areasAt + 8 + areas.length * AREA_SIZE;
          ser = khoAllocPreserve(mem, size);
          const b = new Uint8Array(size);
          const v = new DataView(b.buffer);
          v.setUint32(0, hwpts.length, true);
          hwpts.forEach((h, i) => {
            const domainData = lu.preserveDomain(h.domain);
            done.push(h);
            v.setUint32(4 + i * HWPT_LU_SIZE, h.luToken, true);
            v.setBigUint64(8 + i * HWPT_LU_SIZE, domainData, true);
            b[16 + i * HWPT_LU_SIZE] = 0; // reclaimed, after the u32 token and the u64 domain_data
          });
          v.setBigUint64(areasAt, BigInt(areas.length), true);
          areas.forEach(({ i, a }, k) => {
            const at = areasAt + 8 + k * AREA_SIZE;
            const src = a.pages!.source as { file: File };
            v.setUint32(at, i, true);
            v.setUint32(at + 4, (a.prot.read ? 1 : 0) | (a.prot.write ? 2 : 0), true);
            v.setBigUint64(at + 8, a.start, true);
            v.setBigUint64(at + 16, a.length, true);
            v.setBigUint64(at + 24, svc.liveupdate.getTokenOutgoing(args.session, src.file), true);
            v.setBigUint64(at + 32, a.pages!.base + a.startByte(a.start), true);
          });
          mem.write(ser, b);
        } catch (e) {
          for (const h of done) lu.unpreserveDomain(h.domain);
          if (ser) khoUnpreserveFree(mem, ser, size);
          setIoasMutable(ictx);
          throw e;
        }
        args.serializedData = ser;
        args.privateData = { hwpts, size } satisfies Preserved;
        luPreservedCtxs.add(ictx);
        // Each preserved HWPT is held until unpreserve: its last device leaving (an automatic
        // HWPT) or IOMMU_DESTROY must not free a domain whose tables are preserved.
        for (const h of hwpts) h.users++;
      },

      unpreserve(args: LiveupdateFileOpArgs) {
        const p = args.privateData as Preserved;
        const ictx = args.file as IommufdFile;
        for (const h of p.hwpts) lu.unpreserveDomain(h.domain);
        khoUnpreserveFree(mem, args.serializedData, p.size);
        setIoasMutable(ictx);
        luPreservedCtxs.delete(ictx);
        // An automatic HWPT whose devices all left while it was preserved goes now.
        for (const h of p.hwpts) {
          h.users--;
          if (h.autoDomain) ictx.tryDestroy(h);
        }
      },

      // "No-Op; everything should be made read-only" at PRESERVE_FD already.
      freeze() {},

      retrieve(args: LiveupdateFileOpArgs) {
        const pa = args.serializedData;
        checkIncoming(mem, pa, 4, 'iommufd_lu');
        const nr = new DataView(mem.read(pa, 4).buffer).getUint32(0, true);
        const head = 4 + nr * HWPT_LU_SIZE;
        const areasAt = Math.ceil(head / 8) * 8;
        checkIncoming(mem, pa, areasAt + 8, 'iommufd_lu');
        const nAreas = Number(new DataView(mem.read(pa + BigInt(areasAt), 8).buffer).getBigUint64(0, true));
        const size = areasAt + 8 + nAreas * AREA_SIZE;
        khoRestore(mem, pa, size, 'iommufd_lu areas');
        const b = mem.read(pa, size);
        const v = new DataView(b.buffer);
        const hwptsSer = Array.from({ length: nr }, (_, i) => ({ token: v.getUint32(4 + i * HWPT_LU_SIZE, true), domainData: v.getBigUint64(8 + i * HWPT_LU_SIZE, true) }));
        const ictx = new IommufdFile(iommufd, O_RDWR);
        iommufd.ctxs.add(ictx);
        const attached: RestoredAttach[] = [];
        try {
          const built = hwptsSer.map((h) => {
            const domain = lu.restored.get(h.domainData) as IommuDomain | undefined;
            if (!domain) return errno('ENOENT', `the domain of HWPT token ${h.token} was not restored`);
            const ioas = new Ioas(ictx);
            ictx.reserve(ioas);
            ictx.finalize(ioas);
            const hwpt = new HwptPaging(ioas, domain, false);
            ioas.iopt.adoptDomain(domain);
            hwpt.inIopt = true;
            hwpt.luToken = h.token;
            hwpt.luRestored = true;
            for (const sid of domain.devices) {
              const ra = new RestoredAttach(sid, hwpt);
              for (const r of svc.iommu.getResvRegions(sid)) ioas.iopt.reserveIova(r.start, r.start + r.length - 1n, ra);
              attached.push(ra);
            }
            ictx.reserve(hwpt);
            ictx.finalize(hwpt);
            ioas.hwpts.push(hwpt);
            return hwpt;
          });
          for (let k = 0; k < nAreas; k++) {
            const at = areasAt + 8 + k * AREA_SIZE;
            const hwpt = built[v.getUint32(at, true)];
            if (!hwpt) errno('EINVAL', `area ${k}: bad HWPT index`);
            const prot = v.getUint32(at + 4, true);
            const iova = v.getBigUint64(at + 8, true);
            const length = v.getBigUint64(at + 16, true);
            const offset = v.getBigUint64(at + 32, true);
            // liveupdate_get_file_incoming: the memfd, retrieved now if the VMM has not yet.
            const memfd = svc.liveupdate.getFileIncoming(args.session, v.getBigUint64(at + 24, true));
            try {
              const obj = memfd.mapFileObject?.() ?? errno('EINVAL', `area ${k}: the preserved file is not a memfd`);
              const first = offset & ~(PAGE - 1n);
              const npages = Number((offset + length - first + PAGE - 1n) / PAGE);
              const pages = new IoptPages({ type: 'file', obj, page: Number(first / PAGE), file: memfd, seals: REQ_SEALS }, first, npages, !!(prot & 2), svc.pageRefs, args.task ? ictx.accounter(args.task, 'none') : errno('EINVAL', 'no task'));
              hwpt.ioas.iopt.adoptArea(iova, pages, offset - first, length, { read: !!(prot & 1), write: !!(prot & 2) });
            } finally {
              memfd.put();
            }
          }
        } catch (e) {
          abandonRestoredHwpts(ictx);
          ictx.put();
          throw e;
        }
        for (const ra of attached) {
          ra.hwpt.users++;
          iommufd.restoredAttach.set(ra.sid, ra);
          lu.claimed.set(ra.sid, ictx);
        }
        args.file = ictx;
        args.privateData = { size };
        svc.log(`iommufd: retrieved a preserved iommufd with ${nr} HWPTs and ${nAreas} areas`);
      },

      /** Retrieved, and no device still on a restored domain that its VMM has not re-attached. */
      canFinish(args: LiveupdateFileOpArgs) {
        if (args.retrieveStatus !== 'ok' || !args.file) return false;
        for (const o of (args.file as IommufdFile).objects.values()) {
          if (o instanceof HwptPaging && o.luRestored && [...o.domain.devices].some((sid) => svc.iommu.isRestoredAttach(sid))) return false;
        }
        return true;
      },

      finish(args: LiveupdateFileOpArgs) {
        if (args.retrieveStatus !== 'ok') return;
        const p = args.privateData as { size: number };
        khoRestoreFree(mem, args.serializedData, p.size);
        for (const o of (args.file as IommufdFile).objects.values()) if (o instanceof HwptPaging) o.luRestored = false;
      },
    },
  };
}

/**
 * `iommufd_device_preserve` (VFIO's preserve of an attached device): attached (ENOENT) to a
 * marked HWPT (EINVAL), its iommufd preserved in `session` (ENOENT), then the IOMMU core
 * preserves the device under that domain (EINVAL if the domain is not preserved).
 */
export function iommufdDevicePreserve(lu: IommuLiveupdate, session: LiveupdateSession, idev: IommufdDevice): void {
  const hwpt = idev.hwpt;
  if (!hwpt) errno('ENOENT', 'the device is not attached');
  if (!hwpt.luPreserve) errno('EINVAL', 'the device is attached to an HWPT not marked for preservation');
  idev.ictx.iommufd.svc.liveupdate.getTokenOutgoing(session, idev.ictx as IommufdFile);
  lu.preserveDevice(hwpt.domain, idev.sid);
}

/** `iommufd_liveupdate_register_lufs`: the handler and the IOMMU FLB; nothing without LUO. */
export function iommufdLiveupdateInit(iommufd: IommufdSubsystem): void {
  const lu = iommufd.svc.iommu.liveupdate;
  if (!iommufd.svc.liveupdate.enabled || !lu) return;
  const fh = iommufdLuoHandler(iommufd, lu);
  lu.failFunction = (fn) => iommufd.svc.failFunction.inject(fn);
  iommufd.svc.liveupdate.registerFileHandler(fh);
  lu.registerFlb(fh);
}
