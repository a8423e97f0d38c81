import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Tests bind real loopback ports and some measure pacing; two forks match the 2-core machines.
    pool: 'forks',
    maxWorkers: 2,
  },
});
