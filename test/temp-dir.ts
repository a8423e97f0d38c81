// Temp folders for tests, removed after each test file (test/setup.ts). Kept apart from
// harness.ts so that the setup file run around every test file loads nothing else.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const made: string[] = [];

/** A fresh folder under the system's temp dir, removed after its test file (test/setup.ts). */
export function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'keap-proxy-test-'));
  made.push(dir);
  return dir;
}

/** Removes every folder tempDir made so far in this test file. */
export function removeTempDirs(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}
