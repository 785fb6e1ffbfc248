// include/uapi/linux/liveupdate.h: the Live Update Orchestrator's /dev/liveupdate and session
// ioctls (Linux 7.3), implemented by ts/kernel/liveupdate/ when the host boots with kho=on liveupdate=on.
import { _IO_struct } from './iommufd.js';
import type { IoctlRequest } from './ioc.js';
import { offsetofend, struct } from './struct.js';

/** `LIVEUPDATE_IOCTL_TYPE`. */
export const LIVEUPDATE_IOCTL_TYPE = 0xba;
/** `LIVEUPDATE_SESSION_NAME_LENGTH`: the name with its terminating NUL. */
export const LIVEUPDATE_SESSION_NAME_LENGTH = 64;

/** `/dev/liveupdate` commands. */
export const LIVEUPDATE_CMD_BASE = 0x00;
export const LIVEUPDATE_CMD_CREATE_SESSION = LIVEUPDATE_CMD_BASE;
export const LIVEUPDATE_CMD_RETRIEVE_SESSION = 0x01;
/** Session fd commands. */
export const LIVEUPDATE_CMD_SESSION_BASE = 0x40;
export const LIVEUPDATE_CMD_SESSION_PRESERVE_FD = LIVEUPDATE_CMD_SESSION_BASE;
export const LIVEUPDATE_CMD_SESSION_RETRIEVE_FD = 0x41;
export const LIVEUPDATE_CMD_SESSION_FINISH = 0x42;
export const LIVEUPDATE_CMD_SESSION_GET_NAME = 0x43;

export const LIVEUPDATE_IOCTL_CREATE_SESSION: IoctlRequest<typeof liveupdate_ioctl_create_session> = _IO_struct(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION);
export const LIVEUPDATE_IOCTL_RETRIEVE_SESSION: IoctlRequest<typeof liveupdate_ioctl_retrieve_session> = _IO_struct(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_RETRIEVE_SESSION);
export const LIVEUPDATE_SESSION_PRESERVE_FD: IoctlRequest<typeof liveupdate_session_preserve_fd> = _IO_struct(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD);
export const LIVEUPDATE_SESSION_RETRIEVE_FD: IoctlRequest<typeof liveupdate_session_retrieve_fd> = _IO_struct(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD);
export const LIVEUPDATE_SESSION_FINISH: IoctlRequest<typeof liveupdate_session_finish> = _IO_struct(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_FINISH);
export const LIVEUPDATE_SESSION_GET_NAME: IoctlRequest<typeof liveupdate_session_get_name> = _IO_struct(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_GET_NAME);

const NAME = `u8[${LIVEUPDATE_SESSION_NAME_LENGTH}]` as const;

export const liveupdate_ioctl_create_session = struct('liveupdate_ioctl_create_session', [
  ['size', 'u32'],
  ['fd>', 's32'],
  ['name', NAME],
]);
export const liveupdate_ioctl_retrieve_session = struct('liveupdate_ioctl_retrieve_session', [
  ['size', 'u32'],
  ['fd>', 's32'],
  ['name', NAME],
]);
export const liveupdate_session_preserve_fd = struct('liveupdate_session_preserve_fd', [
  ['size', 'u32'],
  ['fd', 's32'],
  ['token', 'u64'],
]);
export const liveupdate_session_retrieve_fd = struct('liveupdate_session_retrieve_fd', [
  ['size', 'u32'],
  ['fd>', 's32'],
  ['token', 'u64'],
]);
export const liveupdate_session_finish = struct('liveupdate_session_finish', [
  ['size', 'u32'],
  ['reserved', 'u32'],
]);
export const liveupdate_session_get_name = struct('liveupdate_session_get_name', [
  ['size', 'u32'],
  ['reserved', 'u32'],
  ['name>', NAME],
]);

/** `min_size` of each command: `offsetofend` of its last field the kernel requires. */
export const LIVEUPDATE_CREATE_SESSION_MINSZ = offsetofend(liveupdate_ioctl_create_session, 'name');
export const LIVEUPDATE_RETRIEVE_SESSION_MINSZ = offsetofend(liveupdate_ioctl_retrieve_session, 'name');
export const LIVEUPDATE_PRESERVE_FD_MINSZ = offsetofend(liveupdate_session_preserve_fd, 'token');
export const LIVEUPDATE_RETRIEVE_FD_MINSZ = offsetofend(liveupdate_session_retrieve_fd, 'token');
export const LIVEUPDATE_FINISH_MINSZ = offsetofend(liveupdate_session_finish, 'reserved');
export const LIVEUPDATE_GET_NAME_MINSZ = offsetofend(liveupdate_session_get_name, 'name');
