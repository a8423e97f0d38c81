// The grant in Redis, for replicas that share one Keap account. Keap kills the previous refresh
// token the moment it issues a new one, so of all replicas only one may refresh at a time (a
// leased lock), and a replica that lost its lock, or read an older state, must not write.
//
// Keys, each the caller's prefix (P) followed by:
//   Ptoken:grant     a hash { grant: JSON, generation: n }; n counts the saves, 0 when absent
//   Ptoken:lock      the lock: a random owner token (host/pid/random) with a lease (PX)
// Channels (with the database number, since pub/sub ignores SELECT):
//   Ptoken:released@db   published when a holder releases the lock: waiters try again at once
//   Ptoken:changed@db    published with the new generation on every save
//
// Which holding a load() or save() belongs to is the withLock callback it runs in
// (AsyncLocalStorage): a save compares with what a load under the same holding read. A
// save under a holding that read nothing replaces what is stored, the lock alone fencing
// it: that is how an authorization (adoptGrant, `keap-proxy auth`) stores a grant that must
// win over whatever an earlier read saw.
//
// The caller builds the ioredis client and should give it
// RECOMMENDED_REDIS_OPTIONS ({ enableOfflineQueue: false, maxRetriesPerRequest: 1 }): a
// command sent while Redis is away then fails at once instead of waiting in a queue. The
// store bounds every call by timeoutMs whatever the options, and ioredis reconnects by
// itself, so the store heals when Redis returns. Redis Cluster is not supported (the lock
// and the grant are read and written by one script).
//
// Durability is Redis's: a grant is saved once Redis has it in memory. A Redis that restarts
// without an append-only file loses whatever was saved since its last snapshot, and with it
// the only live refresh token; the store warns once (token_store_not_durable) when the
// server says it keeps no append-only file.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis, RedisOptions } from 'ioredis';
import { isGrant, type Grant } from './grant.js';
import { deliverSafely, TokenStoreError, type TokenStore, type TokenStoreLockLostWarning } from './token-store.js';

/** Client options the store works best with: a command sent while Redis is away fails at once, not after a queue. */
export const RECOMMENDED_REDIS_OPTIONS = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
} as const satisfies RedisOptions;

/** The Redis server keeps no append-only file: a restart may lose the latest grant. Said once per store. */
export interface TokenStoreNotDurableWarning {
  event: 'token_store_not_durable';
  /** The store's location. */
  path: string;
  /** For a person: what was found, what it risks, what to do. */
  message: string;
}

export type RedisTokenStoreWarning = TokenStoreLockLostWarning | TokenStoreNotDurableWarning;

/** A save made it into Redis: the grant's new generation. */
export interface GrantChange {
  generation: number;
}

export interface RedisTokenStoreOptions {
  /** The client for commands, built by the caller (who also closes it); see RECOMMENDED_REDIS_OPTIONS. */
  redis: Redis;
  /** Every key and channel starts with this, e.g. 'keap-proxy:'. */
  prefix: string;
  /**
   * The connection for pub/sub (a subscribed connection can issue no other command). A client:
   * the caller's, left open by close(). A function: called once when first needed; the store
   * closes what it returns. Default: `redis.duplicate()`, closed by close().
   */
  subscriber?: Redis | (() => Redis);
  /** The lock's lease: a holder that stops renewing (it died, or stalled this long) loses the lock. Renewed every third of it. */
  leaseMs?: number;
  /** How long withLock waits for another holder before it fails. */
  lockTimeoutMs?: number;
  /** A waiter not woken by a release message tries again after between half of this and this (less when the lease ends sooner). */
  pollMs?: number;
  /** The longest one store operation waits for Redis (to connect, then to answer) before it fails. */
  timeoutMs?: number;
  /** Told when the lock was lost while held, or when Redis keeps no append-only file (a log line). */
  onWarning?: (warning: RedisTokenStoreWarning) => void;
  /** The clock for the times reported in warnings (how long a lost lock had been held). */
  now?: () => number;
}

/** What withLock has done: for metrics, and for tests that count rather than time. */
export interface RedisLockStats {
  /** Tries to take the lock (each is one script call). */
  attempts: number;
  /** Waits ended by a release message. */
  wokenByRelease: number;
  /** Waits ended by the poll timer (no message came, or the holder's lease was ending). */
  wokenByPoll: number;
  /** Leases extended while held. */
  renewals: number;
}

/** One holding of the lock by this store: the owner token, and what was read under it. */
interface Holding {
  owner: string;
  since: number;
  /** The generation the last load() under this holding saw (0: nothing stored); undefined: nothing read yet. */
  readGeneration: number | undefined;
  lost: boolean;
  lostReported: boolean;
  released: boolean;
  timer: NodeJS.Timeout | undefined;
}

// SET NX PX, or how long the current holder's lease has left (-1: no expiry, -2: gone meanwhile).
const ACQUIRE = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, 0} end
return {0, redis.call('PTTL', KEYS[1])}`;

// Extends the lease only while the lock is still ours.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

// Compare and delete, then wake the waiters.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
return 0`;

// The fenced compare-and-set: only while the lock is ours, and only over the generation read
// under it (ARGV[2] empty: nothing was read under this holding, the lock alone decides).
const SAVE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 'lock', 0} end
local generation = tonumber(redis.call('HGET', KEYS[2], 'generation') or '0') or 0
if ARGV[2] ~= '' and generation ~= tonumber(ARGV[2]) then return {0, 'generation', generation} end
generation = generation + 1
redis.call('HSET', KEYS[2], 'grant', ARGV[3], 'generation', generation)
redis.call('PUBLISH', ARGV[4], generation)
return {1, 'saved', generation}`;

export class RedisTokenStore implements TokenStore {
  readonly location: string;
  /** The keys the store uses (for an operator, and for tests that play a foreign writer). */
  readonly keys: { readonly grant: string; readonly lock: string };
  readonly stats: RedisLockStats = { attempts: 0, wokenByRelease: 0, wokenByPoll: 0, renewals: 0 };
  private readonly redis: Redis;
  private readonly channels: { readonly released: string; readonly changed: string };
  private readonly leaseMs: number;
  private readonly lockTimeoutMs: number;
  private readonly pollMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private readonly warn: (warning: RedisTokenStoreWarning) => void;
  /** The holding whose callback is running: load() and save() belong to it. */
  private readonly holdings = new AsyncLocalStorage<Holding>();
  private readonly subscriberOption: Redis | (() => Redis);
  private subscriber: { conn: Redis; owned: boolean } | undefined;
  private subscribing: Promise<void> | undefined;
  private readonly releaseWaiters = new Set<() => void>();
  private readonly grantListeners = new Set<(change: GrantChange) => void>();
  private durabilityChecked = false;
  private closed = false;

  constructor(options: RedisTokenStoreOptions) {
    this.redis = options.redis;
    this.leaseMs = options.leaseMs ?? 15_000;
    // Long enough for a holder to make a slow token call (its timeout is 15 s) and save.
    this.lockTimeoutMs = options.lockTimeoutMs ?? 45_000;
    this.pollMs = options.pollMs ?? 500;
    this.timeoutMs = options.timeoutMs ?? 3_000;
    this.now = options.now ?? Date.now;
    this.subscriberOption = options.subscriber ?? (() => this.redis.duplicate());
    const prefix = options.prefix;
    const db = this.redis.options.db ?? 0;
    this.keys = { grant: `${prefix}token:grant`, lock: `${prefix}token:lock` };
    this.channels = { released: `${prefix}token:released@${db}`, changed: `${prefix}token:changed@${db}` };
    this.location = `${describeRedis(this.redis.options)} (prefix ${prefix})`;
    this.warn = deliverSafely(options.onWarning);
  }

  // The lock. SET NX PX with a random owner token; renewed every leaseMs/3 by a script that
  // extends it only while it is still ours; released by compare-and-delete, which publishes on
  // the release channel. A holder that dies frees the lock when its lease ends; one that stalls
  // longer than the lease loses it, and its save is then refused (fenced): the save script
  // checks the owner token in the same step as it writes. Waiters wait for a release message,
  // or the end of the holder's lease, or a poll (pub/sub may be down, a message may be lost).

  /** Redis answers, and the lock can be taken and released (a read-only replica or a refusing ACL fails here). */
  async checkWritable(): Promise<void> {
    await this.withLock(() => Promise.resolve());
  }

  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const current = this.holdings.getStore();
    // Already inside one of our holdings (fn called withLock): the lock is ours.
    if (current !== undefined && !current.released) return fn();
    const holding = await this.acquire();
    try {
      return await this.holdings.run(holding, fn);
    } finally {
      await this.release(holding);
    }
  }

  private async acquire(): Promise<Holding> {
    const owner = `${hostname()}/${process.pid}/${randomBytes(16).toString('hex')}`;
    // Real time, whatever clock `now` is: this is how long we wait.
    const deadline = Date.now() + this.lockTimeoutMs;
    let leaseLeft = await this.tryTake(owner);
    if (leaseLeft === undefined) return this.hold(owner);
    // Contended: from now on a release message wakes us. Without pub/sub we poll.
    await this.subscribe().catch(() => undefined);
    for (;;) {
      // Armed before the try: a release between a failed try and the wait still wakes us.
      const released = this.nextRelease();
      try {
        leaseLeft = await this.tryTake(owner);
      } catch (err) {
        released.cancel();
        throw err;
      }
      if (leaseLeft === undefined) {
        released.cancel();
        return this.hold(owner);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        released.cancel();
        throw new TokenStoreError(
          `token store ${this.location}: the lock (${this.keys.lock}) is held by another process; its lease ends ${this.leaseMs} ms after its holder stops renewing it (if it has no expiry, delete the key)`,
        );
      }
      // Released between our try and its PTTL: try again at once.
      if (leaseLeft === -2) {
        released.cancel();
        continue;
      }
      let wait = this.pollMs / 2 + (Math.random() * this.pollMs) / 2;
      // A holder that died: its lease ends before the next poll.
      if (leaseLeft >= 0) wait = Math.min(wait, leaseLeft + 1);
      if ((await released.wait(Math.min(wait, left))) === 'released') this.stats.wokenByRelease++;
      else this.stats.wokenByPoll++;
    }
  }

  /** One try: undefined when the lock is now ours, else how long the holder's lease has left (ms; -1 no expiry, -2 gone). */
  private async tryTake(owner: string): Promise<number | undefined> {
    this.stats.attempts++;
    let reply: unknown;
    try {
      reply = await this.call(this.redis, 'take the lock', () =>
        this.redis.eval(ACQUIRE, 1, this.keys.lock, owner, this.leaseMs),
      );
    } catch (err) {
      // The try may have taken the lock and only its answer been lost (a timeout): give it
      // back rather than leave it to its lease. Compare-and-delete: only ever our own lock.
      this.redis.eval(RELEASE, 1, this.keys.lock, owner, this.channels.released).catch(() => undefined);
      throw err;
    }
    const [taken, pttl] = Array.isArray(reply) ? (reply as unknown[]) : [];
    if (typeof taken !== 'number' || typeof pttl !== 'number') throw this.unexpected('take the lock');
    return taken === 1 ? undefined : pttl;
  }

  private hold(owner: string): Holding {
    const holding: Holding = {
      owner,
      since: this.now(),
      readGeneration: undefined,
      lost: false,
      lostReported: false,
      released: false,
      timer: undefined,
    };
    this.renewLater(holding);
    return holding;
  }

  private renewLater(holding: Holding): void {
    const every = Math.max(1, Math.floor(this.leaseMs / 3));
    holding.timer = setTimeout(() => void this.renew(holding, every), every);
    holding.timer.unref();
  }

  private async renew(holding: Holding, every: number): Promise<void> {
    if (holding.released || holding.lost) return;
    try {
      const kept = await this.call(this.redis, 'renew the lock', () =>
        this.redis.eval(RENEW, 1, this.keys.lock, holding.owner, this.leaseMs),
      );
      if (holding.released) return;
      if (kept !== 1) {
        this.lockLost(holding);
        return;
      }
      this.stats.renewals++;
    } catch {
      // Redis away: try again. Should the lease run out meanwhile, the save script refuses.
    }
    if (holding.released || holding.lost) return;
    holding.timer = setTimeout(() => void this.renew(holding, every), every);
    holding.timer.unref();
  }

  private async release(holding: Holding): Promise<void> {
    holding.released = true;
    clearTimeout(holding.timer);
    let removed: unknown;
    try {
      removed = await this.call(this.redis, 'release the lock', () =>
        this.redis.eval(RELEASE, 1, this.keys.lock, holding.owner, this.channels.released),
      );
    } catch {
      // Redis away: the lease frees the lock. What fn did stands; failing withLock would undo nothing.
      return;
    }
    if (removed !== 1) this.lockLost(holding);
  }

  /** The lock is no longer ours: saves under this holding are refused; said once. */
  private lockLost(holding: Holding): void {
    holding.lost = true;
    if (holding.lostReported) return;
    holding.lostReported = true;
    const heldMs = this.now() - holding.since;
    this.warn({
      event: 'token_store_lock_lost',
      path: `${this.location} key ${this.keys.lock}`,
      heldMs,
      message: `token store ${this.location}: the lock ${this.keys.lock} was lost after this process had held it for ${heldMs} ms (its lease of ${this.leaseMs} ms ran out: this process or Redis stalled, or the key was deleted); nothing more is saved under it. Another process may have refreshed meanwhile: if the proxy reports reauthorization_required, authorize again, and look for what stalled`,
    });
  }

  async load(): Promise<Grant | undefined> {
    const [text, generation] = await this.call(this.redis, 'read the grant', () =>
      this.redis.hmget(this.keys.grant, 'grant', 'generation'),
    );
    const holding = this.holdings.getStore();
    // What a save under this holding compares with, even when what is stored is not a grant.
    if (holding !== undefined && !holding.released) holding.readGeneration = parseGeneration(generation);
    if (text === null || text === undefined) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new TokenStoreError(
        `token store ${this.location}: ${this.keys.grant} is not valid JSON; restore it or delete the key and re-authorize`,
        err,
      );
    }
    if (!isGrant(parsed))
      throw new TokenStoreError(
        `token store ${this.location}: ${this.keys.grant} does not hold a grant; restore it or delete the key and re-authorize`,
      );
    return parsed;
  }

  /**
   * Only under withLock, and only while the lock is still ours. If load() ran under this
   * holding, only over the generation it read (nothing stored meanwhile by anyone else);
   * if it did not, the grant replaces whatever is stored: that is an authorization's save
   * (adoptGrant, `keap-proxy auth`), or a grant Keap issued that an earlier save failed to store.
   */
  async save(grant: Grant): Promise<void> {
    const holding = this.holdings.getStore();
    if (holding === undefined || holding.released)
      throw new TokenStoreError(`token store ${this.location}: a grant is saved only while the lock is held`);
    if (holding.lost) throw this.fenced();
    let text: string;
    try {
      text = JSON.stringify(grant);
    } catch (err) {
      // The message says what failed, never what the grant holds.
      throw new TokenStoreError(
        `token store ${this.location}: the grant cannot be serialized (${reasonOf(err)}); nothing was saved`,
        err,
      );
    }
    const expected = holding.readGeneration === undefined ? '' : String(holding.readGeneration);
    const reply = await this.call(this.redis, 'save the grant', () =>
      this.redis.eval(SAVE, 2, this.keys.lock, this.keys.grant, holding.owner, expected, text, this.channels.changed),
    );
    const [, status, generation] = Array.isArray(reply) ? (reply as unknown[]) : [];
    if ((status !== 'saved' && status !== 'lock' && status !== 'generation') || typeof generation !== 'number')
      throw this.unexpected('save the grant');
    if (status === 'lock') {
      this.lockLost(holding);
      throw this.fenced();
    }
    if (status === 'generation')
      throw new TokenStoreError(
        `token store ${this.location}: the grant in Redis changed since this process read it (generation ${expected} then, ${generation} now), so it was not saved over; something wrote ${this.keys.grant} without holding the lock`,
      );
    holding.readGeneration = generation;
    await this.checkDurability();
  }

  private fenced(): TokenStoreError {
    return new TokenStoreError(
      `token store ${this.location}: the lock is no longer held by this process (its lease ran out), so the grant was not saved`,
    );
  }

  /**
   * Calls `listener` with the new generation whenever a grant is saved (by any process): a
   * broker can re-read the store at once instead of at its next poll. Resolves once subscribed;
   * the returned function stops the calls.
   */
  async onGrantChanged(listener: (change: GrantChange) => void): Promise<() => void> {
    this.grantListeners.add(listener);
    try {
      await this.subscribe();
    } catch (err) {
      this.grantListeners.delete(listener);
      throw err;
    }
    return () => {
      this.grantListeners.delete(listener);
    };
  }

  /** Closes the pub/sub connection if the store made it; the command client is the caller's. */
  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.releaseWaiters) wake();
    this.grantListeners.clear();
    const sub = this.subscriber;
    this.subscriber = undefined;
    this.subscribing = undefined;
    if (sub === undefined) return;
    sub.conn.off('message', this.onMessage);
    if (sub.owned) sub.conn.disconnect();
    else await sub.conn.unsubscribe(this.channels.released, this.channels.changed).catch(() => undefined);
  }

  private readonly onMessage = (channel: string, message: string): void => {
    if (channel === this.channels.released) {
      for (const wake of this.releaseWaiters) wake();
    } else if (channel === this.channels.changed) {
      const generation = Number(message);
      if (!Number.isSafeInteger(generation)) return;
      for (const listener of this.grantListeners) {
        try {
          listener({ generation });
        } catch {
          // A listener's failure is its own.
        }
      }
    }
  };

  private subscribe(): Promise<void> {
    if (this.closed) return Promise.reject(new TokenStoreError(`token store ${this.location} is closed`));
    this.subscribing ??= (async () => {
      if (this.subscriber === undefined) {
        const option = this.subscriberOption;
        const conn = typeof option === 'function' ? option() : option;
        // An owned connection's errors are reconnects; the caller hears of Redis being away from the operations.
        if (typeof option === 'function') conn.on('error', () => undefined);
        conn.on('message', this.onMessage);
        this.subscriber = { conn, owned: typeof option === 'function' };
      }
      const conn = this.subscriber.conn;
      // ioredis subscribes again by itself after a reconnect.
      await this.call(conn, 'subscribe', () => conn.subscribe(this.channels.released, this.channels.changed));
    })().catch((err: unknown) => {
      this.subscribing = undefined;
      throw err;
    });
    return this.subscribing;
  }

  /** Resolves on the next release message, or after a time; cancel() when no longer waiting. */
  private nextRelease(): { wait(ms: number): Promise<'released' | 'timer'>; cancel(): void } {
    let fired = false;
    let resolveWait: ((how: 'released' | 'timer') => void) | undefined;
    const wake = (): void => {
      fired = true;
      this.releaseWaiters.delete(wake);
      resolveWait?.('released');
    };
    this.releaseWaiters.add(wake);
    return {
      wait: (ms) =>
        new Promise((resolve) => {
          if (fired) return resolve('released');
          const timer = setTimeout(() => {
            this.releaseWaiters.delete(wake);
            resolve('timer');
          }, ms);
          resolveWait = (how) => {
            clearTimeout(timer);
            resolve(how);
          };
        }),
      cancel: () => {
        this.releaseWaiters.delete(wake);
      },
    };
  }

  /** Once per store, after the first save: a Redis that keeps no append-only file can lose the grant. */
  private async checkDurability(): Promise<void> {
    if (this.durabilityChecked) return;
    this.durabilityChecked = true;
    let info: string;
    try {
      info = await this.call(this.redis, 'read INFO persistence', () => this.redis.info('persistence'));
    } catch {
      return; // INFO may be disabled (a managed Redis): nothing to say.
    }
    if (!/^aof_enabled:0\s*$/m.test(info)) return;
    this.warn({
      event: 'token_store_not_durable',
      path: this.location,
      message: `token store ${this.location}: Redis keeps no append-only file (aof_enabled:0), so a Redis restart loses the grants saved since its last snapshot, and Keap has already killed the refresh tokens before them; run Redis with appendonly yes (appendfsync everysec or always), or be ready to authorize again after a Redis restart`,
    });
  }

  /** One Redis call, bounded by timeoutMs from the start (a connection not yet ready is waited for within it). */
  private async call<T>(conn: Redis, what: string, op: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    try {
      await waitReady(conn, this.timeoutMs);
      return await withTimeout(op(), deadline - Date.now());
    } catch (err) {
      throw this.unavailable(what, err);
    }
  }

  private unexpected(what: string): TokenStoreError {
    return new TokenStoreError(`token store ${this.location}: unexpected reply from Redis when trying to ${what}`);
  }

  private unavailable(what: string, err: unknown): TokenStoreError {
    if (err instanceof TokenStoreError) return err;
    if (isReplyError(err))
      return new TokenStoreError(`token store ${this.location}: Redis refused to ${what} (${reasonOf(err)})`, err);
    return new TokenStoreError(
      `token store ${this.location}: Redis is unavailable, could not ${what} (${reasonOf(err)})`,
      err,
    );
  }
}

/** Where the client points, without credentials: redis://host:port/db, rediss:// with TLS. */
function describeRedis(options: RedisOptions): string {
  // ioredis fills its defaults in with null, not undefined.
  const db = options.db ?? 0;
  if (options.sentinels != null && options.sentinels.length > 0)
    return `redis-sentinel://${options.name ?? 'mymaster'}/${db}`;
  if (options.path != null) return `redis+unix://${options.path}?db=${db}`;
  const host = options.host ?? 'localhost';
  const scheme = options.tls != null ? 'rediss' : 'redis';
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${options.port ?? 6379}/${db}`;
}

class Timeout extends Error {
  constructor(readonly ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = 'Timeout';
  }
}

/** One wait per connection, however many calls wait for it (each with its own timeout). */
const readyWaits = new WeakMap<Redis, Promise<void>>();

function waitReady(conn: Redis, ms: number): Promise<void> {
  if (conn.status === 'ready') return Promise.resolve();
  if (conn.status === 'end') return Promise.reject(new Error('the connection was closed'));
  if (conn.status === 'wait') conn.connect().catch(() => undefined);
  let ready = readyWaits.get(conn);
  if (ready === undefined) {
    ready = new Promise<void>((resolve, reject) => {
      const onReady = (): void => {
        conn.off('end', onEnd);
        resolve();
      };
      const onEnd = (): void => {
        conn.off('ready', onReady);
        reject(new Error('the connection was closed'));
      };
      conn.once('ready', onReady);
      conn.once('end', onEnd);
    });
    const settled = ready;
    readyWaits.set(conn, settled);
    const forget = (): void => {
      if (readyWaits.get(conn) === settled) readyWaits.delete(conn);
    };
    settled.then(forget, forget);
  }
  return withTimeout(ready, ms, () => new NotConnected(ms));
}

class NotConnected extends Error {
  constructor(ms: number) {
    super(`not connected within ${ms} ms`);
    this.name = 'NotConnected';
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout?: () => Error): Promise<T> {
  const wait = Math.max(0, ms);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout?.() ?? new Timeout(wait)), wait);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

function isReplyError(err: unknown): boolean {
  return err instanceof Error && err.name === 'ReplyError';
}

/**
 * A short cause for a message: an errno code, the first word of a Redis error reply (WRONGTYPE,
 * NOPERM...), or what our own checks say; never the text of a reply, which could quote data.
 */
function reasonOf(err: unknown): string {
  if (err instanceof Timeout || err instanceof NotConnected) return err.message;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string') return code;
  if (!(err instanceof Error)) return 'error';
  if (isReplyError(err)) return /^[A-Z][A-Z_-]*/.exec(err.message)?.[0] ?? 'error reply';
  if (/enableOfflineQueue|Stream isn't writeable/.test(err.message)) return 'not connected';
  if (/Connection is closed|connection was closed/i.test(err.message)) return 'connection closed';
  return err.name;
}

function parseGeneration(value: string | null | undefined): number {
  const n = value === null || value === undefined ? 0 : Number(value);
  return Number.isSafeInteger(n) && n >= 0 ? n : 0;
}
