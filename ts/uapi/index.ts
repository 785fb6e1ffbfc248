export * from './errno.js';
export * from './iommufd.js';
export * from './vfio.js';
export * from './ioctl.js';
export * from './mman.js';
export { struct, offsetofend, type StructLayout, type Field, type FieldType } from './struct.js';
export * from './stat.js';
