import { native } from './native.js';

export * from './hw/index.js';
export * from './fdt/index.js';
export * from './uapi/index.js';
export * from './kernel/index.js';

/** Version of the native core (Cargo workspace version); matches package.json. */
export const version: string = native.nativeVersion();
