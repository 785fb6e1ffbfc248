export { Kernel, LINUX_REBOOT_CMD_KEXEC, type KernelGeneration, type KexecImage } from './kernel.js';
export { Process, type SpawnOptions, type IoctlArg } from './process.js';
export { linuxInitcalls, type LinuxKernel, type Subsystems } from './initcalls.js';
