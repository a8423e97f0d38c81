// `keap-proxy token status`: what the stored grant looks like, for a person or a script.
// Only times, tenant and scope are shown: a token never leaves the store through here.
import type { Config } from '../config/config.js';
import { accountNamed, ConfigError, DEFAULT_ACCOUNT } from '../config/config.js';
import { tenantOf, type Grant } from '../tokens/grant.js';
import type { TokenStore } from '../tokens/token-store.js';
import { openTokenStore, type OpenedTokenStore } from '../tokens/open-token-store.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Keap kills a refresh token 45 days after issuing it. */
export const REFRESH_LIFETIME_DAYS = 45;
/** Keap staff advise refreshing any refresh token older than about 30 days. */
export const REFRESH_WARN_DAYS = 30;

export interface Output {
  write(text: string): unknown;
}

export interface GrantStatus {
  tenant: string | null;
  scope: string;
  accessToken: {
    /** False for a grant that holds only a refresh token so far. */
    present: boolean;
    expiresAt: string;
    expiresInSeconds: number;
    expired: boolean;
    issuedAt: string;
  };
  refreshToken: {
    issuedAt: string;
    ageSeconds: number;
    age: string;
    lifetimeDays: number;
    /** issuedAt + Keap's lifetime: Keap does not say, so this is the documented bound. */
    expiresAt: string;
    /** `ok`; `refresh_soon` past REFRESH_WARN_DAYS; `expired` past Keap's lifetime. */
    condition: 'ok' | 'refresh_soon' | 'expired';
  };
}

export function describeGrant(grant: Grant, now: number): GrantStatus {
  const refreshAge = now - grant.refreshIssuedAt;
  return {
    tenant: tenantOf(grant) ?? null,
    scope: grant.scope,
    accessToken: {
      present: grant.accessToken !== '',
      expiresAt: iso(grant.accessExpiresAt),
      expiresInSeconds: Math.round((grant.accessExpiresAt - now) / 1000),
      expired: grant.accessToken === '' || grant.accessExpiresAt <= now,
      issuedAt: iso(grant.issuedAt),
    },
    refreshToken: {
      issuedAt: iso(grant.refreshIssuedAt),
      ageSeconds: Math.round(refreshAge / 1000),
      age: formatDuration(refreshAge),
      lifetimeDays: REFRESH_LIFETIME_DAYS,
      expiresAt: iso(grant.refreshIssuedAt + REFRESH_LIFETIME_DAYS * DAY),
      condition:
        refreshAge >= REFRESH_LIFETIME_DAYS * DAY
          ? 'expired'
          : refreshAge >= REFRESH_WARN_DAYS * DAY
            ? 'refresh_soon'
            : 'ok',
    },
  };
}

/** "3d 4h", "5h 12m", "7m": precise enough to act on, short enough to read. */
export function formatDuration(ms: number): string {
  const abs = Math.abs(ms);
  const days = Math.floor(abs / DAY);
  const hours = Math.floor((abs % DAY) / HOUR);
  const minutes = Math.floor((abs % HOUR) / 60_000);
  if (days > 0) return `${days}d ${hours}h`;
  if (hours > 0) return `${hours}h ${minutes}m`;
  return `${minutes}m`;
}

export function formatStatus(status: GrantStatus, storePath: string, account?: string): string {
  const auth = account !== undefined ? `keap-proxy auth --account ${account}` : 'keap-proxy auth';
  const a = status.accessToken;
  const r = status.refreshToken;
  const inMs = a.expiresInSeconds * 1000;
  const access = !a.present
    ? 'none yet (the proxy obtains one with the refresh token)'
    : a.expired
      ? `expired ${a.expiresAt} (${formatDuration(inMs)} ago)`
      : `expires ${a.expiresAt} (in ${formatDuration(inMs)})`;
  const lines = [
    account !== undefined ? `Grant of account "${account}" in ${storePath}` : `Grant in ${storePath}`,
    `  tenant:         ${status.tenant ?? '(unknown: scope names no account)'}`,
    `  scope:          ${status.scope || '(none)'}`,
    `  access token:   ${access}`,
    `  issued at:      ${a.issuedAt}`,
    `  refresh token:  issued ${r.issuedAt}, ${r.age} ago (Keap's lifetime: ${r.lifetimeDays} days, until about ${r.expiresAt})`,
  ];
  if (r.condition === 'refresh_soon') {
    lines.push(
      `WARNING: the refresh token is ${r.age} old; Keap kills it after ${r.lifetimeDays} days. A running proxy renews it with every access-token refresh, so start one (or run \`${auth}\`) before then.`,
    );
  } else if (r.condition === 'expired') {
    lines.push(
      `WARNING: the refresh token is older than Keap's ${r.lifetimeDays}-day lifetime and is most likely dead: run \`${auth}\` to authorize again.`,
    );
  }
  return lines.join('\n') + '\n';
}

export const NO_GRANT_MESSAGE =
  'No grant stored. Authorize with `keap-proxy auth`, or open the running proxy\'s /oauth/start (see README, "Authorizing (OAuth)").';

/** NO_GRANT_MESSAGE for an account of ACCOUNTS_FILE: both ways name it. */
export function noGrantMessage(account: string | undefined): string {
  return account === undefined
    ? NO_GRANT_MESSAGE
    : `No grant stored for account "${account}". Authorize with \`keap-proxy auth --account ${account}\`, or open the running proxy's /oauth/start?account=${account} (see README, "Authorizing (OAuth)").`;
}

export interface TokenStatusOptions {
  config: Config;
  out: Output;
  json?: boolean;
  store?: TokenStore;
  now?: () => number;
  /** The account (`--account`); needed when ACCOUNTS_FILE names several. */
  account?: string | undefined;
}

/** Prints the status; resolves to the exit code: 0 with a grant, 1 without. */
export async function runTokenStatus(options: TokenStatusOptions): Promise<number> {
  const { config } = options;
  const account = accountNamed(config, options.account);
  if (account.credentials.mode !== 'oauth') {
    throw new ConfigError([
      'token status: this configuration is key mode (KEAP_API_KEY), which uses no OAuth grant; set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET for OAuth mode',
    ]);
  }
  const opened =
    options.store === undefined
      ? openTokenStore(
          account.tokenStore,
          { ...config.redis, prefix: account.redisPrefix },
          { onWarning: () => undefined },
        )
      : undefined;
  try {
    // The default account goes unnamed, as it did before there were several.
    const named = account.id !== DEFAULT_ACCOUNT ? account.id : undefined;
    return await printStatus(options, options.store ?? (opened as OpenedTokenStore).store, named);
  } finally {
    await opened?.close();
  }
}

async function printStatus(
  options: TokenStatusOptions,
  store: TokenStore,
  account: string | undefined,
): Promise<number> {
  const shown = account !== undefined ? { account } : {};
  const { out } = options;
  const grant = await store.load();
  const now = (options.now ?? Date.now)();
  if (grant === undefined) {
    out.write(
      options.json === true
        ? JSON.stringify({ ...shown, store: store.location, grant: null, message: noGrantMessage(account) }, null, 2) +
            '\n'
        : `${noGrantMessage(account)}\nStore: ${store.location}\n`,
    );
    return 1;
  }
  const status = describeGrant(grant, now);
  out.write(
    options.json === true
      ? JSON.stringify({ ...shown, store: store.location, grant: status }, null, 2) + '\n'
      : formatStatus(status, store.location, account),
  );
  return 0;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
