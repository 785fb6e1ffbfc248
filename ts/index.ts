import { native } from './native.js';

export * from './hw/index.js';
export * from './fdt/index.js';
export * from './uapi/index.js';
export * from './kernel/index.js';
export * from './host.js';
export * from './vmm.js';

/** Version of the native core (Cargo workspace version); matches package.json. */
export const version: string = native.nativeVersion();

/**
 * When the native memory of collected objects (memories, units, page tables) is freed: `'gc'` by
 * the garbage collector itself, even in a loop that never yields; `'event-loop'` once the event
 * loop turns after the collection. `'gc'` on the Node versions that allow it (20.18.3+, 22.14+,
 * 23.6+, 24+) unless `IOMMU_LIVEUPDATE_SYNC_FINALIZERS=0`; see the README.
 */
export const nativeFinalizers: 'gc' | 'event-loop' = native.nativeModuleApiVersion() === 0x7fff_ffff ? 'gc' : 'event-loop';
