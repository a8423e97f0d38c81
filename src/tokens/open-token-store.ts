// The token store a configuration names: a file, or Redis shared by replicas. Built here
// for the server and for the commands that read or write the grant, so all agree.
import { Redis } from 'ioredis';
import type { Config, TokenStoreConfig } from '../config/config.js';
import { FileTokenStore, type TokenStore, type TokenStoreWarning } from './token-store.js';
import { RECOMMENDED_REDIS_OPTIONS, RedisTokenStore, type RedisTokenStoreWarning } from './redis-token-store.js';

export type StoreWarning = TokenStoreWarning | RedisTokenStoreWarning;

export interface OpenedTokenStore {
  store: TokenStore;
  /** Redis only: whether the connection is up now, for /readyz. */
  connected(): boolean | undefined;
  /** Closes what the store opened (Redis connections); the file store holds nothing open. */
  close(): Promise<void>;
}

export interface OpenOptions {
  onWarning: (warning: StoreWarning) => void;
  /** Told once each time Redis goes away and comes back (ioredis reconnects by itself). */
  onRedisState?: (state: 'up' | 'down', reason: string | undefined) => void;
}

export function openTokenStore(
  setting: TokenStoreConfig,
  redisSettings: Pick<Config['redis'], 'prefix' | 'lockLeaseMs'>,
  options: OpenOptions,
): OpenedTokenStore {
  if (setting.kind === 'file') {
    const store = new FileTokenStore(setting.path, { onWarning: options.onWarning });
    return { store, connected: () => undefined, close: () => Promise.resolve() };
  }
  const redis = new Redis(setting.url, { ...RECOMMENDED_REDIS_OPTIONS, lazyConnect: false });
  let up = false;
  let reported: 'up' | 'down' | undefined;
  const report = (state: 'up' | 'down', reason: string | undefined): void => {
    up = state === 'up';
    if (reported === state) return;
    reported = state;
    options.onRedisState?.(state, reason);
  };
  // ioredis emits 'error' on every failed attempt to connect: without a listener each would be
  // an uncaught exception. The state is reported once per change instead.
  redis.on('error', (err: Error) => report('down', redisReason(err)));
  redis.on('ready', () => report('up', undefined));
  redis.on('close', () => report('down', 'connection closed'));
  const store = new RedisTokenStore({
    redis,
    prefix: redisSettings.prefix,
    leaseMs: redisSettings.lockLeaseMs,
    // A Redis that does not answer within a second is down for this call: a client whose token
    // Keap rejected should hear so, not wait out ioredis's reconnects.
    timeoutMs: 1000,
    onWarning: options.onWarning,
  });
  return {
    store,
    connected: () => up,
    async close() {
      await store.close();
      redis.disconnect();
    },
  };
}

/** The error's code or a short reason, never the URL (it may hold a password). */
function redisReason(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code ?? err.name;
}
