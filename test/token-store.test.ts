// FileTokenStore on a real filesystem: locks that are symlinks or have no readable age.
import { describe, it, expect } from 'vitest';
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FileTokenStore, TokenStoreError } from '../src/token-store.js';
import { tempDir } from './harness.js';

/** A store in a fresh 0700 directory, and that directory. */
function newStore(options: ConstructorParameters<typeof FileTokenStore>[1] = {}): { store: FileTokenStore; dir: string; file: string } {
  const dir = path.join(tempDir(), 'store');
  mkdirSync(dir, { mode: 0o700 });
  const file = path.join(dir, 'tokens.json');
  return { store: new FileTokenStore(file, options), dir, file };
}

// A staleLockMs far below lockTimeoutMs: a lock that never turns stale fails the test by
// timing out, however slow the machine; none of these tests measures how fast it went.
const QUICK_STALE = { staleLockMs: 50, lockTimeoutMs: 15_000 };

describe('the lock', () => {
  it('a dangling symlink at the lock path turns stale by its own age; its target is never created', async () => {
    const { store, file } = newStore(QUICK_STALE);
    const target = path.join(path.dirname(file), 'target-must-not-exist');
    symlinkSync(target, `${file}.lock`);
    let lockWhileHeld: ReturnType<typeof lstatSync> | undefined;
    expect(await store.withLock(async () => ((lockWhileHeld = lstatSync(`${file}.lock`)), 'ran'))).toBe('ran');
    expect(lockWhileHeld?.isFile()).toBe(true);
    expect(existsSync(target)).toBe(false);
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it('a symlink at the lock path to a real file is removed, never followed: the file keeps its content', async () => {
    const { store, file } = newStore(QUICK_STALE);
    const target = path.join(tempDir(), 'precious');
    writeFileSync(target, 'keep me\n');
    symlinkSync(target, `${file}.lock`);
    await store.withLock(async () => {
      expect(lstatSync(`${file}.lock`).isSymbolicLink()).toBe(false);
      expect(readFileSync(target, 'utf8')).toBe('keep me\n');
    });
    expect(readFileSync(target, 'utf8')).toBe('keep me\n');
  });

  it('a lock whose age cannot be determined (mtime an hour ahead) is stale once watched for staleLockMs', async () => {
    const { store, file } = newStore(QUICK_STALE);
    writeFileSync(`${file}.lock`, '999999 from a host whose clock runs ahead\n');
    const ahead = new Date(Date.now() + 3_600_000);
    utimesSync(`${file}.lock`, ahead, ahead);
    expect(await store.withLock(async () => 'ran')).toBe('ran');
  });

  it.each([
    ['a fresh lock', 0],
    ['a lock with an mtime ahead of our clock', 3_600_000],
  ])('%s held by someone else is waited for, not stolen, and the wait ends in a clear error', async (_title, aheadMs) => {
    const { store, file } = newStore({ staleLockMs: 600_000, lockTimeoutMs: 100 });
    writeFileSync(`${file}.lock`, '999999 live holder\n');
    const when = new Date(Date.now() + aheadMs);
    utimesSync(`${file}.lock`, when, when);
    const err = await store.withLock(async () => 'ran').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenStoreError);
    expect((err as Error).message).toMatch(/token store lock .*tokens\.json\.lock is held by another process; if none runs, remove the file/);
    expect(readFileSync(`${file}.lock`, 'utf8')).toBe('999999 live holder\n');
  });
});
