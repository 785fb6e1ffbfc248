// What every iommufd object type and command handler shares (iommufd_private.h: struct
// iommufd_object, struct iommufd_ucmd), in a module of its own so that the object types the kernel
// keeps in files of their own (eventq.c, viommu.c) can be modules of their own without an import
// cycle through main.ts.
import type { StructLayout } from '../../uapi/struct.js';
import type { Uaccess } from '../file.js';
import type { Process } from '../process.js';

/** Object types of `enum iommufd_object_type` (ACCESS and SELFTEST do not exist here). */
export type ObjType = 'IOAS' | 'HWPT_PAGING' | 'HWPT_NESTED' | 'DEVICE' | 'FAULT' | 'VIOMMU' | 'VDEVICE' | 'VEVENTQ' | 'HW_QUEUE';

/** `struct iommufd_object`. */
export abstract class IommufdObject {
  id = 0;
  /** `obj->users`: 1 for the object itself plus one per holder. */
  users = 1;
  abstract readonly type: ObjType;
  /** The type's `destroy` op. */
  abstract destroy(): void;
}

/** The decoded command an op executes on, and how it writes back (`struct iommufd_ucmd`). */
export interface Ucmd {
  proc: Process;
  u: Uaccess;
  ubuffer: bigint;
  userSize: number;
  layout: StructLayout;
  cmd: Record<string, number | bigint>;
}

export const n32 = (v: number | bigint): number => Number(v);
export const n64 = (v: number | bigint): bigint => BigInt(v);
