// /dev/iommu: the iommufd context, its objects (ids from 1, lowest free, reused), the ioctl
// dispatcher with the size rules, and every command handler — in the kernel's check order
// (drivers/iommu/iommufd/{main,ioas,hw_pagetable}.c); attaching devices is in device.ts.
import { errno, KernelError } from '../../uapi/errno.js';
import * as U from '../../uapi/iommufd.js';
import { getField, setField } from '../../uapi/struct.js';
import type { GuestmemfsInode } from '../guestmemfs/guestmemfs.js';
import { pinOwner } from '../guestmemfs/pins.js';
import type { DmarDomain } from '../intel-iommu/iommu.js';
import { File, type Uaccess } from '../file.js';
import type { Kernel } from '../kernel.js';
import { PAGE_SIZE } from '../mm.js';
import type { Process } from '../process.js';
import { attachHwpt, detachHwpt } from './device.js';
import { faultAlloc, veventqAlloc, type Fault } from './eventq.js';
import { IoPagetable, ULONG_MAX, type IovaRange } from './io_pagetable.js';
import { ioasChangeProcess, ioasNoiommuGetPa } from './ioas.js';
import { IommufdObject, n32, n64, type Ucmd } from './object.js';
import { IoptPages, PinAccount, type AccountMode, type PagesFile } from './pages.js';
import { hwQueueAlloc, vdeviceAlloc, viommuAlloc } from './viommu.js';

const PAGE = BigInt(PAGE_SIZE);
/**
 * The last command number of the kernel's table (IOAS_NOIOMMU_GET_PA). A kernel built with
 * CONFIG_IOMMUFD_TEST has IOMMU_TEST_CMD (0xa0) last, so 0x96-0x9f read the size before ENOTTY.
 */
const IOMMUFD_CMD_LAST = 0x95;
const U64_MAX = 0xffff_ffff_ffff_ffffn;
/** `SIZE_MAX - PAGE_SIZE`: the largest length `iopt_alloc_pages` accepts. */
const MAX_LENGTH = ULONG_MAX - PAGE;

/** `struct iommufd_ioas`. */
export class Ioas extends IommufdObject {
  readonly type = 'IOAS';
  /** Long-term pins on guestmemfs files are tagged with the persistent id and this IOAS's id. */
  readonly iopt = new IoPagetable(() => pinOwner(this.ictx.persistentId, this.id));
  /** `ioas->hwpt_list`. */
  readonly hwpts: HwptPaging[] = [];
  /** A persistent IOAS's holder record in guestmemfs's pin table (its id and domains). */
  private holder: number | null = null;

  constructor(readonly ictx: IommufdCtx) {
    super();
  }

  /**
   * Once it has its id: in a persistent context, guestmemfs records it as a holder of long-term
   * pins, with its domains, so the next kernel knows which IOASes the context had (ENOMEM when
   * the pin table is full).
   */
  register(): void {
    const gm = this.ictx.kernel.guestmemfs;
    if (!this.ictx.persistentId || !gm) return;
    this.holder = gm.pinTable.add({ owner: pinOwner(this.ictx.persistentId, this.id), domains: 0, pgds: [] });
    this.recordDomains();
  }

  /** Its domains changed (an HWPT came or went): the holder record follows, in list order. */
  recordDomains(): void {
    if (this.holder !== null) this.ictx.kernel.guestmemfs!.pinTable.setHolder(this.holder, this.hwpts.map((h) => h.domain.pt.pgd));
  }

  destroy(): void {
    this.iopt.unmapRange(0n, ULONG_MAX);
    if (this.ictx.vfioIoas === this) this.ictx.vfioIoas = null;
    if (this.holder !== null) this.ictx.kernel.guestmemfs!.pinTable.remove(this.holder);
    this.holder = null;
  }
}

/** `struct iommufd_hwpt_paging`. */
export class HwptPaging extends IommufdObject {
  readonly type = 'HWPT_PAGING';
  /** Created by attaching a device to an IOAS (destroyed with its last device). */
  autoDomain = false;
  inIopt = false;
  /** Whether destroying it frees the domain (not for a restored domain a failed claim drops). */
  ownsDomain = true;
  /** `hwpt->fault`: the queue its IO page faults go to (IOMMU_HWPT_FAULT_ID_VALID). */
  fault: Fault | null = null;
  /** `hwpt->pasid_compat` (IOMMU_HWPT_ALLOC_PASID): it may serve PASID attachments. */
  pasidCompat = false;

  constructor(
    readonly ioas: Ioas,
    readonly domain: DmarDomain,
    readonly nestParent: boolean,
  ) {
    super();
    ioas.users++;
  }

  destroy(): void {
    if (this.inIopt) this.ioas.iopt.removeDomain(this.domain);
    const i = this.ioas.hwpts.indexOf(this);
    if (i >= 0) {
      this.ioas.hwpts.splice(i, 1);
      this.ioas.recordDomains();
    }
    if (this.ownsDomain) this.domain.free();
    if (this.fault) this.fault.users--;
    this.ioas.users--;
  }
}

/**
 * A device the previous kernel left translating through a restored domain, from the claim until
 * it leaves that domain (attached in this kernel, attached elsewhere, unbound). It holds a
 * reference on the restored HWPT, so the HWPT outlives the devices attached to it in this kernel,
 * and owns the device's reserved regions (the MSI window) in the IOAS. Leaving is not a detach:
 * the HWPT stays until IOMMU_DESTROY, or until a device attached in this kernel detaches last.
 */
export class RestoredAttach {
  constructor(
    readonly sid: number,
    readonly hwpt: HwptPaging,
  ) {}
}

/**
 * Ends `sid`'s restored attachment if the device has left its restored domain; with `block` it
 * leaves now (`iommufd_device_unbind` releases DMA ownership: the device is blocked).
 */
export function restoredAttachEnd(kernel: Kernel, sid: number, block = false): void {
  const intel = kernel.intel;
  if (block && intel.isRestoredAttach(sid)) intel.blockDevice(sid);
  const ra = kernel.persisted.restoredAttach.get(sid);
  if (!ra || intel.isRestoredAttach(sid)) return;
  kernel.persisted.restoredAttach.delete(sid);
  ra.hwpt.ioas.iopt.removeReserved(ra);
  ra.hwpt.users--;
}

/** `struct iommufd_device`: a bound device (one device per iommu_group here). */
export class IommufdDevice extends IommufdObject {
  readonly type = 'DEVICE';
  /** `igroup->hwpt`: the attachment without PASID. */
  hwpt: HwptPaging | null = null;
  /** `igroup->pasid_attach` for every PASID but IOMMU_NO_PASID. */
  readonly pasidHwpts = new Map<number, HwptPaging>();

  constructor(
    readonly ictx: IommufdCtx,
    /** PCI requester ID (bus << 8 | devfn). */
    readonly sid: number,
    readonly name: string,
  ) {
    super();
  }

  destroy(): void {
    // Unbind: the caller detached first; the group returns to its (blocking) default.
  }
}

/** Commands that would change what KHO DUMP serialised of a persistent context. */
const FROZEN_WHILE_KHO = new Set(['IOMMU_DESTROY', 'IOMMU_IOAS_MAP', 'IOMMU_IOAS_MAP_FILE', 'IOMMU_IOAS_COPY', 'IOMMU_IOAS_UNMAP', 'IOMMU_HWPT_ALLOC']);

const iommuProt = (flags: number) => ({ read: !!(flags & U.IOMMU_IOAS_MAP_READABLE), write: !!(flags & U.IOMMU_IOAS_MAP_WRITEABLE) });
const MAP_FLAGS = U.IOMMU_IOAS_MAP_FIXED_IOVA | U.IOMMU_IOAS_MAP_WRITEABLE | U.IOMMU_IOAS_MAP_READABLE;

/** `struct iommufd_ctx`: one open of /dev/iommu. */
export class IommufdCtx extends File {
  readonly objects = new Map<number, IommufdObject>();
  private readonly reservedIds = new Set<number>();
  /** `ictx->account_mode`: RLIMIT_MODE 0 = per user, 1 = per mm. */
  accountMode: 0 | 1 = 0;
  vfioIoas: Ioas | null = null;
  /** `ictx->persistent_id` (RFC): 0 unless IOMMU_OPTION_PERSISTENT marked it. */
  persistentId = 0;

  constructor(
    readonly kernel: Kernel,
    readonly owner: Process,
    flags: number,
  ) {
    super(flags, '/dev/iommu');
  }

  // ---- objects -------------------------------------------------------------------------------

  /** `xa_alloc` with XA_FLAGS_ALLOC1: the lowest free id; the object is not findable yet. */
  reserve(obj: IommufdObject): void {
    obj.id = this.reserveId();
  }

  /** Takes the lowest free id (reserved until finalized, or for good if nothing finalizes it). */
  reserveId(): number {
    let id = 1;
    while (this.objects.has(id) || this.reservedIds.has(id)) id++;
    this.reservedIds.add(id);
    return id;
  }

  /** `iommufd_object_finalize`. */
  finalize(obj: IommufdObject): void {
    this.reservedIds.delete(obj.id);
    this.objects.set(obj.id, obj);
  }

  /** `iommufd_object_abort_and_destroy`. */
  abort(obj: IommufdObject): void {
    this.reservedIds.delete(obj.id);
    obj.destroy();
  }

  /** `iommufd_get_object`: ENOENT for unknown, unfinalized or mistyped ids. */
  getObject<T extends IommufdObject>(id: number, type?: T['type']): T {
    const obj = this.objects.get(id);
    if (!obj || (type && obj.type !== type)) errno('ENOENT', `no ${type ?? 'object'} with id ${id}`);
    return obj as T;
  }

  /** `iommufd_object_remove`: EBUSY while anyone else holds it. */
  remove(id: number): void {
    const obj = this.objects.get(id);
    if (!obj) errno('ENOENT', `no object with id ${id}`);
    if (obj.users !== 1) errno('EBUSY', `object ${id} is in use`);
    this.objects.delete(id);
    obj.destroy();
  }

  /** Destroys an object whose last holder just left (`iommufd_object_put_and_try_destroy`). */
  tryDestroy(obj: IommufdObject): void {
    if (obj.users === 1 && this.objects.get(obj.id) === obj) {
      this.objects.delete(obj.id);
      obj.destroy();
    }
  }

  /** `iommufd_fops_release`: destroys the leaves until nothing is left. */
  protected release(): void {
    // Devices still on a restored domain of this context leave it first (blocked).
    for (const ra of [...this.kernel.persisted.restoredAttach.values()]) if (ra.hwpt.ioas.ictx === this) restoredAttachEnd(this.kernel, ra.sid, true);
    while (this.objects.size) {
      let progressed = false;
      for (const [id, obj] of [...this.objects]) {
        if (obj.users !== 1) continue;
        this.objects.delete(id);
        obj.destroy();
        progressed = true;
      }
      if (!progressed) throw new Error('iommufd release: reference cycle');
    }
    if (this.persistentId) this.kernel.persistentIommufds.delete(this.persistentId);
    this.kernel.iommufds.delete(this);
  }

  // ---- accounting ----------------------------------------------------------------------------

  /**
   * The charger of a new iopt_pages (`iopt_alloc_pages` + `do_update_pinned`): nothing is
   * charged for a CAP_IPC_LOCK caller (IOPT_PAGES_ACCOUNT_NONE); otherwise RLIMIT_MODE 0 charges
   * the user's `locked_vm`, 1 the mm's, each against RLIMIT_MEMLOCK. `pinned_vm` of the caller's
   * mm counts every pin in every mode. With `mode`, that mode's charger for `proc`.
   */
  accounter(proc: Process, mode: AccountMode = proc.capable('CAP_IPC_LOCK') ? 'none' : this.accountMode === 0 ? 'user' : 'mm'): PinAccount {
    return new PinAccount(mode, proc.mm, proc.uid, this.kernel.userAccount(proc.uid), Math.floor(proc.rlimitMemlock / PAGE_SIZE));
  }

  // ---- dispatch ------------------------------------------------------------------------------

  /** `iommufd_fops_ioctl`. */
  ioctl(proc: Process, request: number, u: Uaccess, arg: bigint): number {
    const nr = request & 0xff;
    if (nr < U.IOMMUFD_CMD_BASE || nr > IOMMUFD_CMD_LAST) {
      // Outside the table: the VFIO type1 compatibility handler, which we do not model.
      return errno('ENOTTY', `unknown iommufd ioctl 0x${request.toString(16)}`);
    }
    const userSize = u.getU32(arg);
    const op = U.IOMMUFD_IOCTL_OPS.get(request);
    // `op->ioctl_num != cmd` (another type byte, or direction and size bits): ENOIOCTLCMD, which
    // the ioctl syscall answers as ENOTTY.
    if (!op) return errno('ENOTTY', `unknown iommufd ioctl 0x${request.toString(16)}`);
    // What KHO serialised must still be true at kexec: a persistent context is frozen meanwhile.
    if (this.persistentId && this.kernel.kho.active && FROZEN_WHILE_KHO.has(op.name)) errno('EBUSY', 'a persistent iommufd is frozen while KHO is active');
    if (userSize < op.minSize) errno('EINVAL', `size ${userSize} below ${op.minSize}`);
    // copy_struct_from_user: zero-extend a short struct; a longer one must be zero past ours.
    const size = op.layout.size;
    const bytes = new Uint8Array(size);
    bytes.set(u.read(arg, Math.min(userSize, size)));
    if (userSize > size && !u.isZeroed(arg + BigInt(size), userSize - size)) errno('E2BIG', 'non-zero bytes past the known struct');
    const view = new DataView(bytes.buffer);
    const cmd: Record<string, number | bigint> = {};
    for (const f of op.layout.fields) cmd[f.name] = getField(view, f);
    const ucmd: Ucmd = { proc, u, ubuffer: arg, userSize, layout: op.layout, cmd };
    HANDLERS[op.name]!(this, ucmd);
    return 0;
  }

  /** `iommufd_ucmd_respond`: copies the whole struct back, up to the user's size. */
  respond(ucmd: Ucmd): void {
    const bytes = new Uint8Array(ucmd.layout.size);
    const view = new DataView(bytes.buffer);
    for (const f of ucmd.layout.fields) setField(view, f, ucmd.cmd[f.name]!);
    ucmd.u.write(ucmd.ubuffer, bytes.subarray(0, Math.min(ucmd.userSize, bytes.length)));
  }

  /** The IOAS `id` names (`iommufd_get_ioas`). */
  ioas(id: number): Ioas {
    return this.getObject<Ioas>(id, 'IOAS');
  }
}

type Handler = (ictx: IommufdCtx, ucmd: Ucmd) => void;

const HANDLERS: Record<string, Handler> = {
  IOMMU_DESTROY(ictx, { cmd }) {
    ictx.remove(n32(cmd.id!));
  },

  IOMMU_IOAS_ALLOC(ictx, ucmd) {
    if (ucmd.cmd.flags) errno('EOPNOTSUPP', 'flags must be 0');
    const ioas = new Ioas(ictx);
    ictx.reserve(ioas);
    ucmd.cmd.out_ioas_id = ioas.id;
    try {
      ioas.register();
      ictx.respond(ucmd);
    } catch (e) {
      ictx.abort(ioas);
      throw e;
    }
    ictx.finalize(ioas);
  },

  IOMMU_IOAS_IOVA_RANGES(ictx, ucmd) {
    const { cmd, u } = ucmd;
    if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
    const ioas = ictx.ioas(n32(cmd.ioas_id!));
    const max = n32(cmd.num_iovas!);
    const ranges = n64(cmd.allowed_iovas!);
    let num = 0;
    cmd.out_iova_alignment = ioas.iopt.iovaAlignment;
    for (const hole of ioas.iopt.allowedHoles()) {
      if (num < max) u.write(ranges + BigInt(num) * 16n, rangeBytes(hole));
      num++;
    }
    cmd.num_iovas = num;
    ictx.respond(ucmd);
    if (num > max) errno('EMSGSIZE', `${num} ranges, room for ${max}`);
  },

  IOMMU_IOAS_ALLOW_IOVAS(ictx, { cmd, u }) {
    if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
    const ioas = ictx.ioas(n32(cmd.ioas_id!));
    const ranges: IovaRange[] = [];
    const base = n64(cmd.allowed_iovas!);
    for (let i = 0; i < n32(cmd.num_iovas!); i++) {
      const b = u.read(base + BigInt(i) * 16n, 16);
      const v = new DataView(b.buffer, b.byteOffset, 16);
      const r = { start: v.getBigUint64(0, true), last: v.getBigUint64(8, true) };
      if (r.start >= r.last) errno('EINVAL', `range ${i}: start must be below last`);
      if (ranges.some((o) => o.start <= r.last && o.last >= r.start)) errno('EINVAL', `range ${i} overlaps another`);
      ranges.push(r);
    }
    ioas.iopt.setAllowIova(ranges);
  },

  IOMMU_IOAS_MAP(ictx, ucmd) {
    const { cmd, proc } = ucmd;
    const flags = n32(cmd.flags!);
    if (flags & ~MAP_FLAGS || cmd.__reserved) errno('EOPNOTSUPP', 'unknown flags or __reserved set');
    const iova = n64(cmd.iova!);
    const length = n64(cmd.length!);
    const uptr = n64(cmd.user_va!);
    if (iova >= ULONG_MAX || length >= ULONG_MAX) errno('EOVERFLOW', 'iova or length too large');
    if (!(flags & (U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE))) errno('EINVAL', 'neither READABLE nor WRITEABLE');
    const ioas = ictx.ioas(n32(cmd.ioas_id!));
    // RFC patch 12: a persistent context maps guestmemfs only (here: every VMA of the range).
    const files = ictx.persistentId ? persistentFiles(proc, uptr, length) : [];
    // iopt_alloc_user_pages: uptr + length must not wrap, then iopt_alloc_pages judges the length.
    if (uptr + length > ULONG_MAX) errno('EOVERFLOW', 'user_va + length overflows');
    if (length === 0n || length > MAX_LENGTH) errno('EINVAL', 'bad length');
    const start = uptr & ~(PAGE - 1n);
    const npages = Number((uptr + length - start + PAGE - 1n) / PAGE);
    const pages = new IoptPages(
      { type: 'user', mm: proc.mm, page: Number(start / PAGE) },
      start,
      npages,
      !!(flags & U.IOMMU_IOAS_MAP_WRITEABLE),
      ictx.kernel.pageRefs,
      ictx.accounter(proc),
      files,
    );
    try {
      cmd.iova = ioas.iopt.mapPages([{ pages, startByte: uptr - start, length }], length, flags & U.IOMMU_IOAS_MAP_FIXED_IOVA ? iova : null, iommuProt(flags));
    } finally {
      pages.put();
    }
    // If the iova cannot be written back the call fails with EFAULT, and the mapping stays.
    ictx.respond(ucmd);
  },

  IOMMU_IOAS_MAP_FILE(ictx, ucmd) {
    const { cmd, proc } = ucmd;
    const flags = n32(cmd.flags!);
    if (flags & ~MAP_FLAGS) errno('EOPNOTSUPP', 'unknown flags');
    const iova = n64(cmd.iova!);
    const length = n64(cmd.length!);
    const fstart = n64(cmd.start!);
    if (iova >= ULONG_MAX || length >= ULONG_MAX) errno('EOVERFLOW', 'iova or length too large');
    if (!(flags & (U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE))) errno('EINVAL', 'neither READABLE nor WRITEABLE');
    const ioas = ictx.ioas(n32(cmd.ioas_id!));
    // iopt_map_file_pages: the range is judged before the fd is looked up.
    if (length === 0n) errno('EINVAL', 'zero length');
    if (fstart + length - 1n > ULONG_MAX) errno('EOVERFLOW', 'start + length - 1 overflows');
    const file = proc.fget(n32(cmd.fd!));
    try {
      // Any file is taken: whether it can be pinned (shmem, within i_size) is only known when a
      // domain needs its pages (memfd_pin_folios), so without one even a non-memfd maps.
      const obj = file.mapFileObject?.() ?? null;
      const gm = obj?.guestmemfs as GuestmemfsInode | undefined;
      if (ictx.persistentId && !gm) errno('EFAULT', 'a persistent iommufd maps guestmemfs files only');
      // iopt_alloc_pages
      if (length > MAX_LENGTH) errno('EINVAL', 'length too large');
      const first = fstart & ~(PAGE - 1n);
      const npages = Number((fstart + length - first + PAGE - 1n) / PAGE);
      const pages = new IoptPages(
        { type: 'file', obj, page: Number(first / PAGE) },
        first,
        npages,
        !!(flags & U.IOMMU_IOAS_MAP_WRITEABLE),
        ictx.kernel.pageRefs,
        ictx.accounter(proc),
        ictx.persistentId && gm ? [{ file: gm, first: 0, last: npages - 1, filePage: Number(first / PAGE) }] : [],
      );
      try {
        cmd.iova = ioas.iopt.mapPages([{ pages, startByte: fstart - first, length }], length, flags & U.IOMMU_IOAS_MAP_FIXED_IOVA ? iova : null, iommuProt(flags));
      } finally {
        pages.put();
      }
    } finally {
      file.put();
    }
    ictx.respond(ucmd);
  },

  IOMMU_IOAS_COPY(ictx, ucmd) {
    const { cmd } = ucmd;
    const flags = n32(cmd.flags!);
    if (flags & ~MAP_FLAGS) errno('EOPNOTSUPP', 'unknown flags');
    const length = n64(cmd.length!);
    const src = n64(cmd.src_iova!);
    const dst = n64(cmd.dst_iova!);
    if (length >= ULONG_MAX || src >= ULONG_MAX || dst >= ULONG_MAX) errno('EOVERFLOW', 'length or iova too large');
    if (!(flags & (U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE))) errno('EINVAL', 'neither READABLE nor WRITEABLE');
    const srcIoas = ictx.ioas(n32(cmd.src_ioas_id!));
    const list = srcIoas.iopt.getPages(src, length);
    for (const e of list) e.pages.get();
    try {
      const dstIoas = ictx.ioas(n32(cmd.dst_ioas_id!));
      cmd.dst_iova = dstIoas.iopt.mapPages(list, length, flags & U.IOMMU_IOAS_MAP_FIXED_IOVA ? dst : null, iommuProt(flags));
      ictx.respond(ucmd);
    } finally {
      for (const e of list) e.pages.put();
    }
  },

  IOMMU_IOAS_UNMAP(ictx, ucmd) {
    const { cmd } = ucmd;
    const ioas = ictx.ioas(n32(cmd.ioas_id!));
    const iova = n64(cmd.iova!);
    const length = n64(cmd.length!);
    let unmapped: bigint;
    if (iova === 0n && length === U64_MAX) {
      unmapped = ioas.iopt.unmapRange(0n, ULONG_MAX).unmapped;
    } else {
      if (iova >= ULONG_MAX || length >= ULONG_MAX) errno('EOVERFLOW', 'iova or length too large');
      if (length === 0n) errno('EINVAL', 'zero length');
      if (iova + length - 1n > ULONG_MAX) errno('EOVERFLOW', 'iova + length overflows');
      const r = ioas.iopt.unmapRange(iova, iova + length - 1n);
      if (r.error) errno(r.error, r.error === 'ENOENT' ? 'splitting or truncating an area is not allowed' : 'area busy');
      unmapped = r.unmapped;
      if (!unmapped) errno('ENOENT', 'nothing mapped in the range');
    }
    cmd.length = unmapped;
    ictx.respond(ucmd);
  },

  IOMMU_OPTION(ictx, ucmd) {
    const { cmd, proc, u } = ucmd;
    if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
    const op = n32(cmd.op!);
    switch (n32(cmd.option_id!)) {
      case U.IOMMU_OPTION_RLIMIT_MODE:
        if (cmd.object_id) errno('EOPNOTSUPP', 'RLIMIT_MODE is global: object_id must be 0');
        if (op === U.IOMMU_OPTION_OP_GET) cmd.val64 = BigInt(ictx.accountMode);
        else if (op === U.IOMMU_OPTION_OP_SET) {
          if (!proc.capable('CAP_SYS_RESOURCE')) errno('EPERM', 'needs CAP_SYS_RESOURCE');
          if (ictx.objects.size) errno('EBUSY', 'the context already has objects');
          if (cmd.val64 === 0n || cmd.val64 === 1n) ictx.accountMode = Number(cmd.val64) as 0 | 1;
          else errno('EINVAL', 'RLIMIT_MODE is 0 or 1');
        } else errno('EOPNOTSUPP', 'bad op');
        break;
      case U.IOMMU_OPTION_HUGE_PAGES: {
        const ioas = ictx.ioas(n32(cmd.object_id!));
        if (op === U.IOMMU_OPTION_OP_GET) cmd.val64 = ioas.iopt.disableLargePages ? 0n : 1n;
        else if (op === U.IOMMU_OPTION_OP_SET) {
          if (cmd.val64 === 0n) ioas.iopt.disableLarge();
          else if (cmd.val64 === 1n) ioas.iopt.enableLarge();
          else errno('EINVAL', 'HUGE_PAGES is 0 or 1');
        } else errno('EOPNOTSUPP', 'bad op');
        break;
      }
      case U.IOMMU_OPTION_PERSISTENT:
        // RFC patch 01: global ids from 1; only an empty context can become persistent.
        if (op === U.IOMMU_OPTION_OP_GET) cmd.val64 = BigInt(ictx.persistentId);
        else if (op === U.IOMMU_OPTION_OP_SET) {
          if (ictx.objects.size) {
            ictx.kernel.log('iommufd: iommufd can only be marked persistented when unused');
            errno('EFAULT', 'the context already has objects');
          }
          if (!ictx.persistentId) {
            // Ids of contexts handed over and not yet claimed are taken too.
            let id = 1;
            while (ictx.kernel.persistentIommufds.has(id) || ictx.kernel.persisted?.pending.has(id)) id++;
            ictx.kernel.persistentIommufds.set(id, ictx);
            ictx.persistentId = id;
          }
          cmd.val64 = BigInt(ictx.persistentId);
        } else errno('EOPNOTSUPP', 'bad op');
        break;
      default:
        errno('EOPNOTSUPP', `unknown option ${cmd.option_id}`);
    }
    // Only val64 is copied back.
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, n64(cmd.val64!), true);
    u.write(ucmd.ubuffer + 16n, b);
  },

  IOMMU_VFIO_IOAS(ictx, ucmd) {
    const { cmd } = ucmd;
    if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
    switch (n32(cmd.op!)) {
      case U.IOMMU_VFIO_IOAS_GET:
        if (!ictx.vfioIoas) errno('ENODEV', 'no compat IOAS');
        cmd.ioas_id = ictx.vfioIoas.id;
        ictx.respond(ucmd);
        return;
      case U.IOMMU_VFIO_IOAS_SET:
        ictx.vfioIoas = ictx.ioas(n32(cmd.ioas_id!));
        return;
      case U.IOMMU_VFIO_IOAS_CLEAR:
        ictx.vfioIoas = null;
        return;
      default:
        errno('EOPNOTSUPP', 'bad op');
    }
  },

  IOMMU_HWPT_ALLOC(ictx, ucmd) {
    const { cmd } = ucmd;
    const flags = n32(cmd.flags!);
    const dataType = n32(cmd.data_type!);
    if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
    if ((dataType === U.IOMMU_HWPT_DATA_NONE) !== !cmd.data_len) errno('EINVAL', 'data_type and data_len disagree');
    const idev = ictx.getObject<IommufdDevice>(n32(cmd.dev_id!), 'DEVICE');
    const pt = ictx.objects.get(n32(cmd.pt_id!));
    if (!pt) errno('EINVAL', `no object with id ${cmd.pt_id}`);
    let hwpt: HwptPaging;
    if (pt instanceof Ioas) {
      hwpt = hwptPagingAlloc(ictx, pt, idev, flags, false, dataType !== U.IOMMU_HWPT_DATA_NONE);
    } else if (pt instanceof HwptPaging) {
      // iommufd_hwpt_nested_alloc: the parent must be a NEST_PARENT paging HWPT.
      if (flags & ~(U.IOMMU_HWPT_FAULT_ID_VALID | U.IOMMU_HWPT_ALLOC_PASID) || !cmd.data_len) errno('EOPNOTSUPP', 'nested allocation flags or data');
      if (pt.autoDomain || !pt.nestParent) errno('EINVAL', 'parent is not a NEST_PARENT HWPT');
      return errno('EOPNOTSUPP', 'nesting needs scalable mode');
    } else {
      return errno('EINVAL', 'pt_id is neither an IOAS nor an HWPT');
    }
    try {
      if (flags & U.IOMMU_HWPT_FAULT_ID_VALID) {
        // The domain exists (the driver never saw the flag); now the queue its faults go to.
        const fault = ictx.getObject<Fault>(n32(cmd.fault_id!), 'FAULT');
        hwpt.fault = fault;
        fault.users++;
        hwpt.domain.iopfHandler = true;
      }
      cmd.out_hwpt_id = hwpt.id;
      ictx.respond(ucmd);
    } catch (e) {
      ictx.abort(hwpt);
      throw e;
    }
    ictx.finalize(hwpt);
  },

  IOMMU_GET_HW_INFO(ictx, ucmd) {
    const { cmd, u } = ucmd;
    const flags = n32(cmd.flags!);
    if (flags & ~U.IOMMU_HW_INFO_FLAG_INPUT_TYPE || cmd.__reserved0 || cmd.__reserved1 || cmd.__reserved2) errno('EOPNOTSUPP', 'unknown flags or __reserved set');
    // Without INPUT_TYPE whatever the union holds asks for the default type.
    const inType = flags & U.IOMMU_HW_INFO_FLAG_INPUT_TYPE ? n32(cmd.in_data_type!) : U.IOMMU_HW_INFO_TYPE_DEFAULT;
    const idev = ictx.getObject<IommufdDevice>(n32(cmd.dev_id!), 'DEVICE');
    // intel_iommu_hw_info: the default type or its own, nothing else.
    if (inType !== U.IOMMU_HW_INFO_TYPE_DEFAULT && inType !== U.IOMMU_HW_INFO_TYPE_INTEL_VTD) errno('EOPNOTSUPP', `no hw info of type ${inType}`);
    const intel = ictx.kernel.intel;
    const data = intel.hwInfo();
    const want = n32(cmd.data_len!);
    const copy = Math.min(want, data.length);
    const ptr = n64(cmd.data_uptr!);
    u.write(ptr, data.subarray(0, copy));
    if (copy < want) u.write(ptr + BigInt(copy), new Uint8Array(want - copy));
    cmd.data_len = data.length;
    cmd.out_data_type = U.IOMMU_HW_INFO_TYPE_INTEL_VTD; // the union's output member: what respond writes
    // max_pasids is 0 (PASID needs scalable mode): no max_pasid_log2, no PASID_EXEC/PRIV.
    cmd.out_max_pasid_log2 = 0;
    let caps = 0;
    if (intel.capable(idev.sid, 'dirty-tracking')) caps |= U.IOMMU_HW_CAP_DIRTY_TRACKING;
    if (!intel.capable(idev.sid, 'pci-ats-supported')) caps |= U.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED;
    cmd.out_capabilities = BigInt(caps);
    ictx.respond(ucmd);
  },

  IOMMU_HWPT_SET_DIRTY_TRACKING(ictx, { cmd }) {
    // iommufd_hwpt_set_dirty_tracking checks the flags only, not __reserved.
    if (n32(cmd.flags!) & ~U.IOMMU_HWPT_DIRTY_TRACKING_ENABLE) errno('EOPNOTSUPP', 'unknown flags');
    ictx.getObject<HwptPaging>(n32(cmd.hwpt_id!), 'HWPT_PAGING');
    errno('EOPNOTSUPP', 'the domain has no dirty-tracking ops');
  },

  IOMMU_HWPT_GET_DIRTY_BITMAP(ictx, { cmd }) {
    if (n32(cmd.flags!) & ~U.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR || cmd.__reserved) errno('EOPNOTSUPP', 'unknown flags or __reserved set');
    const hwpt = ictx.getObject<HwptPaging>(n32(cmd.hwpt_id!), 'HWPT_PAGING');
    // iommufd_check_iova_range
    const iova = n64(cmd.iova!);
    const length = n64(cmd.length!);
    const pageSize = n64(cmd.page_size!);
    // A zero length is refused before length - 1 is formed.
    if (length === 0n) errno('EINVAL', 'zero length');
    const last = iova + length - 1n;
    if (last > ULONG_MAX) errno('EOVERFLOW', 'iova + length overflows');
    const end = (last + 1n) & U64_MAX;
    const align = hwpt.ioas.iopt.iovaAlignment - 1n;
    if (iova & align || end & align) errno('EINVAL', 'range not aligned to iova_alignment');
    if (pageSize === 0n) errno('EINVAL', 'page_size is 0');
    if (iova & (pageSize - 1n) || end & (pageSize - 1n)) errno('EINVAL', 'range not aligned to page_size');
    errno('EOPNOTSUPP', 'the domain has no dirty-tracking ops');
  },

  IOMMU_FAULT_QUEUE_ALLOC: faultAlloc,
  IOMMU_VIOMMU_ALLOC: viommuAlloc,
  IOMMU_IOAS_CHANGE_PROCESS: ioasChangeProcess,
  IOMMU_IOAS_NOIOMMU_GET_PA: ioasNoiommuGetPa,
  IOMMU_VDEVICE_ALLOC: vdeviceAlloc,
  IOMMU_VEVENTQ_ALLOC: veventqAlloc,
  IOMMU_HW_QUEUE_ALLOC: hwQueueAlloc,

  IOMMU_HWPT_INVALIDATE(ictx, ucmd) {
    const { cmd } = ucmd;
    const fail = (): never => {
      if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
      // Bounds so that one call cannot pin the CPU (IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX = 1 << 19).
      const num = n32(cmd.entry_num!);
      const len = n32(cmd.entry_len!);
      if (num && (!cmd.data_uptr || !len || len > PAGE_SIZE || num > 1 << 19)) errno('EINVAL', 'bad entry array');
      if (!ictx.objects.get(n32(cmd.hwpt_id!))) errno('ENOENT', `no object with id ${cmd.hwpt_id}`);
      // Nested HWPTs and vIOMMUs take user invalidations; legacy mode can create neither.
      return errno('EINVAL', 'only a nested HWPT or a vIOMMU takes user invalidations');
    };
    let failure: unknown;
    try {
      fail();
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      failure = e;
    }
    // Every outcome writes entry_num back as the number handled; a fault doing so is EFAULT.
    cmd.entry_num = 0;
    ictx.respond(ucmd);
    throw failure;
  },
};

/** The guestmemfs files behind every VMA of `[uptr, uptr + length)` by page window, or EFAULT. */
function persistentFiles(proc: Process, uptr: bigint, length: bigint): PagesFile[] {
  if (length === 0n) errno('EFAULT', 'no VMA intersects an empty range');
  const out: PagesFile[] = [];
  const first = Number(uptr / PAGE);
  const last = Number((uptr + length - 1n) / PAGE);
  for (let p = first; p <= last; ) {
    const vma = proc.mm.find(p);
    const gm = vma?.obj.guestmemfs as GuestmemfsInode | undefined;
    if (!vma || !gm) errno('EFAULT', 'a persistent iommufd maps guestmemfs memory only');
    const end = Math.min(vma.end - 1, last);
    const filePage = vma.pgoff + (p - vma.start);
    const prev = out[out.length - 1];
    if (prev && prev.file === gm && prev.last === p - first - 1 && prev.filePage + (p - first - prev.first) === filePage) prev.last = end - first;
    else out.push({ file: gm, first: p - first, last: end - first, filePage });
    p = vma.end;
  }
  return out;
}

function rangeBytes(r: IovaRange): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, r.start, true);
  v.setBigUint64(8, r.last, true);
  return b;
}

/**
 * `iommufd_hwpt_paging_alloc`: a new paging domain on `ioas`. With `immediateAttach` the device
 * is attached before the domain joins the IOAS (the auto-domain path).
 */
export function hwptPagingAlloc(ictx: IommufdCtx, ioas: Ioas, idev: IommufdDevice, flags: number, immediateAttach: boolean, userData = false, pasid = 0): HwptPaging {
  const valid = U.IOMMU_HWPT_ALLOC_NEST_PARENT | U.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | U.IOMMU_HWPT_FAULT_ID_VALID | U.IOMMU_HWPT_ALLOC_PASID;
  if (flags & ~valid) errno('EOPNOTSUPP', 'unknown HWPT_ALLOC flags');
  if (flags & U.IOMMU_HWPT_ALLOC_DIRTY_TRACKING) errno('EOPNOTSUPP', 'no dirty tracking in legacy mode');
  if (flags & U.IOMMU_HWPT_FAULT_ID_VALID && flags & U.IOMMU_HWPT_ALLOC_NEST_PARENT) errno('EOPNOTSUPP', 'FAULT_ID_VALID with NEST_PARENT');
  // intel_iommu_domain_alloc_paging_flags: no user data; in legacy mode only the second-stage
  // allocator, which takes ALLOC_PASID (the HWPT's pasid_compat, which only PASID attaches look
  // at, and VFIO refuses those here) but not NEST_PARENT without nesting support.
  if (userData) errno('EOPNOTSUPP', 'no driver data for a paging domain');
  if (flags & U.IOMMU_HWPT_ALLOC_NEST_PARENT) errno('EOPNOTSUPP', 'no nesting in legacy mode');
  const domain = ictx.kernel.intel.domainAllocPaging();
  domain.persistentId = ictx.persistentId;
  const hwpt = new HwptPaging(ioas, domain, false);
  hwpt.pasidCompat = !!(flags & U.IOMMU_HWPT_ALLOC_PASID);
  ictx.reserve(hwpt);
  try {
    if (immediateAttach) attachHwpt(idev, hwpt, pasid);
    try {
      ioas.iopt.addDomain(domain);
      hwpt.inIopt = true;
    } catch (e) {
      if (immediateAttach) detachHwpt(idev, pasid);
      throw e;
    }
  } catch (e) {
    ictx.abort(hwpt);
    throw e;
  }
  ioas.hwpts.push(hwpt);
  ioas.recordDomains();
  return hwpt;
}
