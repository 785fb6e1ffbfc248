export * from './errno.js';
export * from './iommufd.js';
export * from './vfio.js';
export * from './ioctl.js';
export * from './mman.js';
export {
  struct,
  union,
  offsetofend,
  readStruct,
  writeStruct,
  type StructLayout,
  type StructMember,
  type Field,
  type FieldSpec,
  type FieldType,
  type FieldValue,
  type ScalarType,
  type UnionMember,
  type UserPointee,
  type UserPointerArg,
  type IovaRangeArg,
  type StructFieldName,
  type StructOutName,
  type StructIovaRangesName,
  type StructIn,
  type StructOut,
  type StructFields,
} from './struct.js';
export * from './liveupdate.js';
export * from './stat.js';
