export * from './errno.js';
export * from './iommufd.js';
export * from './vfio.js';
export * from './ioctl.js';
export * from './mman.js';
export { struct, union, offsetofend, type StructLayout, type Field, type FieldType, type ScalarType, type UnionMember } from './struct.js';
export * from './liveupdate.js';
export * from './stat.js';
