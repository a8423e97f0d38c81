// `keap-proxy token export` and `token import`: the grant moved between stores, e.g. from a
// file into Redis when a proxy becomes several replicas, without authorizing again. The
// grant holds the live refresh token: export writes it only where it is asked to (a file
// is created with mode 0600), and import never replaces a newer grant unless forced.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { accountNamed, ConfigError, storeLocation, type Config, type TokenStoreConfig } from '../config/config.js';
import { checkGrantApp, GrantForAnotherApp, isGrant, tenantOf, type Grant } from '../tokens/grant.js';
import { openTokenStore, type OpenedTokenStore } from '../tokens/open-token-store.js';
import type { TokenStore } from '../tokens/token-store.js';
import type { Output } from './token-status.js';

export class TransferError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TransferError';
  }
}

export interface ExportOptions {
  config: Config;
  out: Output;
  err: Output;
  /** A file to write the grant to (created with mode 0600, never overwritten); undefined: stdout. */
  file: string | undefined;
  cwd: string;
  store?: TokenStore;
  /** The account (`--account`); needed when ACCOUNTS_FILE names several. */
  account?: string | undefined;
}

/** Resolves to the exit code: 0 exported, 1 no grant. */
export async function runTokenExport(options: ExportOptions): Promise<number> {
  const { config } = options;
  requireOAuth(config, 'token export', options.account);
  return withStore(
    config,
    options.store,
    async (store) => {
      const grant = await store.load();
      if (grant === undefined) {
        options.err.write(`No grant in ${store.location}: nothing to export.\n`);
        return 1;
      }
      const text = JSON.stringify(grant, null, 2) + '\n';
      if (options.file === undefined) {
        options.out.write(text);
      } else {
        const file = path.resolve(options.cwd, options.file);
        try {
          await fs.writeFile(file, text, { mode: 0o600, flag: 'wx' });
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          throw new TransferError(
            code === 'EEXIST'
              ? `${file} exists; export writes only a new file (it holds the live refresh token): choose another name or remove it`
              : `${file} cannot be written (${code ?? 'error'})`,
          );
        }
      }
      options.err.write(
        `Exported the grant${describe(grant)} from ${store.location}${options.file !== undefined ? ` to ${options.file}` : ''}. ` +
          'It holds the live refresh token: keep it secret, import it, then delete it.\n',
      );
      return 0;
    },
    options.account,
  );
}

export interface ImportOptions {
  config: Config;
  out: Output;
  /** Where the grant comes from: a token store file, a redis:// URL, or `-` for a grant as JSON on stdin. */
  from: string;
  force: boolean;
  cwd: string;
  stdin: () => Promise<string>;
  store?: TokenStore;
  /** The account (`--account`); needed when ACCOUNTS_FILE names several. */
  account?: string | undefined;
}

/** Resolves to the exit code: 0 imported (or already there), 1 refused. */
export async function runTokenImport(options: ImportOptions): Promise<number> {
  const { config } = options;
  requireOAuth(config, 'token import', options.account);
  const grant = await readSource(options);
  // A grant for another Keap app than the account's (KEAP_APP) is refused, as `auth` refuses it.
  try {
    checkGrantApp(grant, accountNamed(config, options.account).app);
  } catch (err) {
    if (err instanceof GrantForAnotherApp) throw new TransferError(`not imported: ${err.message}`);
    throw err;
  }
  return withStore(
    config,
    options.store,
    async (store) => {
      // Under the store's lock: no proxy refreshes between our read and our write.
      const outcome = await store.withLock(async () => {
        const current = await store.load().catch(() => undefined);
        if (current?.refreshToken === grant.refreshToken) return 'same' as const;
        if (current !== undefined && current.refreshIssuedAt > grant.refreshIssuedAt && !options.force)
          return 'newer' as const;
        await store.save(grant);
        return 'saved' as const;
      });
      switch (outcome) {
        case 'same':
          options.out.write(`${store.location} already holds this grant${describe(grant)}: nothing to do.\n`);
          return 0;
        case 'newer':
          options.out.write(
            `${store.location} holds a newer grant (its refresh token was issued later): not replaced. ` +
              'A proxy has refreshed since the export, and Keap has killed the exported refresh token; ' +
              'use --force only if you know the stored grant is dead.\n',
          );
          return 1;
        case 'saved':
          options.out.write(
            `Imported the grant${describe(grant)} into ${store.location}. Running proxies on this store pick it up by themselves; ` +
              'stop the proxies that used the old store, which would otherwise go on refreshing with it.\n',
          );
          return 0;
      }
    },
    options.account,
  );
}

async function readSource(options: ImportOptions): Promise<Grant> {
  const { from } = options;
  if (from === '-') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await options.stdin());
    } catch {
      throw new TransferError('stdin is not JSON: give the output of `keap-proxy token export`');
    }
    if (!isGrant(parsed)) throw new TransferError('stdin is not a grant: give the output of `keap-proxy token export`');
    return parsed;
  }
  const setting: TokenStoreConfig = /^rediss?:/i.test(from)
    ? { kind: 'redis', url: from }
    : { kind: 'file', path: path.resolve(options.cwd, from) };
  const source = openTokenStore(setting, options.config.redis, { onWarning: () => undefined });
  try {
    const grant = await source.store.load();
    if (grant === undefined) throw new TransferError(`${storeLocation(setting)} holds no grant: nothing to import`);
    return grant;
  } finally {
    await source.close();
  }
}

async function withStore<T>(
  config: Config,
  given: TokenStore | undefined,
  fn: (store: TokenStore) => Promise<T>,
  accountId?: string,
): Promise<T> {
  const account = accountNamed(config, accountId);
  const opened: OpenedTokenStore | undefined =
    given === undefined
      ? openTokenStore(
          account.tokenStore,
          { ...config.redis, prefix: account.redisPrefix },
          { onWarning: () => undefined },
        )
      : undefined;
  try {
    return await fn(given ?? (opened as OpenedTokenStore).store);
  } finally {
    await opened?.close();
  }
}

function requireOAuth(config: Config, command: string, accountId?: string): void {
  if (accountNamed(config, accountId).credentials.mode !== 'oauth')
    throw new ConfigError([
      `${command}: this configuration is key mode (KEAP_API_KEY), which uses no OAuth grant; set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET for OAuth mode`,
    ]);
}

function describe(grant: Grant): string {
  const tenant = tenantOf(grant);
  return tenant !== undefined ? ` for ${tenant}` : '';
}
