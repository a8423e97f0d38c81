// `keap-proxy auth`: authorizes the proxy's Keap app for an account and stores the grant,
// without a running proxy. A proxy that is running notices the new grant in the store.
import http from 'node:http';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import {
  accountNamed,
  ConfigError,
  DEFAULT_ACCOUNT,
  storeLocation,
  type Config,
  type OAuthCredentials,
} from '../config/config.js';
import type { Grant } from '../tokens/grant.js';
import { checkGrantApp, tenantOf } from '../tokens/grant.js';
import { HttpError } from '../http/http-error.js';
import { OAuthFlow, StateTable, STATE_TTL_MS } from '../oauth/oauth-flow.js';
import { sendPage } from '../oauth/oauth-page.js';
import { TokenClient } from '../tokens/token-client.js';
import { TokenStoreError, type TokenStore } from '../tokens/token-store.js';
import { openTokenStore, type OpenedTokenStore } from '../tokens/open-token-store.js';
import { describeGrant, formatDuration, type Output } from './token-status.js';

export const DEFAULT_AUTH_TIMEOUT_MS = 300_000;

/** The command could not authorize; the message says why and what to do. */
export class AuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthError';
  }
}

export interface AuthOptions {
  config: Config;
  out: Output;
  /** The code from Keap's redirect, pasted by the operator: exchanged at once, no listener. */
  code?: string | undefined;
  /** With `code`: the redirect's state, checked against the one an earlier run printed. */
  state?: string | undefined;
  /** How long to wait for the callback. */
  timeoutMs?: number;
  store?: TokenStore;
  now?: () => number;
  /** The account to authorize (`--account`); needed when ACCOUNTS_FILE names several. */
  account?: string | undefined;
  /** Called once the callback listener is up (tests play the browser from here). */
  onListening?: (info: { authorizeUrl: URL; state: string; callbackUrl: string }) => void;
}

export interface AuthSummary {
  tenant: string | null;
  accessExpiresAt: string;
  store: string;
}

export type AuthResult =
  | { outcome: 'authorized'; summary: AuthSummary }
  /** The redirect URI is https: this process cannot receive the callback, the operator pastes the code. */
  | { outcome: 'pending'; authorizeUrl: string };

export async function runAuth(options: AuthOptions): Promise<AuthResult> {
  const { config, out } = options;
  const credentials = oauthCredentials(config, options.account);
  const account = accountNamed(config, options.account);
  const redirectUri = credentials.redirectUri;
  if (redirectUri === undefined) {
    const where =
      account.id !== DEFAULT_ACCOUNT
        ? ` (for account "${account.id}": in its ACCOUNTS_FILE entry, or in the settings for every account)`
        : '';
    throw new ConfigError([
      `KEAP_REDIRECT_URI: required by \`keap-proxy auth\`; set it${where} to the redirect URI registered for your Keap app, e.g. http://127.0.0.1:8765/callback`,
    ]);
  }
  const opened =
    options.store === undefined
      ? openTokenStore(
          account.tokenStore,
          { ...config.redis, prefix: account.redisPrefix },
          {
            onWarning: (w) => out.write(`Warning: ${w.message}\n`),
          },
        )
      : undefined;
  try {
    return await authorize(options, redirectUri, credentials, options.store ?? (opened as OpenedTokenStore).store);
  } finally {
    await opened?.close();
  }
}

async function authorize(
  options: AuthOptions,
  redirectUri: string,
  credentials: OAuthCredentials,
  store: TokenStore,
): Promise<AuthResult> {
  const { config, out } = options;
  const account = accountNamed(config, options.account);
  // How to run this command again, for this account: every hint below names it.
  const again = options.account !== undefined ? `keap-proxy auth --account ${account.id}` : 'keap-proxy auth';
  const pending = new PendingState(pendingStateFile(config, options.account), options.now ?? Date.now);
  const states = new StateTable({ max: 1, now: options.now });
  const flow = new OAuthFlow({
    authorizeUrl: config.keapAuthorizeUrl,
    clientId: credentials.clientId,
    redirectUri,
    client: new TokenClient({
      tokenUrl: config.keapTokenUrl,
      clientId: credentials.clientId,
      clientSecret: credentials.clientSecret,
    }),
    keep: (grant) => {
      // A grant for another Keap app than the account's is refused before it is stored.
      checkGrantApp(grant, account.app);
      return store.withLock(() => store.save(grant));
    },
    states,
    restartHint: `run \`${again}\` again`,
  });

  let grant: Grant;
  if (options.code !== undefined) {
    if (options.state !== undefined) {
      const found = await pending.check(options.state);
      if (found === 'mismatch')
        throw new AuthError(
          `--state does not match the state of the authorize URL \`${again}\` printed last; that login is still pending: run \`${again} --code CODE --state STATE\` again with the code and state from the address bar of Keap's redirect (a code is good for a few minutes), or run \`${again}\` for a new authorize URL.`,
        );
      if (found === 'none')
        throw new AuthError(
          `--state: no login is pending (\`${again}\` printed no authorize URL, or that was more than ${STATE_TTL_MS / 60_000} minutes ago, or its code was used): run \`${again}\` again and use the code and state of the redirect that follows it.`,
        );
    }
    // Before the code is spent: a grant Keap issued that cannot be stored would be lost.
    await ensureWritable(store, again);
    if (options.state !== undefined) await pending.forget();
    const previous = await store.load().catch(() => undefined);
    grant = await exchange(flow, options.code);
    warnOnTenantChange(out, previous, grant);
  } else {
    // Before the URL is printed: a login whose grant cannot be stored is a login wasted.
    await ensureWritable(store, again);
    const target = new URL(redirectUri);
    const { url, state } = flow.begin();
    if (target.protocol !== 'http:') await pending.remember(state);
    out.write(`Open this URL in a browser and log in to the Keap account to authorize:\n\n  ${url.href}\n\n`);
    if (target.protocol !== 'http:') {
      out.write(
        `KEAP_REDIRECT_URI (${redirectUri}) is not plain http, so this command cannot receive the callback itself.\n` +
          `After you log in, Keap redirects the browser there; copy the code and state from the address bar and run:\n\n` +
          `  ${again} --code CODE --state STATE\n\nwithin ${STATE_TTL_MS / 60_000} minutes.\n`,
      );
      return { outcome: 'pending', authorizeUrl: url.href };
    }
    const previous = await store.load().catch(() => undefined);
    grant = await waitForCallback(flow, target, options.timeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS, out, (callbackUrl) =>
      options.onListening?.({ authorizeUrl: url, state, callbackUrl }),
    );
    warnOnTenantChange(out, previous, grant);
  }

  const status = describeGrant(grant, (options.now ?? Date.now)());
  const summary: AuthSummary = {
    tenant: status.tenant,
    accessExpiresAt: status.accessToken.expiresAt,
    store: store.location,
  };
  out.write(
    `Authorized${summary.tenant !== null ? ` for ${summary.tenant}` : ''}.\n` +
      `  access token expires ${summary.accessExpiresAt} (in ${formatDuration(status.accessToken.expiresInSeconds * 1000)})\n` +
      `  grant stored in ${summary.store}\n` +
      `A running proxy using this store picks the new grant up by itself.\n`,
  );
  return { outcome: 'authorized', summary };
}

/** Where `auth` remembers the state of an authorize URL it printed, until `auth --code --state` comes back with it. */
function pendingStateFile(config: Config, account?: string): string {
  const store = accountNamed(config, account).tokenStore;
  if (store.kind === 'file') return `${store.path}.oauth-state`;
  // One file per Redis store and account (its location carries no password), private to this user.
  const id = createHash('sha256')
    .update(`${storeLocation(store)} ${accountNamed(config, account).redisPrefix}`)
    .digest('hex')
    .slice(0, 16);
  return path.join(tmpdir(), `keap-proxy-${process.getuid?.() ?? 'user'}`, `${id}.oauth-state`);
}

/** The store can be written and locked, or the command stops here, before Keap is asked anything. */
async function ensureWritable(store: TokenStore, again: string): Promise<void> {
  try {
    await store.checkWritable();
  } catch (err) {
    if (!(err instanceof TokenStoreError)) throw err;
    throw new AuthError(
      `TOKEN_STORE: ${err.message}. Nothing was asked of Keap; fix the store, then run \`${again}\` again.`,
    );
  }
}

function oauthCredentials(config: Config, account?: string): OAuthCredentials {
  const { credentials } = accountNamed(config, account);
  if (credentials.mode !== 'oauth') {
    throw new ConfigError([
      '`keap-proxy auth` needs OAuth mode: set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET (KEAP_API_KEY is key mode, which needs no authorization)',
    ]);
  }
  return credentials;
}

async function exchange(flow: OAuthFlow, code: string): Promise<Grant> {
  try {
    return await flow.exchange(code);
  } catch (err) {
    if (err instanceof HttpError) throw new AuthError(err.message);
    throw err;
  }
}

function warnOnTenantChange(out: Output, previous: Grant | undefined, grant: Grant): void {
  const before = previous !== undefined ? tenantOf(previous) : undefined;
  const after = tenantOf(grant);
  // A proxy that served one account now serves another: worth a line, not a refusal.
  if (before !== undefined && after !== undefined && before !== after)
    out.write(`Note: the store held a grant for ${before}; it now holds one for ${after}.\n`);
}

/**
 * Serves the redirect URI's path on its port until a callback with our state arrives.
 * A callback with a wrong state gets a 400 page and we keep waiting: it is not our flow
 * (a stale tab, or a forged request), and the real one may still come.
 */
function waitForCallback(
  flow: OAuthFlow,
  target: URL,
  timeoutMs: number,
  out: Output,
  onListening: (callbackUrl: string) => void,
): Promise<Grant> {
  const host = target.hostname.replace(/^\[|\]$/g, '');
  // Only an IP literal says which interface Keap's redirect reaches; a name gets loopback,
  // so the callback (and its code) is never offered to the network by accident.
  const bindHost = isIP(host) !== 0 ? host : '127.0.0.1';
  const port = target.port === '' ? 80 : Number(target.port);

  return new Promise<Grant>((resolve, reject) => {
    let busy = false;
    let finished = false;
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://callback.invalid');
      if (req.method !== 'GET' || url.pathname !== target.pathname) {
        sendPage(res, 404, 'Not found', `This listener only takes Keap's redirect to ${target.pathname}.`);
        return;
      }
      if (busy || finished) {
        sendPage(res, 409, 'Already handled', 'An authorization callback has already been received; see the terminal.');
        return;
      }
      busy = true;
      flow.complete(url.searchParams).then(
        (grant) => {
          const tenant = tenantOf(grant);
          sendPage(
            res,
            200,
            'keap-proxy is authorized',
            `Keap authorized keap-proxy${tenant !== undefined ? ` for ${tenant}` : ''}. You can close this tab.`,
          );
          finish(() => resolve(grant), res);
        },
        (err: unknown) => {
          busy = false;
          if (err instanceof HttpError && err.code === 'invalid_state') {
            sendPage(
              res,
              400,
              'Not this authorization',
              "This callback does not carry the state `keap-proxy auth` is waiting for (a stale tab, or another run's redirect). Use the authorize URL it printed last; it is still waiting.",
            );
            out.write("Refused a callback with a state that is not this run's; still waiting.\n");
            return;
          }
          const message = err instanceof Error ? err.message : String(err);
          sendPage(res, err instanceof HttpError ? err.status : 500, 'Authorization failed', message);
          finish(() => reject(new AuthError(message)), res);
        },
      );
    });
    const timer = setTimeout(() => {
      finish(() =>
        reject(
          new AuthError(
            `No callback from Keap within ${Math.round(timeoutMs / 1000)} s; run \`keap-proxy auth\` again (--timeout SECONDS waits longer), or use --code CODE.`,
          ),
        ),
      );
    }, timeoutMs);

    function finish(settle: () => void, res?: http.ServerResponse): void {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      // Let the page that was just written reach the browser, then drop every connection
      // (a browser's idle keep-alive one too), so the process can exit.
      if (server.listening) server.close();
      if (res === undefined || res.writableFinished) server.closeAllConnections();
      else res.once('close', () => server.closeAllConnections());
      settle();
    }

    server.once('error', (err: NodeJS.ErrnoException) => {
      const hint =
        err.code === 'EADDRINUSE'
          ? ': something already listens there (a running keap-proxy? then open its /oauth/start instead)'
          : '';
      finish(() =>
        reject(
          new AuthError(
            `Cannot listen for the callback on ${bindHost}:${port} (${err.code ?? err.message})${hint}; or use --code CODE.`,
          ),
        ),
      );
    });
    server.listen(port, bindHost, () => {
      const address = server.address() as AddressInfo;
      const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      const callbackUrl = `http://${shown}:${address.port}${target.pathname}`;
      out.write(
        `Waiting for Keap to redirect to ${target.href} (listening on ${shown}:${address.port}, up to ${Math.round(timeoutMs / 1000)} s)...\n`,
      );
      onListening(callbackUrl);
    });
  });
}

/**
 * The state of the last authorize URL printed for a paste-the-code flow, so that
 * `--code --state` can check it. Kept next to the token store, with the same care.
 */
class PendingState {
  constructor(
    private readonly file: string,
    private readonly now: () => number,
  ) {}

  async remember(state: string): Promise<void> {
    await fs.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    await fs.writeFile(this.file, JSON.stringify({ state, expiresAt: this.now() + STATE_TTL_MS }) + '\n', {
      mode: 0o600,
    });
  }

  /**
   * Whether `state` is the pending one. A state that does not match leaves the pending login
   * in place (a typo, another tab's redirect): the right one can still follow. An expired
   * or unreadable one is removed.
   */
  async check(state: string): Promise<'ok' | 'mismatch' | 'none'> {
    let saved: unknown;
    try {
      saved = JSON.parse(await fs.readFile(this.file, 'utf8'));
    } catch {
      return 'none';
    }
    const entry = saved as { state?: unknown; expiresAt?: unknown } | null;
    if (typeof entry?.state !== 'string' || typeof entry.expiresAt !== 'number' || this.now() >= entry.expiresAt) {
      await this.forget();
      return 'none';
    }
    return entry.state === state ? 'ok' : 'mismatch';
  }

  /** The pending login is done with (its code is being exchanged): its state passes no more. */
  async forget(): Promise<void> {
    await fs.rm(this.file, { force: true });
  }
}
