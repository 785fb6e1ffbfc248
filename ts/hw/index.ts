export * from './memory.js';
export * from './iommu.js';
export * from './vtd-regs.js';
export * from './pci.js';
export * from './traffic.js';
