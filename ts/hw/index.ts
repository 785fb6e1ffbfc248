export * from './memory.js';
export * from './iommu.js';
export * from './vtd-regs.js';
export * from './pci.js';
export * from './traffic.js';
export * from './error-codes.js';
export { CACHE_ENTRIES_MAX, FAULT_RECORDS_MAX, IOTLB_WAYS_MAX, ORDER_MAX, READ_MAX } from '../native-kinds.js';
