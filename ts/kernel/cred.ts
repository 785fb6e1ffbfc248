// struct cred: who is asking. Permission checks on inodes, device nodes and sysfs attributes
// all read the same three things (uid, gid, capabilities).

/** The capabilities the simulator checks; uid 0 has all of them unless told otherwise. */
export const ALL_CAPABILITIES: readonly string[] = ['CAP_SYS_ADMIN', 'CAP_SYS_RESOURCE', 'CAP_IPC_LOCK', 'CAP_DAC_OVERRIDE', 'CAP_SYS_RAWIO', 'CAP_SYS_BOOT'];

/** `current_cred()`. */
export interface Cred {
  readonly uid: number;
  readonly gid: number;
  /** `capable(cap)`. */
  capable(cap: string): boolean;
}

/**
 * `generic_permission` on an object of `mode` owned by `uid:gid`: whether `cred` gets every bit
 * of `want` (4 read, 2 write, 1 exec) from the owner, group or other triplet, or overrides it
 * with CAP_DAC_OVERRIDE.
 */
export function permitted(cred: Cred, mode: number, uid: number, gid: number, want: number): boolean {
  const bits = cred.uid === uid ? (mode >> 6) & 7 : cred.gid === gid ? (mode >> 3) & 7 : mode & 7;
  return (bits & want) === want || cred.capable('CAP_DAC_OVERRIDE');
}
