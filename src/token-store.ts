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
  /** Human-readable location, for logs and `token status`. */
  readonly location: string;
}

export class TokenStoreError extends Error {
  constructor(message: string, override readonly cause?: unknown) {
    super(message);
    this.name = 'TokenStoreError';
  }
}

/** The store, or its directory, can be opened by other users: said once, with what was done. */
export interface TokenStoreWarning {
  event: 'token_store_permissions';
  path: string;
  /** The mode found, e.g. "0755". */
  mode: string;
  action: 'tightened' | 'left_as_is';
  /** For a person: what was found, what was done, what to do. */
  message: string;
}

/** One JSON file, replaced atomically: temp file, fsync, rename, fsync of the directory. */
export interface FileTokenStoreOptions {
  /** A lock older than this is taken to belong to a process that died holding it. */
  staleLockMs?: number;
  /** How long to wait for another process's lock before giving up. */
  lockTimeoutMs?: number;
  /** Told when the store's file or directory is open to other users (a log line, a line on the terminal). */
  onWarning?: (warning: TokenStoreWarning) => void;
}

/** Permission bits mean nothing to check on Windows. */
const CHECK_MODES = process.platform !== 'win32';

export class FileTokenStore implements TokenStore {
  readonly location: string;
  private readonly dir: string;
  private readonly lockFile: string;
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
    // Longer than a token call may take (its timeout is 15 s), so a live holder is never robbed.
    this.staleLockMs = options.staleLockMs ?? 30_000;
    this.lockTimeoutMs = options.lockTimeoutMs ?? 40_000;
    const onWarning = options.onWarning ?? (() => undefined);
    this.warn = (warning) => {
      // A warning that cannot be delivered must not fail the save of a grant Keap already rotated.
      try {
        onWarning(warning);
      } catch {
        // Nothing better to do with it.
      }
    };
  }

  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      await fs.rm(this.lockFile, { force: true });
    }
  }

  /** An O_EXCL lock file: atomic on every local filesystem, and visible to every process. */
  private async acquire(): Promise<void> {
    await this.prepareDirectory();
    const deadline = Date.now() + this.lockTimeoutMs;
    // A lock whose age cannot be read is judged by how long we have watched it instead.
    let ageless: { since: number; identity: string | undefined } | undefined;
    for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
      try {
        // O_CREAT | O_EXCL fails on a symlink, dangling or not: a link at the lock path is never written through.
        const handle = await fs.open(this.lockFile, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
        await handle.writeFile(`${process.pid} ${new Date().toISOString()}\n`);
        await handle.close();
        return;
      } catch (err) {
        if (codeOf(err) !== 'EEXIST') throw new TokenStoreError(`token store lock ${this.lockFile} cannot be created (${codeOf(err)}); check the permissions of ${this.dir}`, err);
      }
      const now = Date.now();
      // lstat: the age of the lock itself. stat would follow a symlink, and a dangling one
      // would have no age at all, so the lock would never turn stale and block every refresh.
      const st = await fs.lstat(this.lockFile).catch((err: unknown) => (codeOf(err) === 'ENOENT' ? 'gone' : undefined));
      // Released between our open and this look: try again at once.
      if (st === 'gone') continue;
      const age = st !== undefined ? now - st.mtimeMs : -1;
      let stale: boolean;
      if (age >= 0) {
        ageless = undefined;
        stale = age > this.staleLockMs;
      } else {
        // lstat failed, or the mtime is ahead of our clock (another host's clock, a copied
        // file). The same lock, watched for staleLockMs without being released, is stale.
        const identity = st !== undefined ? `${st.dev}:${st.ino}:${st.mtimeMs}` : undefined;
        if (ageless === undefined || ageless.identity !== identity) ageless = { since: now, identity };
        stale = now - ageless.since > this.staleLockMs;
      }
      if (stale) {
        // rm unlinks a symlink itself, never what it points to.
        await fs.rm(this.lockFile, { force: true }).catch((err: unknown) => {
          throw new TokenStoreError(`token store lock ${this.lockFile} is stale but cannot be removed (${codeOf(err)}); remove it by hand`, err);
        });
        ageless = undefined;
        continue;
      }
      if (now > deadline) throw new TokenStoreError(`token store lock ${this.lockFile} is held by another process; if none runs, remove the file`);
      await new Promise((r) => setTimeout(r, wait + Math.random() * wait));
    }
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
      throw new TokenStoreError(`token store ${this.file} is not valid JSON; restore it or remove it and re-authorize`, err);
    }
    if (!isGrant(parsed)) throw new TokenStoreError(`token store ${this.file} does not hold a grant; restore it or remove it and re-authorize`);
    return parsed;
  }

  async save(grant: Grant): Promise<void> {
    let text: string;
    try {
      text = JSON.stringify(grant, null, 2) + '\n';
    } catch (err) {
      // The message says what failed, never what the grant holds.
      throw new TokenStoreError(`token store ${this.file} cannot be written: the grant cannot be serialized (${codeOf(err)})`, err);
    }
    await this.prepareDirectory();
    const tmp = path.join(this.dir, `.${path.basename(this.file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
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
      throw new TokenStoreError(`token store ${this.file} cannot be written (${codeOf(err)}); check free space and permissions in ${this.dir}`, err);
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
      throw new TokenStoreError(`token store ${this.file} was written but its directory cannot be synced (${codeOf(err)}); check the filesystem of ${this.dir}`, err);
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
      throw new TokenStoreError(`token store directory ${this.dir} cannot be created (${codeOf(err)}); create it with mode 0700 or point TOKEN_STORE elsewhere`, err);
    }
    if (!CHECK_MODES) return;
    const st = await fs.stat(this.dir);
    if ((st.mode & 0o077) === 0) return;
    const mode = octal(st.mode);
    const found = `token store directory ${this.dir} has mode ${mode}: other users can open it`;
    const todo = `run \`chmod 700 ${this.dir}\`, or point TOKEN_STORE into a directory of its own`;
    const leave = (why: string): void => this.warn({ event: 'token_store_permissions', path: this.dir, mode, action: 'left_as_is', message: `${found}; ${why}, so it is left as is: ${todo}` });
    if (st.uid !== process.getuid?.()) return leave(`it belongs to another user (uid ${st.uid})`);
    if ((st.mode & 0o1000) !== 0) return leave('it is a shared directory (sticky bit, like /tmp)');
    if (!(await this.holdsOnlyStoreFiles())) return leave('it holds other files too');
    try {
      await fs.chmod(this.dir, 0o700);
    } catch (err) {
      return leave(`changing it failed (${codeOf(err)})`);
    }
    this.warn({ event: 'token_store_permissions', path: this.dir, mode, action: 'tightened', message: `${found}; changed to 0700` });
  }

  private async holdsOnlyStoreFiles(): Promise<boolean> {
    const base = path.basename(this.file);
    const ours = (name: string): boolean => name === base || name === `${base}.lock` || name === `${base}.oauth-state` || (name.startsWith(`.${base}.`) && name.endsWith('.tmp'));
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

/** An errno code such as ENOSPC, or the error's name; never its message, which may quote content. */
function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? (err instanceof Error ? err.name : 'error');
}

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}
