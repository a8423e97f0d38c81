// A directory this process cannot write to, for the tests of a token store that cannot be
// written. A user's own folder with mode 0500 does it, except for root, whom no mode stops:
// root gets /sys (sysfs refuses new files to everyone). Each is probed before it is used.
import { chmodSync, closeSync, mkdirSync, openSync, rmSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from './temp-dir.js';

/** Whether creating a file in `dir` is refused for want of permission. */
function refusesFiles(dir: string): boolean {
  const probe = path.join(dir, `.keap-proxy-probe-${process.pid}`);
  try {
    closeSync(openSync(probe, 'wx'));
    rmSync(probe, { force: true });
    return false;
  } catch (err) {
    return ['EACCES', 'EPERM', 'EROFS'].includes((err as NodeJS.ErrnoException).code ?? '');
  }
}

/** An existing directory this process may not create files in; undefined where none can be had. */
function candidate(): string | undefined {
  if (process.platform === 'win32') return undefined;
  if (process.getuid?.() !== 0) {
    const dir = path.join(tempDir(), 'read-only');
    mkdirSync(dir);
    chmodSync(dir, 0o500);
    return refusesFiles(dir) ? dir : undefined;
  }
  return refusesFiles('/sys') ? '/sys' : undefined;
}

export function unwritableDirAvailable(): boolean {
  return candidate() !== undefined;
}

export function unwritableDir(): string {
  const dir = candidate();
  if (dir === undefined) throw new Error('no unwritable directory can be had here');
  return dir;
}
