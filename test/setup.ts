// Runs around every test file: what the tests made on disk goes with them.
import { afterAll } from 'vitest';
import { removeTempDirs } from './harness.js';

afterAll(() => {
  removeTempDirs();
});
