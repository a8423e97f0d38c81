// Where the grant lives between refreshes and restarts. Keap kills the previous refresh
// token the moment it issues a new one, so a new grant must be durable before it is used.
import { promises as fs, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { isGrant, type Grant } from './grant.js';

export interface TokenStore {
  /** The stored grant, or undefined when nothing is stored yet. */
  load(): Promise<Grant | undefined>;
  /** Durably replaces the stored grant; resolves only once it would survive a crash. */
  save(grant: Grant): Promise<void>;
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
export class FileTokenStore implements TokenStore {
  readonly location: string;

  constructor(private readonly file: string) {
    this.location = file;
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
    const dir = path.dirname(this.file);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(dir, `.${path.basename(this.file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    try {
      await handle.writeFile(JSON.stringify(grant, null, 2) + '\n');
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await fs.rename(tmp, this.file);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw new TokenStoreError(`token store ${this.file} cannot be written: ${(err as NodeJS.ErrnoException).code}`, err);
    }
    // The rename is durable only once the directory entry is.
    const dirHandle = await fs.open(dir, fsConstants.O_RDONLY);
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }
}
