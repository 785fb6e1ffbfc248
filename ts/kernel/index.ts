export { Kernel, LINUX_REBOOT_CMD_KEXEC, type KexecImage } from './kernel.js';
export { Process, type SpawnOptions, type IoctlArg } from './process.js';
