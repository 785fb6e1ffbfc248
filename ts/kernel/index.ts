export { Kernel } from './kernel.js';
export { Process, type SpawnOptions, type IoctlArg } from './process.js';
