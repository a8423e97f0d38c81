// Where the grant lives between refreshes and restarts. Keap kills the previous refresh
// token the moment it issues a new one, so a new grant must be durable before it is used.
import { promises as fs, constants as fsConstants } from 'node:fs';
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

/** One JSON file, replaced atomically: temp file, fsync, rename, fsync of the directory. */
export interface FileTokenStoreOptions {
  /** A lock older than this is taken to belong to a process that died holding it. */
  staleLockMs?: number;
  /** How long to wait for another process's lock before giving up. */
  lockTimeoutMs?: number;
}

export class FileTokenStore implements TokenStore {
  readonly location: string;
  private readonly dir: string;
  private readonly lockFile: string;
  private readonly staleLockMs: number;
  private readonly lockTimeoutMs: number;

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
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
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
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new TokenStoreError(`token store ${this.file} cannot be read: ${(err as NodeJS.ErrnoException).code}`, err);
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
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
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
}

/** An errno code such as ENOSPC, or the error's name; never its message, which may quote content. */
function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? (err instanceof Error ? err.name : 'error');
}
