// RedisTokenStore against a real redis-server of this file's own: the grant and its generation,
// the leased and fenced lock across connections, waiters woken by pub/sub, Redis going away and
// coming back, and two token brokers sharing one grant. Counts and order, never speed: leases
// are short so that the file runs fast, and nothing asserts how fast anything went.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { Redis } from 'ioredis';
import type { Grant } from '../src/tokens/grant.js';
import { testGrant } from './grants.js';
import { TokenStoreError } from '../src/tokens/token-store.js';
import {
  RedisTokenStore,
  type RedisTokenStoreOptions,
  type RedisTokenStoreWarning,
} from '../src/tokens/redis-token-store.js';
import { TokenBroker } from '../src/tokens/token-broker.js';
import { TokenClient } from '../src/tokens/token-client.js';
import { createLogger } from '../src/observability/log.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_SEED } from './harness.js';
import { startRedisServer, type RedisServer } from './redis-server.js';

const ACCESS = 'access-token-that-must-not-show';
const REFRESH = 'refresh-token-that-must-not-show';

function grant(extra: Partial<Grant> = {}): Grant {
  return testGrant({ accessToken: ACCESS, refreshToken: REFRESH, ...extra });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Waits for a condition, however long the machine takes (up to 10 s); asserts nothing about time. */
async function until(what: string, probe: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A promise and the function that settles it. */
function signal(): { promise: Promise<void>; fire: () => void } {
  let fire = (): void => undefined;
  const promise = new Promise<void>((r) => (fire = r));
  return { promise, fire };
}

/** What a rejection was; the test fails if there was none. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  return err as Error;
}

function expectNoTokens(err: Error): void {
  for (const secret of [ACCESS, REFRESH, 'second', 'third']) expect(err.message).not.toContain(secret);
}

let server: RedisServer;
let raw: Redis;
beforeAll(async () => {
  server = await startRedisServer();
  // The test's own tool: its commands wait for the connection rather than fail.
  raw = server.client({ enableOfflineQueue: true });
});
afterAll(async () => {
  await server?.stop();
});

const stores: RedisTokenStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
});

let prefixes = 0;
const nextPrefix = (): string => `test-${process.pid}-${++prefixes}:`;

interface Made {
  store: RedisTokenStore;
  warnings: RedisTokenStoreWarning[];
}

/** A store on a connection of its own (its own pub/sub connection too), as in another replica. */
function newStore(prefix: string, options: Partial<RedisTokenStoreOptions> = {}, on: RedisServer = server): Made {
  const warnings: RedisTokenStoreWarning[] = [];
  const store = new RedisTokenStore({
    redis: on.client(),
    prefix,
    timeoutMs: 1_000,
    onWarning: (w) => warnings.push(w),
    ...options,
  });
  stores.push(store);
  return { store, warnings };
}

const lockWarnings = (ws: RedisTokenStoreWarning[]): RedisTokenStoreWarning[] =>
  ws.filter((w) => w.event === 'token_store_lock_lost');

describe('the grant', () => {
  it('round trip: nothing, then what was saved; the location names the server and prefix, never a password', async () => {
    const prefix = nextPrefix();
    const { store } = newStore(prefix);
    expect(store.location).toBe(`redis://127.0.0.1:${server.port}/0 (prefix ${prefix})`);
    expect(await store.load()).toBeUndefined();
    await store.withLock(() => store.save(grant()));
    expect(await store.load()).toEqual(grant());
    // Another replica reads the same grant.
    expect(await newStore(prefix).store.load()).toEqual(grant());
    expect(await raw.hget(store.keys.grant, 'generation')).toBe('1');

    const guarded = new Redis({ ...server.clientOptions(), password: 'sekret-password', db: 3, lazyConnect: true });
    try {
      const location = new RedisTokenStore({ redis: guarded, prefix: 'p:' }).location;
      expect(location).toBe(`redis://127.0.0.1:${server.port}/3 (prefix p:)`);
      expect(location).not.toContain('sekret');
    } finally {
      guarded.disconnect();
    }
  });

  it('a save outside withLock is refused', async () => {
    const { store } = newStore(nextPrefix());
    const err = await rejection(store.save(grant()));
    expect(err).toBeInstanceOf(TokenStoreError);
    expect(err.message).toMatch(/saved only while the lock is held/);
    expect(await store.load()).toBeUndefined();
  });

  it('what is stored and is not a grant fails load with TokenStoreError; a save under the lock replaces it', async () => {
    const { store } = newStore(nextPrefix());
    await raw.hset(store.keys.grant, 'grant', `{"refreshToken":"${REFRESH}"`, 'generation', '4');
    const notJson = await rejection(store.load());
    expect(notJson).toBeInstanceOf(TokenStoreError);
    expect(notJson.message).toMatch(/is not valid JSON; restore it or delete the key and re-authorize/);
    await raw.hset(store.keys.grant, 'grant', JSON.stringify({ refreshToken: REFRESH }));
    const notGrant = await rejection(store.load());
    expect(notGrant.message).toMatch(/does not hold a grant/);
    for (const err of [notJson, notGrant]) expectNoTokens(err);
    // The broker reads (and fails) under the lock, refreshes, and saves over the broken value.
    await store.withLock(async () => {
      await store.load().catch(() => undefined);
      await store.save(grant({ accessToken: 'repaired' }));
    });
    expect((await store.load())?.accessToken).toBe('repaired');
    expect(await raw.hget(store.keys.grant, 'generation')).toBe('5');
  });

  it('a Redis without an append-only file is reported once, after the first save', async () => {
    const { store, warnings } = newStore(nextPrefix());
    await store.withLock(() => store.save(grant()));
    await store.withLock(() => store.save(grant()));
    const durability = warnings.filter((w) => w.event === 'token_store_not_durable');
    expect(durability).toHaveLength(1);
    expect(durability[0]?.message).toMatch(/aof_enabled:0.*appendonly yes/);
  });

  it('a grant change reaches onGrantChanged listeners with its generation, from any replica', async () => {
    const prefix = nextPrefix();
    const watcher = newStore(prefix).store;
    const seen: number[] = [];
    const stop = await watcher.onGrantChanged((c) => seen.push(c.generation));
    const writer = newStore(prefix).store;
    await writer.withLock(() => writer.save(grant()));
    await writer.withLock(() => writer.save(grant({ accessToken: 'second' })));
    await until('two change messages', () => seen.length === 2);
    expect(seen).toEqual([1, 2]);
    stop();
    await writer.withLock(() => writer.save(grant({ accessToken: 'third' })));
    // A listener on another store still hears, so the third message was sent; the stopped one did not get it.
    const other: number[] = [];
    await newStore(prefix).store.onGrantChanged((c) => other.push(c.generation));
    await writer.withLock(() => writer.save(grant()));
    await until('the fourth change message', () => other.length === 1);
    expect(seen).toEqual([1, 2]);
  });
});

describe('the generation check (compare-and-set)', () => {
  it('a store that read an older generation under its lock cannot save over a grant written meanwhile', async () => {
    const { store } = newStore(nextPrefix());
    await store.withLock(() => store.save(grant()));
    const err = await rejection(
      store.withLock(async () => {
        expect(await store.load()).toEqual(grant());
        // A writer that ignores the lock (a tool, another program) writes generation 2.
        await raw.hset(store.keys.grant, 'grant', JSON.stringify(grant({ accessToken: 'second' })), 'generation', '2');
        await store.save(grant({ accessToken: 'third' }));
      }),
    );
    expect(err).toBeInstanceOf(TokenStoreError);
    expect(err.message).toMatch(/changed since this process read it \(generation 1 then, 2 now\)/);
    expectNoTokens(err);
    expect((await store.load())?.accessToken).toBe('second');
  });

  it('a store that read nothing cannot overwrite a grant written meanwhile (the seed never wins over a stored grant)', async () => {
    const { store } = newStore(nextPrefix());
    const err = await rejection(
      store.withLock(async () => {
        expect(await store.load()).toBeUndefined();
        await raw.hset(store.keys.grant, 'grant', JSON.stringify(grant({ accessToken: 'second' })), 'generation', '1');
        await store.save(grant({ accessToken: 'from-the-seed' }));
      }),
    );
    expect(err.message).toMatch(/generation 0 then, 1 now/);
    expect((await store.load())?.accessToken).toBe('second');
  });

  it('saves follow one another under one holding; each holding compares with what it read', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix).store;
    const b = newStore(prefix).store;
    await a.withLock(async () => {
      await a.load();
      await a.save(grant({ accessToken: 'one' }));
      await a.save(grant({ accessToken: 'two' }));
    });
    await b.withLock(async () => {
      expect((await b.load())?.accessToken).toBe('two');
      await b.save(grant({ accessToken: 'three' }));
    });
    expect(await raw.hget(a.keys.grant, 'generation')).toBe('3');
    expect((await a.load())?.accessToken).toBe('three');
  });

  it('an authorization (a save with nothing read under the lock) replaces whatever is stored, even after an old read', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix).store;
    const b = newStore(prefix).store;
    expect(await a.load()).toBeUndefined(); // outside the lock: compares with nothing
    await b.withLock(() => b.save(grant({ accessToken: 'refreshed-by-b' })));
    // What the broker's adoptGrant and `keap-proxy auth` do.
    await a.withLock(() => a.save(grant({ accessToken: 'authorized' })));
    expect((await b.load())?.accessToken).toBe('authorized');
    expect(await raw.hget(a.keys.grant, 'generation')).toBe('2');
  });
});

describe('the lock', () => {
  it('two stores on separate connections, 10 callers each at once: one inside at a time, no update lost', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix, { pollMs: 100 }).store;
    const b = newStore(prefix, { pollMs: 100 }).store;
    await a.withLock(() => a.save(grant({ accessToken: '0' })));
    const events: string[] = [];
    let inside = 0;
    let most = 0;
    const increment = (store: RedisTokenStore, who: string) => () =>
      store.withLock(async () => {
        events.push(`enter ${who}`);
        inside += 1;
        most = Math.max(most, inside);
        const stored = await store.load();
        await tick();
        await store.save(grant({ accessToken: String(Number(stored?.accessToken) + 1) }));
        inside -= 1;
        events.push(`exit ${who}`);
      });
    await Promise.all(Array.from({ length: 10 }, (_, i) => [increment(a, `a${i}`)(), increment(b, `b${i}`)()]).flat());
    expect(most).toBe(1);
    expect(events).toHaveLength(40);
    for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]?.replace('enter', 'exit'));
    expect((await a.load())?.accessToken).toBe('20');
    expect(await raw.hget(a.keys.grant, 'generation')).toBe('21');
    expect(await raw.exists(a.keys.lock)).toBe(0);
  });

  it('a holder renews its lease: running five leases long, it keeps the lock and a second store waits', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix, { leaseMs: 300 });
    const b = newStore(prefix, { leaseMs: 300 });
    const order: string[] = [];
    const aHolds = signal();
    const first = a.store.withLock(async () => {
      order.push('a in');
      aHolds.fire();
      await sleep(1_500);
      await a.store.load();
      await a.store.save(grant());
      order.push('a out');
    });
    await aHolds.promise;
    const second = b.store.withLock(async () => {
      order.push('b in');
    });
    await Promise.all([first, second]);
    expect(order).toEqual(['a in', 'a out', 'b in']);
    expect(a.store.stats.renewals).toBeGreaterThanOrEqual(3);
    // b found the lock held more than once while it waited (its lease kept being renewed).
    expect(b.store.stats.attempts).toBeGreaterThanOrEqual(3);
    expect(lockWarnings(a.warnings)).toEqual([]);
  });

  it('a holder whose lock is deleted learns it at its next renewal: it warns once and cannot save', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix, { leaseMs: 300 });
    await a.store.withLock(() => a.store.save(grant()));
    const err = await rejection(
      a.store.withLock(async () => {
        await a.store.load();
        await raw.del(a.store.keys.lock);
        await until('the renewal to notice', () => a.warnings.some((w) => w.event === 'token_store_lock_lost'));
        await a.store.save(grant({ accessToken: 'second' }));
      }),
    );
    expect(err).toBeInstanceOf(TokenStoreError);
    expect(err.message).toMatch(/the lock is no longer held by this process .*so the grant was not saved/);
    expectNoTokens(err);
    expect(lockWarnings(a.warnings)).toHaveLength(1);
    expect(lockWarnings(a.warnings)[0]).toMatchObject({
      event: 'token_store_lock_lost',
      path: expect.stringContaining(a.store.keys.lock),
      heldMs: expect.any(Number),
    });
    expect((await a.store.load())?.accessToken).toBe(ACCESS);
  });

  it('a holder that lost its lock to another store is fenced by the save script, and its release leaves the new lock alone', async () => {
    const prefix = nextPrefix();
    // A long lease: no renewal runs before the save; the save script itself must refuse.
    const a = newStore(prefix, { leaseMs: 60_000 });
    const b = newStore(prefix, { leaseMs: 60_000 });
    await a.store.withLock(() => a.store.save(grant()));
    const bHolds = signal();
    const aDone = signal();
    let bResult: Promise<void> | undefined;
    const aErr = await rejection(
      a.store.withLock(async () => {
        await a.store.load();
        // The lease ran out (simulated): another replica takes the lock and saves.
        await raw.del(a.store.keys.lock);
        bResult = b.store.withLock(async () => {
          await b.store.load();
          await b.store.save(grant({ accessToken: 'second' }));
          bHolds.fire();
          await aDone.promise;
          // a has released by now: b's lock is still there.
          expect(await raw.exists(b.store.keys.lock)).toBe(1);
        });
        await bHolds.promise;
        await a.store.save(grant({ accessToken: 'third' }));
      }),
    );
    aDone.fire();
    await bResult;
    expect(aErr).toBeInstanceOf(TokenStoreError);
    expect(aErr.message).toMatch(/no longer held by this process/);
    expect(lockWarnings(a.warnings)).toHaveLength(1);
    expect(lockWarnings(b.warnings)).toEqual([]);
    expect((await a.store.load())?.accessToken).toBe('second');
    expect(await raw.hget(a.store.keys.grant, 'generation')).toBe('2');
  });

  it('a lock left by a holder that died is taken once its lease ends', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix, { leaseMs: 300, pollMs: 60_000 });
    await raw.set(a.store.keys.lock, 'dead-host/1/abandoned', 'PX', 300);
    expect(await a.store.withLock(async () => 'ran')).toBe('ran');
    // Nobody released it: the wait ended when the lease did, not by a message.
    expect(a.store.stats.wokenByRelease).toBe(0);
    expect(a.store.stats.wokenByPoll).toBeGreaterThanOrEqual(1);
    expect(await raw.exists(a.store.keys.lock)).toBe(0);
  });

  it('a waiter is woken by the release message, not by its poll', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix).store;
    // Polls a minute apart and a 15 s lease: only the message can wake it in time.
    const b = newStore(prefix, { pollMs: 60_000 }).store;
    const release = signal();
    const aHolds = signal();
    const first = a.withLock(async () => {
      aHolds.fire();
      await release.promise;
    });
    await aHolds.promise;
    const second = b.withLock(async () => 'b ran');
    // b tried, subscribed, tried again and now waits.
    await until('b to wait', () => b.stats.attempts === 2);
    release.fire();
    await first;
    expect(await second).toBe('b ran');
    expect(b.stats).toMatchObject({ attempts: 3, wokenByRelease: 1, wokenByPoll: 0 });
  });

  it('a live holder that keeps the lock past lockTimeoutMs makes a waiter fail with TokenStoreError', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix).store;
    const b = newStore(prefix, { lockTimeoutMs: 200, pollMs: 50 }).store;
    const release = signal();
    const aHolds = signal();
    const first = a.withLock(async () => {
      aHolds.fire();
      await release.promise;
    });
    await aHolds.promise;
    const err = await rejection(b.withLock(async () => 'never'));
    release.fire();
    await first;
    expect(err).toBeInstanceOf(TokenStoreError);
    expect(err.message).toMatch(/the lock \(.*token:lock\) is held by another process/);
  });

  it('a try whose answer comes too late gives the lock back instead of leaving it to its lease', async () => {
    const prefix = nextPrefix();
    const a = newStore(prefix, { timeoutMs: 100, leaseMs: 60_000 }).store;
    // Polls a minute apart: a lock left behind for its lease (a minute) would make b give up after 5 s.
    const b = newStore(prefix, { pollMs: 60_000, lockTimeoutMs: 5_000 }).store;
    // Redis holds every write for 300 ms: a's try is answered after a has given up on it.
    await raw.client('PAUSE', 300, 'WRITE');
    const err = await rejection(a.withLock(async () => 'never'));
    expect(err.message).toMatch(/Redis is unavailable, could not take the lock \(no answer within \d+ ms\)/);
    await raw.set(`${prefix}after-the-pause`, '1');
    expect(await b.withLock(async () => 'b ran')).toBe('b ran');
    expect(b.stats.wokenByPoll).toBe(0);
  });

  it('withLock inside withLock on one store runs at once (the lock is already ours)', async () => {
    const { store } = newStore(nextPrefix());
    const ran = await store.withLock(() =>
      store.withLock(async () => {
        await store.load();
        await store.save(grant());
        return 'inner';
      }),
    );
    expect(ran).toBe('inner');
    expect(await store.load()).toEqual(grant());
  });
});

describe('Redis away', () => {
  it('load, withLock and save reject with TokenStoreError while Redis is down, and work again once it is back', async () => {
    const own = await startRedisServer();
    try {
      const { store } = newStore('away:', { timeoutMs: 300, leaseMs: 300 }, own);
      await store.withLock(() => store.save(grant()));

      // Down in the middle of a holding: the save fails; the lease frees the lock later.
      const midway = await rejection(
        store.withLock(async () => {
          await store.load();
          await own.kill();
          await store.save(grant({ accessToken: 'second' }));
        }),
      );
      expect(midway).toBeInstanceOf(TokenStoreError);
      expect(midway.message).toMatch(/Redis is unavailable, could not save the grant/);

      const errors = [
        await rejection(store.load()),
        await rejection(store.withLock(async () => 'never')),
        await rejection(store.onGrantChanged(() => undefined)),
      ];
      for (const err of [midway, ...errors]) {
        expect(err).toBeInstanceOf(TokenStoreError);
        expect(err.message).toMatch(
          /^token store redis:\/\/127\.0\.0\.1:\d+\/0 \(prefix away:\): Redis is unavailable/,
        );
        expectNoTokens(err);
      }

      await own.restart();
      // ioredis reconnects by itself; the restarted server is empty (nothing on disk).
      await until('the store to reach Redis again', () =>
        store.load().then(
          (g) => g === undefined,
          () => false,
        ),
      );
      await store.withLock(async () => {
        expect(await store.load()).toBeUndefined();
        await store.save(grant({ accessToken: 'after' }));
      });
      expect((await store.load())?.accessToken).toBe('after');
    } finally {
      await own.stop();
    }
  });
});

describe('two token brokers on one Redis', () => {
  it('start and many concurrent refreshes across both make one token call each time; both hold the same grant', async () => {
    const sim = await KeapSimulator.start();
    const brokers: TokenBroker[] = [];
    try {
      const prefix = nextPrefix();
      const broker = (): TokenBroker => {
        const b = new TokenBroker({
          client: new TokenClient({
            tokenUrl: new URL(sim.tokenUrl),
            clientId: SIM_CLIENT_ID,
            clientSecret: SIM_CLIENT_SECRET,
          }),
          store: newStore(prefix, { leaseMs: 2_000, pollMs: 100 }).store,
          logger: createLogger('silent'),
          seedRefreshToken: SIM_SEED,
        });
        brokers.push(b);
        return b;
      };
      const [a, b] = [broker(), broker()];
      const token = async (x: TokenBroker): Promise<string> => {
        const c = await x.get();
        return c.kind === 'bearer' ? c.token : '';
      };

      // Both start on an empty store with the same seed: it is exchanged once.
      await Promise.all([a.start(), b.start()]);
      expect(sim.counters.refreshGrants).toBe(1);
      expect(await token(a)).not.toBe('');
      expect(await token(a)).toBe(await token(b));

      for (let round = 2; round <= 3; round++) {
        await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).refresh()));
        expect(sim.counters.refreshGrants).toBe(round);
        expect(await token(a)).toBe(await token(b));
      }
      expect(sim.counters.tokenCalls).toBe(3);
      expect(sim.counters.invalidGrants).toBe(0);
      const stored = await newStore(prefix).store.load();
      expect(stored?.accessToken).toBe(await token(a));
      expect(stored?.refreshToken).toBe(sim.currentRefreshToken());
    } finally {
      for (const b of brokers) b.stop();
      await sim.close();
    }
  });
});
