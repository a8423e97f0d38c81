// Replicas sharing one Keap grant through Redis (TOKEN_STORE=redis): each is a real
// keap-proxy (startProxy) on a redis-server of the test's own, in front of the simulator.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { startProxy, type RunningProxy } from '../src/http/server.js';
import { createLogger } from '../src/observability/log.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { LogCapture, oauthEnv, send, tempDir, until, SIM_SEED } from './harness.js';
import { startRedisServer, type RedisServer } from './redis-server.js';

let redis: RedisServer;
let sim: KeapSimulator;
const running: RunningProxy[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  await redis.stop();
});
afterEach(async () => {
  for (const p of running.splice(0)) await p.close();
  await sim.close();
  await redis.client({ enableOfflineQueue: true }).flushall();
});

async function replica(
  env: Record<string, string> = {},
  now?: () => number,
): Promise<{ proxy: RunningProxy; logs: LogCapture }> {
  const logs = new LogCapture();
  const config = loadConfig({
    env: {
      ...oauthEnv(sim, tempDir()),
      TOKEN_STORE: `redis://${redis.host}:${redis.port}/0`,
      REDIS_PREFIX: 'replicas-test:',
      LOG_LEVEL: 'info',
      ...env,
    },
    cwd: tempDir(),
  });
  const proxy = await startProxy(config, { logger: createLogger(config.logLevel, logs), now });
  running.push(proxy);
  return { proxy, logs };
}

describe('replicas on one Redis', () => {
  it('a replica started with a stale seed serves from the grant in Redis: one token call in all, no invalid_grant', async () => {
    sim = await KeapSimulator.start();
    const a = await replica();
    expect((await send(a.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    // The seed is dead now: Keap rotated it on a's refresh.
    expect(sim.currentRefreshToken()).not.toBe(SIM_SEED);
    const b = await replica();
    expect((await send(b.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(sim.counters.tokenCalls).toBe(1);
    expect(sim.counters.invalidGrants).toBe(0);
  });

  it('a 401 storm after expiry, spread over three replicas, makes exactly one refresh', async () => {
    sim = await KeapSimulator.start();
    const replicas = [await replica(), await replica(), await replica()];
    for (const r of replicas) expect((await send(r.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    const before = sim.counters.refreshGrants;
    sim.expireAccessTokens();
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        send((replicas[i % 3] as { proxy: RunningProxy }).proxy.url, 'POST', '/crm/rest/v1/contacts', {
          body: JSON.stringify({
            given_name: `n${i}`,
            email_addresses: [{ email: `n${i}@example.com`, field: 'EMAIL1' }],
          }),
          headers: { 'content-type': 'application/json' },
        }),
      ),
    );
    expect(answers.map((r) => r.status)).toEqual(Array.from({ length: 30 }, () => 201));
    expect(sim.counters.refreshGrants - before).toBe(1);
    expect(sim.counters.invalidGrants).toBe(0);
  });

  it('Redis down: the held token still serves and /readyz says so; Redis back empty: the grant is written back, no invalid_grant', async () => {
    sim = await KeapSimulator.start();
    // Pacing on (shared through the same Redis), far above what the test sends.
    const a = await replica({ RATE_LIMIT_PER_SECOND: '1000' });
    expect((await send(a.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    await redis.kill();
    await until('/readyz to report Redis down', async () => {
      const ready = await send(a.proxy.url, 'GET', '/readyz');
      return (
        ready.status === 200 && ready.json<{ tokenStore?: { connected: boolean } }>().tokenStore?.connected === false
      );
    });
    expect((await send(a.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(a.logs.entries.some((e) => e.event === 'redis_down')).toBe(true);
    // Pacing goes on, to this replica's share, and says so.
    expect((await send(a.proxy.url, 'GET', '/readyz')).json<{ pacing: string }>().pacing).toBe('local_share');
    expect(a.logs.entries.some((e) => e.event === 'pacing_fallback')).toBe(true);

    // Back, with nothing in it (no persistence).
    await redis.restart();
    await until('the grant to be written back', () => a.logs.entries.some((e) => e.event === 'grant_written_back'));
    // A new replica started from the (dead) seed finds the live grant and never shows Keap the seed.
    const b = await replica();
    sim.expireAccessTokens();
    expect((await send(b.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect((await send(a.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(sim.counters.invalidGrants).toBe(0);
    const ready = (await send(a.proxy.url, 'GET', '/readyz')).json<{ tokenStore: { connected: boolean } }>();
    expect(ready.tokenStore.connected).toBe(true);
  });

  it('Redis down and the token expired: no refresh without the lock, clients get 503 token_unavailable', async () => {
    sim = await KeapSimulator.start();
    const a = await replica();
    expect((await send(a.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    const calls = sim.counters.tokenCalls;
    await redis.kill();
    await until('Redis to be seen down', () => a.logs.entries.some((e) => e.event === 'redis_down'));
    // Keap now rejects the held token (Apigee's 401 token fault).
    sim.expireAccessTokens();
    const r = await send(a.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(503);
    expect(r.json()).toMatchObject({ error: 'token_unavailable' });
    expect(r.headers['retry-after']).toBeDefined();
    expect(sim.counters.tokenCalls).toBe(calls);
    await redis.restart();
  });
});

describe('replicas pacing to one shared quota (REDIS_URL)', () => {
  it("a burst spread over three replicas stays within Keap's spike limit: every client gets 200, hardly a 429 upstream", async () => {
    sim = await KeapSimulator.start();
    // Keap's spike arrest at L per second; each replica alone would pace to 0.9 L, three to 2.7 L.
    const L = 20;
    sim.setRatePerSecond(L);
    const env = { REDIS_URL: `redis://${redis.host}:${redis.port}/0`, RATE_LIMIT_PER_SECOND: String(L) };
    const three = [await replica(env), await replica(env), await replica(env)];
    for (const r of three)
      expect((await send(r.proxy.url, 'GET', '/readyz')).json<{ pacing: string }>().pacing).toBe('shared');
    const before = sim.counters.throttled;
    const answers = await Promise.all(
      Array.from({ length: 2 * L }, (_, i) =>
        send((three[i % 3] as { proxy: RunningProxy }).proxy.url, 'GET', '/crm/rest/v1/contacts'),
      ),
    );
    expect(answers.map((r) => r.status)).toEqual(answers.map(() => 200));
    // Timer jitter may let one slip through Apigee's smoothed window; three unshared pacers would draw dozens.
    expect(sim.counters.throttled - before).toBeLessThanOrEqual(2);
  });
});

describe('replicas started together from one seed', () => {
  it('one of them exchanges the seed; the others take its grant from Redis, never the dead seed', async () => {
    sim = await KeapSimulator.start();
    // All three read an empty Redis, then queue for the lock: the later ones must not use the
    // seed the first one has already rotated, whatever the dates on the grants. Two of them
    // have clocks a minute ahead, so their seeds are dated after the first one's new grant.
    const ahead = (): number => Date.now() + 60_000;
    const three = await Promise.all([replica(), replica({}, ahead), replica({}, ahead)]);
    for (const r of three) expect((await send(r.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(sim.counters.refreshGrants).toBe(1);
    expect(sim.counters.invalidGrants).toBe(0);
  });
});
