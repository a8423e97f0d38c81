// Makes an Account from its AccountConfig: its token store (OAuth mode), its credential
// source (a token broker, or its static key), its pacer and its parts for translated
// XML-RPC. Everything an account holds is its own; what accounts share (the forwarder, the
// cache's memory, the metrics, the logger) is passed in.
import { createHash } from 'node:crypto';
import { CacheRules } from '../cache/cache-rules.js';
import type { AccountConfig, Config } from '../config/config.js';
import type { Logger } from '../observability/log.js';
import type { Metrics } from '../observability/metrics.js';
import { createPacer, type Pacer } from '../pacing/pacer.js';
import { createSharedPacer } from '../pacing/shared-pacer.js';
import { StaticKeySource, type CredentialSource } from '../tokens/credentials.js';
import { openTokenStore } from '../tokens/open-token-store.js';
import { TokenBroker } from '../tokens/token-broker.js';
import { TokenClient } from '../tokens/token-client.js';
import type { TokenStore } from '../tokens/token-store.js';
import { Account } from './account.js';

export interface CredentialParts {
  credentials: CredentialSource;
  /** OAuth mode only: the flow behind /oauth/start and /oauth/callback needs the broker itself. */
  broker: TokenBroker | undefined;
  client: TokenClient | undefined;
}

export function createCredentials(
  account: AccountConfig,
  tokenUrl: URL,
  logger: Logger,
  store: TokenStore,
  metrics?: Metrics,
  now?: () => number,
): CredentialParts {
  const c = account.credentials;
  if (c.mode === 'key')
    return { credentials: new StaticKeySource(c.apiKey, logger, now), broker: undefined, client: undefined };
  const client = new TokenClient({ tokenUrl, clientId: c.clientId, clientSecret: c.clientSecret, now });
  const broker = new TokenBroker({
    client,
    store,
    logger,
    seedRefreshToken: c.seedRefreshToken,
    now,
    app: account.app,
    onRefresh: (outcome) => metrics?.tokenRefresh(outcome),
  });
  return { credentials: broker, broker, client };
}

/**
 * With REDIS_URL, every replica of one Keap client shares its budgets through Redis: Keap's
 * client limits hold across all the accounts a client serves, so the budget is named by the
 * client id (a key's hash in key mode), never by the secret itself.
 */
export function createAccountPacer(account: AccountConfig, config: Config, logger: Logger): Pacer {
  if (config.redis.url === undefined) return createPacer(account.pacing, logger);
  const c = account.credentials;
  const identity = c.mode === 'oauth' ? `client:${c.clientId}` : `key:${c.apiKey}`;
  return createSharedPacer(account.pacing, logger, {
    redis: config.redis.url,
    prefix: config.redis.prefix,
    key: createHash('sha256').update(identity).digest('hex').slice(0, 24),
    replicas: config.replicas,
  });
}

export interface AccountDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  /** Tests hand in a store for the default account. */
  store?: TokenStore;
  now?: () => number;
  /** The pacer, when the caller makes it (a fair share of a shared OAuth client); else the account's own. */
  pacer?: Pacer;
}

/** An account, ready to start: its store opened (not yet read), its credential source and pacer made. */
export function openAccount(spec: AccountConfig, deps: AccountDeps): Account {
  const { config, metrics, now } = deps;
  const logger = spec.id === 'default' ? deps.logger : deps.logger.child({ account: spec.id });
  // Made below, once the store exists; the store's Redis callbacks need the broker it feeds.
  // eslint-disable-next-line prefer-const
  let parts: CredentialParts | undefined;
  // Key mode keeps no grant: no store is opened (and no Redis connection made) for it.
  const opened =
    deps.store === undefined && spec.credentials.mode === 'oauth'
      ? openTokenStore(
          spec.tokenStore,
          { ...config.redis, prefix: spec.redisPrefix },
          {
            onWarning: ({ message, ...fields }) => logger.warn(fields, message),
            onRedisState: (state, reason) => {
              if (state === 'down') {
                logger.warn(
                  { event: 'redis_down', reason },
                  'Redis is unreachable: serving with the access token held; no refresh until Redis is back',
                );
                return;
              }
              logger.info({ event: 'redis_up' }, 'Redis is reachable');
              // A Redis that restarted empty must get the live grant back before anyone needs it.
              parts?.broker
                ?.writeBackHeldGrant()
                .catch((err: unknown) =>
                  logger.warn(
                    { event: 'grant_write_back_failed', err: err instanceof Error ? err.message : String(err) },
                    'the grant could not be written back to the token store; the next refresh tries again',
                  ),
                );
            },
          },
        )
      : undefined;
  const store = deps.store ?? opened?.store ?? unusedStore;
  parts = createCredentials(spec, config.keapTokenUrl, logger, store, metrics, now);
  return new Account(spec.id, parts.credentials, deps.pacer ?? createAccountPacer(spec, config, logger), {
    config: spec,
    broker: parts.broker,
    tokenClient: parts.client,
    storeConnected: opened !== undefined ? () => opened.connected() : undefined,
    closeStore: opened !== undefined ? () => opened.close() : undefined,
    cacheRules: CacheRules.parse(spec.cacheRules),
    logger,
  });
}

/** Key mode keeps no grant; nothing reads or writes this store. */
const unusedStore: TokenStore = {
  location: '(none: key mode)',
  load: () => Promise.resolve(undefined),
  save: () => Promise.reject(new Error('key mode keeps no grant')),
  withLock: (fn) => fn(),
  checkWritable: () => Promise.resolve(),
};
