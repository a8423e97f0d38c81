// Where the grant lives between refreshes and restarts. Keap kills the previous refresh
// token the moment it issues a new one, so a new grant must be durable before it is used.
import { promises as fs, constants as fsConstants, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { isGrant, type Grant } from './grant.js';

export interface TokenStore {
  /** The stored grant, or undefined when nothing is stored yet. */
  load(): Promise<Grant | undefined>;
  /** Durably replaces the stored grant; resolves only once it would survive a crash. */
  save(grant: Grant): Promise<void>;
  /**
   * Runs `fn` while holding the store's lock, so that of all processes sharing this store
   * only one refreshes at a time (Keap kills the old refresh token on every refresh: two
   * refreshes with the same token lose the grant). Whoever waited re-reads the store.
   */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Proves now that a grant could be saved here, before anything depends on it (a start, a
   * login): the lock is taken and released (a file store makes its directory and a lock file
   * in it; Redis must answer). Throws a TokenStoreError that names the place and what to do.
   */
  checkWritable(): Promise<void>;
  /** Human-readable location, for logs and `token status`. */
  readonly location: string;
}

/** A warning that cannot be delivered must not fail the save of a grant Keap already rotated. */
export function deliverSafely<W>(onWarning: ((warning: W) => void) | undefined): (warning: W) => void {
  return (warning) => {
    try {
      onWarning?.(warning);
    } catch {
      // Nothing better to do with it.
    }
  };
}

export class TokenStoreError extends Error {
  constructor(
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'TokenStoreError';
  }
}

/** Something an operator should hear about: a log line, a line on the terminal. */
export type TokenStoreWarning = TokenStorePermissionsWarning | TokenStoreLockLostWarning;

/** The store, or its directory, can be opened by other users: said once, with what was done. */
export interface TokenStorePermissionsWarning {
  event: 'token_store_permissions';
  path: string;
  /** The mode found, e.g. "0755". */
  mode: string;
  action: 'tightened' | 'left_as_is';
  /** For a person: what was found, what was done, what to do. */
  message: string;
}

/** Another process took over a lock this one held (it judged it abandoned): both may have refreshed. */
export interface TokenStoreLockLostWarning {
  event: 'token_store_lock_lost';
  /** The lock file. */
  path: string;
  /** How long this process had held the lock when it found it taken, when it was ours. */
  heldMs?: number;
  /** For a person: what happened and what to do. */
  message: string;
}

/** One JSON file, replaced atomically: temp file, fsync, rename, fsync of the directory. */
export interface FileTokenStoreOptions {
  /** A lock older than this is taken to belong to a process that died holding it. */
  staleLockMs?: number;
  /** How long to wait for another process's lock before giving up. */
  lockTimeoutMs?: number;
  /** Told when the store's file or directory is open to other users, or its lock was taken over while held (a log line, a line on the terminal). */
  onWarning?: (warning: TokenStoreWarning) => void;
}

/** Permission bits mean nothing to check on Windows. */
const CHECK_MODES = process.platform !== 'win32';

export class FileTokenStore implements TokenStore {
  readonly location: string;
  private readonly dir: string;
  private readonly lockFile: string;
  /** Held by whoever is taking a stale lock over, for the few system calls that takes. */
  private readonly takeoverFile: string;
  private readonly staleLockMs: number;
  private readonly lockTimeoutMs: number;
  private readonly warn: (warning: TokenStoreWarning) => void;
  /** The directory is made and checked once per store, on first use; a failure is retried next time. */
  private directory: Promise<void> | undefined;
  /** A loose store file is reported once, not on every re-read, until it is seen tight again. */
  private looseFileReported = false;

  constructor(
    private readonly file: string,
    options: FileTokenStoreOptions = {},
  ) {
    this.location = file;
    this.dir = path.dirname(file);
    this.lockFile = `${file}.lock`;
    this.takeoverFile = `${file}.lock.takeover`;
    // Longer than a token call may take (its timeout is 15 s), so a live holder is never robbed.
    this.staleLockMs = options.staleLockMs ?? 30_000;
    this.lockTimeoutMs = options.lockTimeoutMs ?? 40_000;
    this.warn = deliverSafely(options.onWarning);
  }

  // The lock. Keap kills a refresh token the moment it is used, so of all processes sharing
  // this store at most one may hold the lock at any time. It is a file created with O_EXCL
  // (atomic on a local filesystem) that holds a random owner token. The hard part is removing
  // a lock file, since no filesystem offers "delete this path if it is still that file":
  //  - Every removal looks first and leaves a file that is not the expected one untouched.
  //    It then renames the path to a unique side name (atomic) and checks the file it moved:
  //    if the path was replaced between the look and the rename, the file is put back with
  //    link(), which fails with EEXIST rather than replace a lock created in the meantime.
  //  - Release removes the lock only if it still holds our owner token; if another process
  //    took it over meanwhile, its lock is left alone and onWarning is told.
  //  - A stale lock (its holder died) is taken over by removing exactly the file judged stale:
  //    same dev, ino and mtime. Takers hold a second O_EXCL file, <lock>.takeover, while they
  //    do it, so two waiters that judged one lock stale act one after the other and the second
  //    finds a file other than the one it judged. Without that, the second would move the
  //    first one's new lock aside, and a third process could create a lock in the moment
  //    before it is put back: two holders.
  //  - A holder touches its lock's mtime while it holds it, so however long a refresh takes,
  //    only a dead holder's lock grows stale.
  // What remains: a holder that stalls for longer than staleLockMs (a frozen VM) is taken for
  // dead and its lock taken over; its release then warns (token_store_lock_lost).

  async checkWritable(): Promise<void> {
    await this.withLock(() => Promise.resolve());
  }

  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const held = await this.acquire();
    try {
      return await fn();
    } finally {
      await this.release(held);
    }
  }

  private async acquire(): Promise<HeldLock> {
    await this.prepareDirectory();
    const deadline = Date.now() + this.lockTimeoutMs;
    const watches = new Map<string, AgelessWatch>();
    for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
      const held = await this.create(this.lockFile, true);
      if (held !== undefined) return held;
      const verdict = await this.judge(this.lockFile, watches);
      // Released between our open and this look: try again at once.
      if (verdict.kind === 'gone') continue;
      if (verdict.kind === 'stale' && (await this.takeOver(verdict.identity, watches))) continue;
      if (Date.now() > deadline)
        throw new TokenStoreError(
          `token store lock ${this.lockFile} is held by another process; if none runs, remove the file`,
        );
      await new Promise((r) => setTimeout(r, wait + Math.random() * wait));
    }
  }

  /** O_EXCL, so exactly one of any number of callers creates `file`; undefined when it exists. */
  private async create(file: string, heartbeat: boolean): Promise<HeldLock | undefined> {
    let handle: FileHandle;
    try {
      // O_CREAT | O_EXCL fails on a symlink, dangling or not: a link at the lock path is never written through.
      handle = await fs.open(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    } catch (err) {
      if (codeOf(err) === 'EEXIST') return undefined;
      if (NOT_WRITABLE.has(codeOf(err)))
        throw new TokenStoreError(
          `token store directory ${this.dir} cannot be written by this process (${codeOf(err)}: the lock ${file} cannot be created), so no refreshed grant could be saved; make it writable by user ${userOf()} (e.g. \`chown ${userOf()} ${this.dir} && chmod 700 ${this.dir}\`, or a volume owned by that user) or point TOKEN_STORE into a writable directory`,
          err,
        );
      throw new TokenStoreError(
        `token store lock ${file} cannot be created (${codeOf(err)}); check the permissions of ${this.dir}`,
        err,
      );
    }
    const content = `${process.pid} ${new Date().toISOString()} ${randomBytes(16).toString('hex')}\n`;
    try {
      await handle.writeFile(content);
    } catch (err) {
      // An empty lock would block everyone for staleLockMs: remove it, it is ours (same file).
      const st = await handle.stat().catch(() => undefined);
      await handle.close().catch(() => undefined);
      if (st !== undefined)
        await this.removeIf(file, (f) => f.identity.dev === st.dev && f.identity.ino === st.ino).catch(() => undefined);
      throw new TokenStoreError(
        `token store lock ${file} cannot be written (${codeOf(err)}); check free space in ${this.dir}`,
        err,
      );
    }
    const held: HeldLock = { file, content, since: Date.now(), handle: undefined, heartbeat: undefined };
    if (!heartbeat) {
      await handle.close().catch(() => undefined);
      return held;
    }
    // Through our own descriptor: only our file is touched, even once it has been taken from us.
    held.handle = handle;
    held.heartbeat = setInterval(
      () => {
        const now = new Date();
        handle.utimes(now, now).catch(() => undefined);
      },
      Math.min(2 ** 31 - 1, Math.max(1, Math.floor(this.staleLockMs / 3))),
    );
    held.heartbeat.unref();
    return held;
  }

  /** Removes our lock if it is still ours; if another process took it over, leaves its lock in place and says so. */
  private async release(held: HeldLock): Promise<void> {
    clearInterval(held.heartbeat);
    await held.handle?.close().catch(() => undefined);
    const outcome = await this.removeIf(held.file, (f) => f.content === held.content);
    if (outcome === 'removed') return;
    const heldMs = Date.now() - held.since;
    this.warn({
      event: 'token_store_lock_lost',
      path: held.file,
      heldMs,
      message: `token store lock ${held.file} was taken over by another process while this one held it for ${heldMs} ms (a lock untouched for ${this.staleLockMs} ms is taken to be abandoned); ${outcome === 'gone' ? 'it is gone' : "the other process's lock was left in place"}. Both may have refreshed: if the proxy reports reauthorization_required, authorize again, and look for what stalled this process`,
    });
  }

  /**
   * A lock that is there, fresh or stale. Its age is its mtime's (lstat: the lock itself; stat
   * would follow a symlink, and a dangling one would have no age, never turn stale and block
   * every refresh). A lock whose mtime is ahead of our clock (another host's clock, a copied
   * file) is stale once watched unchanged for staleLockMs.
   */
  private async judge(file: string, watches: Map<string, AgelessWatch>): Promise<LockVerdict> {
    const now = Date.now();
    let st: Stats;
    try {
      st = await fs.lstat(file);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return { kind: 'gone' };
      throw new TokenStoreError(
        `token store lock ${file} cannot be examined (${codeOf(err)}); check the permissions of ${this.dir}`,
        err,
      );
    }
    if (st.isDirectory()) throw new TokenStoreError(`token store lock ${file} is a directory; remove it by hand`);
    const identity = identityOf(st);
    const age = now - st.mtimeMs;
    let stale: boolean;
    if (age >= 0) {
      watches.delete(file);
      stale = age > this.staleLockMs;
    } else {
      const key = `${st.dev}:${st.ino}:${st.mtimeMs}`;
      let watch = watches.get(file);
      if (watch?.key !== key) watches.set(file, (watch = { key, since: now }));
      stale = now - watch.since > this.staleLockMs;
    }
    return stale ? { kind: 'stale', identity } : { kind: 'held' };
  }

  /**
   * Removes the lock judged stale if it is still that very file. True when the lock path is
   * now free (or was freed by someone else): try to create it at once. False: wait.
   */
  private async takeOver(stale: FileIdentity, watches: Map<string, AgelessWatch>): Promise<boolean> {
    const mutex = await this.create(this.takeoverFile, false);
    if (mutex === undefined) {
      // Another process is taking a lock over. One that died doing it leaves a mutex that turns stale in turn.
      const verdict = await this.judge(this.takeoverFile, watches);
      if (verdict.kind === 'gone') return true;
      if (verdict.kind === 'held') return false;
      return (await this.removeIf(this.takeoverFile, (f) => sameVersion(f.identity, verdict.identity))) !== 'other';
    }
    try {
      return (await this.removeIf(this.lockFile, (f) => sameVersion(f.identity, stale))) !== 'other';
    } finally {
      // Ours unless we stalled for staleLockMs in between; then another taker's is left alone.
      await this.removeIf(this.takeoverFile, (f) => f.content === mutex.content);
    }
  }

  /**
   * Removes `file` only if `matches` says it is the expected file: looks, renames it to a
   * unique side name, checks what was moved; a file that is not the expected one is never
   * removed, and one that replaced it between the look and the rename is put back.
   */
  private async removeIf(
    file: string,
    matches: (found: LockFileView) => boolean,
  ): Promise<'removed' | 'gone' | 'other'> {
    const seen = await inspect(file).catch((err: unknown) => {
      throw new TokenStoreError(
        `token store lock ${file} cannot be examined (${codeOf(err)}); check the permissions of ${this.dir}`,
        err,
      );
    });
    if (seen === undefined) return 'gone';
    if (!matches(seen)) return 'other';
    // Named like the store's temp files: a directory holding only store files still does.
    const side = path.join(this.dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      // rename moves a symlink itself, never what it points to.
      await fs.rename(file, side);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return 'gone';
      throw new TokenStoreError(
        `token store lock ${file} cannot be removed (${codeOf(err)}); check the permissions of ${this.dir}, or remove it by hand`,
        err,
      );
    }
    const moved = await inspect(side).catch(() => undefined);
    if (moved !== undefined && matches(moved)) {
      // Should the unlink fail, the side file is left behind: the lock path is free all the same.
      await fs.unlink(side).catch(() => undefined);
      return 'removed';
    }
    // Replaced between the look and the rename: put it back. link() fails with EEXIST rather
    // than replace a lock created since; rename() is the fallback only where hard links fail otherwise.
    try {
      await fs.link(side, file);
      await fs.unlink(side).catch(() => undefined);
    } catch (err) {
      if (codeOf(err) === 'EEXIST') {
        await fs.unlink(side).catch(() => undefined);
        this.warn({
          event: 'token_store_lock_lost',
          path: file,
          message: `token store lock ${file} changed hands while it was being removed and could not be put back: two processes may hold it; if the proxy reports reauthorization_required, authorize again`,
        });
      } else {
        await fs.rename(side, file).catch(() => undefined);
      }
    }
    return 'other';
  }

  async load(): Promise<Grant | undefined> {
    let handle: FileHandle;
    try {
      handle = await fs.open(this.file, fsConstants.O_RDONLY);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return undefined;
      throw new TokenStoreError(`token store ${this.file} cannot be read (${codeOf(err)}); check its permissions`, err);
    }
    let text: string;
    try {
      // The mode of the file actually read, not of whatever the path names a moment later.
      this.checkFileMode(await handle.stat());
      text = await handle.readFile('utf8');
    } catch (err) {
      throw new TokenStoreError(`token store ${this.file} cannot be read (${codeOf(err)}); check its permissions`, err);
    } finally {
      await handle.close();
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new TokenStoreError(
        `token store ${this.file} is not valid JSON; restore it or remove it and re-authorize`,
        err,
      );
    }
    if (!isGrant(parsed))
      throw new TokenStoreError(
        `token store ${this.file} does not hold a grant; restore it or remove it and re-authorize`,
      );
    return parsed;
  }

  async save(grant: Grant): Promise<void> {
    let text: string;
    try {
      text = JSON.stringify(grant, null, 2) + '\n';
    } catch (err) {
      // The message says what failed, never what the grant holds.
      throw new TokenStoreError(
        `token store ${this.file} cannot be written: the grant cannot be serialized (${codeOf(err)})`,
        err,
      );
    }
    await this.prepareDirectory();
    const tmp = path.join(
      this.dir,
      `.${path.basename(this.file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
    );
    let created = false;
    let handle: FileHandle | undefined;
    try {
      handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
      created = true;
      await handle.writeFile(text);
      await handle.sync();
      const closing = handle;
      handle = undefined;
      await closing.close();
      await fs.rename(tmp, this.file);
    } catch (err) {
      // A full disk or a quota must not also leave half-written copies of the grant behind.
      await handle?.close().catch(() => undefined);
      if (created) await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw new TokenStoreError(
        `token store ${this.file} cannot be written (${codeOf(err)}); check free space and permissions in ${this.dir}`,
        err,
      );
    }
    this.looseFileReported = false;
    // The rename is durable only once the directory entry is.
    try {
      const dirHandle = await fs.open(this.dir, fsConstants.O_RDONLY);
      try {
        await dirHandle.sync();
      } finally {
        await dirHandle.close();
      }
    } catch (err) {
      throw new TokenStoreError(
        `token store ${this.file} was written but its directory cannot be synced (${codeOf(err)}); check the filesystem of ${this.dir}`,
        err,
      );
    }
  }

  private prepareDirectory(): Promise<void> {
    this.directory ??= this.makeDirectory().catch((err: unknown) => {
      this.directory = undefined;
      throw err;
    });
    return this.directory;
  }

  /**
   * Creates the directory 0700, or tightens an existing one that other users could open:
   * the grant's file is 0600, but its temp files and lock live here too, and a directory
   * others may write to lets them replace the grant. Only a directory that is ours and
   * holds nothing but the store's files is changed; a shared one (a TOKEN_STORE in /tmp
   * or in the working directory) is reported, never locked down under other programs.
   */
  private async makeDirectory(): Promise<void> {
    try {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new TokenStoreError(
        `token store directory ${this.dir} cannot be created (${codeOf(err)}); create it with mode 0700 or point TOKEN_STORE elsewhere`,
        err,
      );
    }
    if (!CHECK_MODES) return;
    const st = await fs.stat(this.dir);
    if ((st.mode & 0o077) === 0) return;
    const mode = octal(st.mode);
    const found = `token store directory ${this.dir} has mode ${mode}: other users can open it`;
    const todo = `run \`chmod 700 ${this.dir}\`, or point TOKEN_STORE into a directory of its own`;
    const leave = (why: string): void =>
      this.warn({
        event: 'token_store_permissions',
        path: this.dir,
        mode,
        action: 'left_as_is',
        message: `${found}; ${why}, so it is left as is: ${todo}`,
      });
    if (st.uid !== process.getuid?.()) return leave(`it belongs to another user (uid ${st.uid})`);
    if ((st.mode & 0o1000) !== 0) return leave('it is a shared directory (sticky bit, like /tmp)');
    if (!(await this.holdsOnlyStoreFiles())) return leave('it holds other files too');
    try {
      await fs.chmod(this.dir, 0o700);
    } catch (err) {
      return leave(`changing it failed (${codeOf(err)})`);
    }
    this.warn({
      event: 'token_store_permissions',
      path: this.dir,
      mode,
      action: 'tightened',
      message: `${found}; changed to 0700`,
    });
  }

  private async holdsOnlyStoreFiles(): Promise<boolean> {
    const base = path.basename(this.file);
    const ours = (name: string): boolean =>
      name === base ||
      name === `${base}.lock` ||
      name === `${base}.lock.takeover` ||
      name === `${base}.oauth-state` ||
      (name.startsWith(`.${base}.`) && name.endsWith('.tmp'));
    const names = await fs.readdir(this.dir).catch(() => undefined);
    return names !== undefined && names.every(ours);
  }

  private checkFileMode(st: Stats): void {
    if (!CHECK_MODES) return;
    if ((st.mode & 0o077) === 0) {
      this.looseFileReported = false;
      return;
    }
    if (this.looseFileReported) return;
    this.looseFileReported = true;
    const mode = octal(st.mode);
    this.warn({
      event: 'token_store_permissions',
      path: this.file,
      mode,
      action: 'left_as_is',
      message: `token store ${this.file} has mode ${mode}: other users may read the grant; it is rewritten with mode 0600 at the next refresh, or run \`chmod 600 ${this.file}\` now`,
    });
  }
}

/** lstat's dev and ino name one file; with its mtime, one version of it (a lock's heartbeat changes it). */
interface FileIdentity {
  dev: number;
  ino: number;
  mtimeMs: number;
}

/** A lock file as found: what it is, and its content when it is a regular file. */
interface LockFileView {
  identity: FileIdentity;
  content: string | undefined;
}

/** A lock file we created: the owner token is in its content. */
interface HeldLock {
  file: string;
  content: string;
  since: number;
  handle: FileHandle | undefined;
  heartbeat: NodeJS.Timeout | undefined;
}

type LockVerdict = { kind: 'gone' } | { kind: 'held' } | { kind: 'stale'; identity: FileIdentity };

/** A lock whose age cannot be read, and since when we have watched it unchanged. */
interface AgelessWatch {
  key: string;
  since: number;
}

function identityOf(st: Stats): FileIdentity {
  return { dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs };
}

function sameVersion(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.mtimeMs === b.mtimeMs;
}

/** What is at `file` (undefined when nothing), read without following a symlink or blocking on a FIFO. */
async function inspect(file: string): Promise<LockFileView | undefined> {
  let st: Stats;
  try {
    st = await fs.lstat(file);
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return undefined;
    throw err;
  }
  const identity = identityOf(st);
  if (!st.isFile()) return { identity, content: undefined };
  let handle: FileHandle;
  try {
    handle = await fs.open(file, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0));
  } catch {
    return { identity, content: undefined };
  }
  try {
    const opened = await handle.stat();
    // Replaced between the lstat and the open: what was read would not be this file's.
    if (opened.dev !== st.dev || opened.ino !== st.ino) return { identity, content: undefined };
    const buf = Buffer.alloc(512);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    return { identity, content: buf.subarray(0, bytesRead).toString('utf8') };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The errors of a directory this process may not write to (read-only mounts included). */
const NOT_WRITABLE = new Set(['EACCES', 'EPERM', 'EROFS']);

/** This process's user, as a number where there is one (what `chown` and a volume's owner need). */
function userOf(): string {
  return String(process.getuid?.() ?? 'running keap-proxy');
}

/** An errno code such as ENOSPC, or the error's name; never its message, which may quote content. */
function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? (err instanceof Error ? err.name : 'error');
}

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}
