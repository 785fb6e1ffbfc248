export * from './memory.js';
export * from './iommu.js';
export * from './vtd-regs.js';
