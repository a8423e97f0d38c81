// /readyz: with one account, that account's readiness (its grant or key, its token store, its
// pacing), as it always was. With several, the proxy is ready while it can serve: 200, with
// each active account's state; `/readyz?account=<id>` answers for that account alone (one
// that is configured but idle is started, and says so until it is ready).
import type { Account } from '../accounts/account.js';
import type { AccountRegistry } from '../accounts/registry.js';
import type { Config } from '../config/config.js';
import type { Readiness } from '../tokens/credentials.js';

/** One account's readiness: its credential's, with its token store's and pacer's state when they are shared through Redis. */
export function accountReadiness(account: Account, config: Config): Readiness {
  const r = account.credentials.readiness();
  const redisUp = account.parts.storeConnected?.();
  if (redisUp === undefined && config.redis.url === undefined) return r;
  const details = { ...r.details };
  if (redisUp !== undefined) details.tokenStore = { kind: 'redis', connected: redisUp };
  // Shared through Redis, or (Redis away) this replica's share: readiness stays green either way.
  if (config.redis.url !== undefined) details.pacing = account.pacer.mode();
  return { ...r, details };
}

export function accountsReadiness(accounts: AccountRegistry, config: Config, query: URLSearchParams): Readiness {
  const asked = query.get('account');
  const primary = accounts.primary;
  if (asked === null && primary !== undefined && config.accounts.length === 1) return accountReadiness(primary, config);
  if (asked !== null) {
    const found = accounts.get(asked);
    if (found === undefined)
      return {
        ready: false,
        code: 'unknown_account',
        message: `No Keap account "${asked.slice(0, 64)}" is configured here.`,
        details: { account: asked.slice(0, 64) },
      };
    if (found instanceof Promise) {
      found.catch(() => undefined);
      return {
        ready: false,
        code: 'account_starting',
        message: 'The account was idle and is starting now (its grant is being read); ask again in a moment.',
        details: { account: asked },
      };
    }
    const r = accountReadiness(found, config);
    return { ...r, details: { account: found.id, ...r.details } };
  }
  const states: Record<string, unknown> = {};
  for (const account of accounts.all()) {
    const r = accountReadiness(account, config);
    states[account.id] = r.ready ? { ready: true, ...r.details } : { ready: false, code: r.code, ...r.details };
  }
  return {
    ready: true,
    details: { configured: accounts.ids().length, active: accounts.all().length, accounts: states },
  };
}
