// /dev/iommu (drivers/iommu/iommufd/main.c): the iommufd context, its objects (ids from 1, lowest
// free, reused), the ioctl dispatcher with the size rules, and the command table; IOMMU_DESTROY and
// IOMMU_OPTION are here as in main.c. The other commands are in the modules of the kernel's files
// (ioas, hw_pagetable, device, eventq, viommu), which share private.ts and never import this.
import { errno, KernelError } from '../../uapi/errno.js';
import * as U from '../../uapi/iommufd.js';
import type { IoctlRequest } from '../../uapi/ioc.js';
import type { StructLayout } from '../../uapi/struct.js';
import { File, type Task, type Uaccess } from '../file.js';
import { PAGE_SIZE } from '../mm.js';
import { getHwInfo, restoredAttachEnd } from './device.js';
import { faultAlloc, veventqAlloc } from './eventq.js';
import { hwptAlloc, hwptGetDirtyBitmap, hwptInvalidate, hwptLuSetPreserve, hwptSetDirtyTracking } from './hw_pagetable.js';
import { ioasAlloc, ioasAllowIovas, ioasChangeProcess, ioasCopy, ioasIovaRanges, ioasMap, ioasMapFile, ioasNoiommuGetPa, ioasUnmap, vfioIoas } from './ioas.js';
import { PinAccount, type AccountMode } from './pages.js';
import { type Ioas, type IommufdCtx, type IommufdHandler, type IommufdObject, type IommufdSubsystem, type Ucmd } from './private.js';
import { hwQueueAlloc, vdeviceAlloc, viommuAlloc } from './viommu.js';

/**
 * The last command number of the table: 7.3's ends at IOAS_NOIOMMU_GET_PA (0x95); the live-update
 * series adds HWPT_LU_SET_PRESERVE (0x96 here, README "The upstream flow"). A kernel built with
 * CONFIG_IOMMUFD_TEST has IOMMU_TEST_CMD (0xa0) last, so 0x97-0x9f read the size before ENOTTY.
 */
const IOMMUFD_CMD_LAST = 0x96;
/** Linux 7.3's last command (a kernel built without the live-update series). */
const IOMMUFD_CMD_LAST_73 = 0x95;

/** Commands that would change what KHO DUMP serialised of a persistent context. */
const FROZEN_WHILE_KHO = new Set(['IOMMU_DESTROY', 'IOMMU_IOAS_MAP', 'IOMMU_IOAS_MAP_FILE', 'IOMMU_IOAS_COPY', 'IOMMU_IOAS_UNMAP', 'IOMMU_HWPT_ALLOC']);

/** `struct iommufd_ctx`: one open of /dev/iommu (`iommufd_fops_open`), or a claimed persisted context. */
export class IommufdFile extends File implements IommufdCtx {
  readonly objects = new Map<number, IommufdObject>();
  private readonly reservedIds = new Set<number>();
  /** `ictx->account_mode`: RLIMIT_MODE 0 = per user, 1 = per mm. */
  accountMode: 0 | 1 = 0;
  vfioIoas: Ioas | null = null;
  /** `ictx->persistent_id` (RFC): 0 unless IOMMU_OPTION_PERSISTENT marked it. */
  persistentId = 0;

  constructor(
    readonly iommufd: IommufdSubsystem,
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
    for (const ra of [...this.iommufd.restoredAttach.values()]) if (ra.hwpt.ioas.ictx === this) restoredAttachEnd(this.iommufd, ra.sid, true);
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
    if (this.persistentId) this.iommufd.persistent.delete(this.persistentId);
    this.iommufd.ctxs.delete(this);
  }

  // ---- accounting ----------------------------------------------------------------------------

  /**
   * The charger of a new iopt_pages (`iopt_alloc_pages` + `do_update_pinned`): nothing is
   * charged for a CAP_IPC_LOCK caller (IOPT_PAGES_ACCOUNT_NONE); otherwise RLIMIT_MODE 0 charges
   * the user's `locked_vm`, 1 the mm's, each against RLIMIT_MEMLOCK. `pinned_vm` of the caller's
   * mm counts every pin in every mode. With `mode`, that mode's charger for `task`.
   */
  accounter(task: Task, mode: AccountMode = task.capable('CAP_IPC_LOCK') ? 'none' : this.accountMode === 0 ? 'user' : 'mm'): PinAccount {
    return new PinAccount(mode, task.mm, task.uid, this.iommufd.svc.userAccount(task.uid), Math.floor(task.rlimitMemlock / PAGE_SIZE));
  }

  // ---- dispatch ------------------------------------------------------------------------------

  /** `iommufd_fops_ioctl`. */
  ioctl(task: Task, request: number, u: Uaccess, arg: bigint): number | KernelError {
    const nr = request & 0xff;
    const last = this.iommufd.svc.kconfig.IOMMU_LIVEUPDATE ? IOMMUFD_CMD_LAST : IOMMUFD_CMD_LAST_73;
    if (nr < U.IOMMUFD_CMD_BASE || nr > last) {
      // Outside the table: the VFIO type1 compatibility handler, which we do not model.
      return new KernelError('ENOTTY', `unknown iommufd ioctl 0x${request.toString(16)}`);
    }
    const userSize = u.getU32(arg);
    const op = IOCTL_OPS.get(request);
    // `op->ioctl_num != cmd` (another type byte, or direction and size bits): ENOIOCTLCMD, which
    // the ioctl syscall answers as ENOTTY.
    if (!op) return new KernelError('ENOTTY', `unknown iommufd ioctl 0x${request.toString(16)}`);
    // What KHO serialised must still be true at kexec: a persistent context is frozen meanwhile.
    if (this.persistentId && this.iommufd.svc.kho.active && FROZEN_WHILE_KHO.has(op.name)) return new KernelError('EBUSY', 'a persistent iommufd is frozen while KHO is active');
    if (userSize < op.minSize) return new KernelError('EINVAL', `size ${userSize} below ${op.minSize}`);
    const cmd = u.copyStruct(arg, op.layout, userSize);
    const ucmd: Ucmd = { task, u, ubuffer: arg, userSize, layout: op.layout, cmd };
    return op.execute(this, ucmd) ?? 0;
  }

  /** `iommufd_ucmd_respond`: copies the whole struct back, up to the user's size. */
  respond<L extends StructLayout>(ucmd: Ucmd<L>): void {
    ucmd.u.respondStruct(ucmd.ubuffer, ucmd.layout, ucmd.cmd, ucmd.userSize);
  }

  /** The IOAS `id` names (`iommufd_get_ioas`). */
  ioas(id: number): Ioas {
    const ioas = this.findIoas(id);
    if (ioas instanceof KernelError) throw ioas;
    return ioas;
  }

  /** {@link ioas}, its ENOENT returned. */
  findIoas(id: number): Ioas | KernelError {
    const obj = this.objects.get(id);
    return obj !== undefined && obj.type === 'IOAS' ? (obj as Ioas) : new KernelError('ENOENT', `no IOAS with id ${id}`);
  }
}

// ---- main.c commands -------------------------------------------------------------------------

/** IOMMU_DESTROY (`iommufd_destroy`). */
export function destroy(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_destroy>): KernelError | undefined {
  const obj = ictx.objects.get(cmd.id);
  if (!obj) return new KernelError('ENOENT', `no object with id ${cmd.id}`);
  ictx.remove(cmd.id);
  return undefined;
}

/** IOMMU_OPTION (`iommufd_option`). */
export function option(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_option>): void {
  const { cmd, task, u } = ucmd;
  if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
  const op = cmd.op;
  switch (cmd.option_id) {
    case U.IOMMU_OPTION_RLIMIT_MODE:
      if (cmd.object_id) errno('EOPNOTSUPP', 'RLIMIT_MODE is global: object_id must be 0');
      if (op === U.IOMMU_OPTION_OP_GET) cmd.val64 = BigInt(ictx.accountMode);
      else if (op === U.IOMMU_OPTION_OP_SET) {
        if (!task.capable('CAP_SYS_RESOURCE')) errno('EPERM', 'needs CAP_SYS_RESOURCE');
        if (ictx.objects.size) errno('EBUSY', 'the context already has objects');
        if (cmd.val64 === 0n || cmd.val64 === 1n) ictx.accountMode = Number(cmd.val64) as 0 | 1;
        else errno('EINVAL', 'RLIMIT_MODE is 0 or 1');
      } else errno('EOPNOTSUPP', 'bad op');
      break;
    case U.IOMMU_OPTION_HUGE_PAGES: {
      const ioas = ictx.ioas(cmd.object_id);
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
          ictx.iommufd.svc.log('iommufd: iommufd can only be marked persistented when unused');
          errno('EFAULT', 'the context already has objects');
        }
        if (!ictx.persistentId) {
          // Ids of contexts handed over and not yet claimed are taken too.
          let id = 1;
          while (ictx.iommufd.persistent.has(id) || ictx.iommufd.pendingId(id)) id++;
          ictx.iommufd.persistent.set(id, ictx);
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
  new DataView(b.buffer).setBigUint64(0, cmd.val64, true);
  u.write(ucmd.ubuffer + 16n, b);
}

// ---- the command table -----------------------------------------------------------------------

/** One entry of `iommufd_ioctl_ops`: the request, its struct, the minimum size, the handler. */
interface IommufdIoctlOp {
  name: string;
  layout: StructLayout;
  /** `offsetofend` of the struct's last mandatory member. */
  minSize: number;
  execute: IommufdHandler;
}

/**
 * `IOCTL_OP(request, handler)`: the struct and its minimum size come from the uAPI table
 * (uapi/iommufd.ts, which the syscall encoder reads too), so they are stated once.
 */
function ioctlOp<L extends StructLayout>(request: IoctlRequest<L>, execute: IommufdHandler<L>): [number, IommufdIoctlOp] {
  const op = U.IOMMUFD_IOCTL_OPS.get(request);
  if (!op) throw new Error(`iommufd: request 0x${request.toString(16)} is not in the uAPI table`);
  // The handler's struct is the request's (checked above by the types); the table holds any.
  return [request, { name: op.name, layout: op.layout, minSize: op.minSize, execute: execute as unknown as IommufdHandler }];
}

/** `iommufd_ioctl_ops`, by request number. */
const IOCTL_OPS: ReadonlyMap<number, IommufdIoctlOp> = new Map([
  ioctlOp(U.IOMMU_DESTROY, destroy),
  ioctlOp(U.IOMMU_FAULT_QUEUE_ALLOC, faultAlloc),
  ioctlOp(U.IOMMU_GET_HW_INFO, getHwInfo),
  ioctlOp(U.IOMMU_HW_QUEUE_ALLOC, hwQueueAlloc),
  ioctlOp(U.IOMMU_HWPT_ALLOC, hwptAlloc),
  ioctlOp(U.IOMMU_HWPT_GET_DIRTY_BITMAP, hwptGetDirtyBitmap),
  ioctlOp(U.IOMMU_HWPT_INVALIDATE, hwptInvalidate),
  ioctlOp(U.IOMMU_HWPT_LU_SET_PRESERVE, hwptLuSetPreserve),
  ioctlOp(U.IOMMU_HWPT_SET_DIRTY_TRACKING, hwptSetDirtyTracking),
  ioctlOp(U.IOMMU_IOAS_ALLOC, ioasAlloc),
  ioctlOp(U.IOMMU_IOAS_ALLOW_IOVAS, ioasAllowIovas),
  ioctlOp(U.IOMMU_IOAS_CHANGE_PROCESS, ioasChangeProcess),
  ioctlOp(U.IOMMU_IOAS_COPY, ioasCopy),
  ioctlOp(U.IOMMU_IOAS_IOVA_RANGES, ioasIovaRanges),
  ioctlOp(U.IOMMU_IOAS_MAP, ioasMap),
  ioctlOp(U.IOMMU_IOAS_MAP_FILE, ioasMapFile),
  ioctlOp(U.IOMMU_IOAS_NOIOMMU_GET_PA, ioasNoiommuGetPa),
  ioctlOp(U.IOMMU_IOAS_UNMAP, ioasUnmap),
  ioctlOp(U.IOMMU_OPTION, option),
  ioctlOp(U.IOMMU_VDEVICE_ALLOC, vdeviceAlloc),
  ioctlOp(U.IOMMU_VEVENTQ_ALLOC, veventqAlloc),
  ioctlOp(U.IOMMU_VFIO_IOAS, vfioIoas),
  ioctlOp(U.IOMMU_VIOMMU_ALLOC, viommuAlloc),
]);
for (const op of U.IOMMUFD_IOCTL_OPS.values()) if (!IOCTL_OPS.has(op.request)) throw new Error(`iommufd: no handler for ${op.name}`);

/** `iommufd_fops_open`: a new context of `iommufd` for the opener. */
export function iommufdFopsOpen(iommufd: IommufdSubsystem, _task: Task, flags: number): IommufdFile {
  const ictx = new IommufdFile(iommufd, flags);
  iommufd.ctxs.add(ictx);
  return ictx;
}
