import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests import the package by name; run them against the TS sources rather than dist/.
    alias: [{ find: /^iommu-liveupdate$/, replacement: fileURLToPath(new URL('./ts/index.ts', import.meta.url)) }],
  },
  test: {
    include: ['__test__/**/*.test.ts'],
    pool: 'forks', // native addons are loaded per process; worker_threads would share/reload them unsafely
    testTimeout: 60_000,
  },
});
