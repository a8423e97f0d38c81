// Runs around every test file: what the tests made on disk goes with them, and no test
// leaves fake timers behind for the next (files share a fork: isolate is off).
import { afterAll, afterEach, vi } from 'vitest';
import { removeTempDirs } from './temp-dir.js';

afterEach(() => {
  vi.useRealTimers();
});

afterAll(() => {
  removeTempDirs();
});
