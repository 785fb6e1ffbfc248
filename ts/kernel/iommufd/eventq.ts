// Event queues (drivers/iommu/iommufd/eventq.c): IOMMUFD_OBJ_FAULT, the queue IO page faults of an
// HWPT are delivered to, with the fd user space reads faults from and writes responses to; and
// IOMMU_VEVENTQ_ALLOC, whose queues hang on a vIOMMU.
//
// On this unit no fault is ever delivered: a fault queue only receives faults of devices attached
// to an HWPT allocated with IOMMU_HWPT_FAULT_ID_VALID, and attaching a device to such an HWPT
// needs PRI, which the Intel driver enables in scalable mode only (intel_iommu_enable_iopf:
// ENODEV). So the queue stays empty: reads return nothing and every response names a cookie that
// was never handed out.
import { errno } from '../../uapi/errno.js';
import * as U from '../../uapi/iommufd.js';
import { O_RDWR } from '../../uapi/mman.js';
import { File, type Task } from '../file.js';
import { IommufdObject, type IommufdCtx, type Ucmd } from './private.js';
import { getViommu } from './viommu.js';

/** `struct iommufd_fault`. */
export class Fault extends IommufdObject {
  readonly type = 'FAULT';

  destroy(): void {
    // iommufd_fault_destroy answers the groups still queued or awaiting a response: never any here.
  }
}

/**
 * The anon-inode file of an event queue (`iommufd_eventq_init`): it holds a `users` reference
 * on its object and a reference on the context, so closing /dev/iommu while it is open keeps the
 * context, and IOMMU_DESTROY of the object is EBUSY until it is closed.
 */
class EventqFile extends File {
  constructor(
    readonly ictx: IommufdCtx,
    readonly eventq: IommufdObject,
    name: string,
  ) {
    super(O_RDWR, `anon_inode:${name}`);
    ictx.get();
    eventq.users++;
  }

  /** `iommufd_eventq_fops_release`. */
  protected release(): void {
    this.eventq.users--;
    this.ictx.put();
  }
}

/** The fd of a fault queue (`iommufd_fault_fops`). */
class FaultFile extends EventqFile {
  /** `iommufd_fault_fops_read`: whole `iommu_hwpt_pgfault` records; the queue is empty. */
  read(_task: Task, n: number): Uint8Array {
    if (n % U.iommu_hwpt_pgfault.size) errno('ESPIPE', `a read of ${n} bytes is not a whole number of fault records`);
    return new Uint8Array(0);
  }

  /** `iommufd_fault_fops_write`: whole `iommu_hwpt_page_response` records, answered in order. */
  write(_task: Task, data: Uint8Array): number {
    if (data.length % U.iommu_hwpt_page_response.size) errno('ESPIPE', `a write of ${data.length} bytes is not a whole number of responses`);
    if (data.length === 0) return 0;
    // The first response fails, so nothing was done: its error is the answer.
    const v = new DataView(data.buffer, data.byteOffset, data.length);
    const code = v.getUint32(4, true);
    if (code !== U.IOMMUFD_PAGE_RESP_SUCCESS && code !== U.IOMMUFD_PAGE_RESP_INVALID) errno('EINVAL', `unknown response code ${code}`);
    return errno('EINVAL', `no fault group awaits a response with cookie ${v.getUint32(0, true)}`);
  }
}

/** IOMMU_FAULT_QUEUE_ALLOC (`iommufd_fault_alloc`): a FAULT object and its fd. */
export function faultAlloc(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_fault_alloc>): void {
  const { cmd, task } = ucmd;
  if (cmd.flags) errno('EOPNOTSUPP', 'flags must be 0');
  const fault = new Fault();
  ictx.reserve(fault);
  const file = new FaultFile(ictx, fault, '[iommufd-pgfault]');
  // get_unused_fd_flags: the fd is told before it is installed, once the answer is written.
  cmd.out_fault_id = fault.id;
  cmd.out_fault_fd = task.unusedFd();
  try {
    ictx.respond(ucmd);
  } catch (e) {
    // iommufd_object_abort_and_destroy: the file goes first (__fput_sync), then the object.
    file.put();
    ictx.abort(fault);
    throw e;
  }
  task.installFd(file);
  ictx.finalize(fault);
}

/** `VEVENTQ_MAX_DEPTH`: an upper bound for veventq_depth that fits all existing hardware. */
const VEVENTQ_MAX_DEPTH = 1 << 19;

/**
 * IOMMU_VEVENTQ_ALLOC (`iommufd_veventq_alloc`): a vEVENTQ hangs on a vIOMMU, which this unit
 * cannot have, so after its own checks it ends at the vIOMMU lookup (ENOENT).
 */
export function veventqAlloc(ictx: IommufdCtx, { cmd }: Ucmd<typeof U.iommu_veventq_alloc>): void {
  if (cmd.flags || cmd.__reserved || cmd.type === U.IOMMU_VEVENTQ_TYPE_DEFAULT) errno('EOPNOTSUPP', 'flags, __reserved or type DEFAULT');
  const depth = cmd.veventq_depth;
  if (!depth || depth > VEVENTQ_MAX_DEPTH) errno('EINVAL', `veventq_depth ${depth} not in [1, ${VEVENTQ_MAX_DEPTH}]`);
  getViommu(ictx, cmd.viommu_id);
}
