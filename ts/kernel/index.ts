export { Kernel, LINUX_REBOOT_CMD_KEXEC, type KernelGeneration, type KexecImage } from './kernel.js';
export { Process, type SpawnOptions, type IoctlArg } from './process.js';
export { linuxInitcalls, type LinuxKernel, type Subsystems } from './initcalls.js';
export { CostModel, DEFAULT_COSTS, LUO_PHASES, PHASE_COSTS, WORK_FIELDS, COST_MAX_NS, checkCostConstants, type CostConstants, type CostTerm, type PhaseWork } from './phase-cost.js';
