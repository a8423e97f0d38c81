import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Tests bind real loopback ports; two forks match the 2-core machines.
    pool: 'forks',
    maxWorkers: 2,
    // Each fork runs its test files one after another in one module graph instead of
    // loading the proxy afresh for each file (a quarter of the suite's time). Every file
    // closes what it starts, and test/setup.ts puts the real timers back after each test.
    isolate: false,
  },
});
