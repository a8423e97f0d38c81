// Three keap-proxy processes on one redis-server of the test's own, sharing one grant, in front
// of the simulator: what only separate processes can show (kill -9 mid-refresh, SIGTERM).
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import type { ServerResponse } from 'node:http';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { oauthEnv, send, tempDir, until } from './harness.js';
import { startRedisServer, type RedisServer } from './redis-server.js';
import { spawnProxy, type ProxyProcess } from './proxy-process.js';

/** Short, so a dead holder's lease ends within the test; the slow token call outlasts it several times. */
const LEASE_MS = 300;

let redis: RedisServer;
let sim: KeapSimulator;
const procs: ProxyProcess[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  await redis.stop();
});
afterEach(async () => {
  for (const p of procs.splice(0)) {
    p.kill('SIGKILL');
    await p.exited;
  }
  await sim.close();
  await redis.client({ enableOfflineQueue: true }).flushall();
});

async function replicas(n: number, env: Record<string, string> = {}): Promise<ProxyProcess[]> {
  const started = await Promise.all(
    Array.from({ length: n }, () => {
      const dir = tempDir();
      return spawnProxy(
        {
          ...oauthEnv(sim, dir),
          TOKEN_STORE: `redis://${redis.host}:${redis.port}/0`,
          REDIS_PREFIX: 'processes:',
          REDIS_LOCK_LEASE_MS: String(LEASE_MS),
          LOG_LEVEL: 'info',
          ...env,
        },
        dir,
      );
    }),
  );
  procs.push(...started);
  return started;
}

async function allServe(list: ProxyProcess[]): Promise<void> {
  for (const p of list) expect((await send(p.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
}

describe('replica processes on one Redis', () => {
  it('a 401 storm over three, while the token endpoint outlasts the lock lease, makes exactly one refresh', async () => {
    sim = await KeapSimulator.start();
    const three = await replicas(3);
    await allServe(three);
    const before = { refreshes: sim.counters.refreshGrants, calls: sim.counters.tokenCalls };
    sim.setTokenEndpointDelayMs(4 * LEASE_MS);
    sim.expireAccessTokens();
    const answers = await Promise.all(
      Array.from({ length: 15 }, (_, i) => send((three[i % 3] as ProxyProcess).url, 'GET', '/crm/rest/v1/contacts')),
    );
    expect(answers.map((r) => r.status)).toEqual(Array.from({ length: 15 }, () => 200));
    // Without renewal another replica would take the lock mid-call and refresh with a dead token.
    expect(sim.counters.refreshGrants - before.refreshes).toBe(1);
    expect(sim.counters.tokenCalls - before.calls).toBe(1);
    expect(sim.counters.invalidGrants).toBe(0);
  });

  it('kill -9 of the refreshing replica after its commit costs nothing; a replica started from the stale seed serves from Redis', async () => {
    sim = await KeapSimulator.start();
    const [a, b, c] = (await replicas(3)) as [ProxyProcess, ProxyProcess, ProxyProcess];
    await allServe([a, b, c]);
    sim.expireAccessTokens();
    expect((await send(a.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    const calls = sim.counters.tokenCalls;
    a.kill('SIGKILL');
    await a.exited;
    await allServe([b, c]);
    // b and c found a's grant in Redis: no token call of their own, nothing dead.
    expect(sim.counters.tokenCalls).toBe(calls);
    // A replica started now from the Secret's seed (long dead) serves from the grant in Redis.
    const [d] = (await replicas(1)) as [ProxyProcess];
    await allServe([d]);
    expect(sim.counters.tokenCalls).toBe(calls);
    expect(sim.counters.invalidGrants).toBe(0);
  });

  it('kill -9 of the lock holder before its commit: another replica takes over once the lease ends', async () => {
    sim = await KeapSimulator.start();
    const [a, b] = (await replicas(2)) as [ProxyProcess, ProxyProcess];
    await allServe([a, b]);
    const calls = sim.counters.tokenCalls;
    // Keap never answers a's refresh, so the refresh token is never rotated.
    sim.setTokenEndpointMode('hang');
    sim.expireAccessTokens();
    void send(a.url, 'GET', '/crm/rest/v1/contacts').catch(() => undefined);
    await until("a's refresh to reach Keap", () => sim.counters.tokenCalls === calls + 1);
    a.kill('SIGKILL');
    await a.exited;
    sim.setTokenEndpointMode('ok');
    expect((await send(b.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(sim.counters.refreshGrants).toBeGreaterThan(0);
    expect(sim.counters.invalidGrants).toBe(0);
  });

  it('SIGTERM: readyz 503 at once, the request in flight finishes, `stopped` with the counts, exit 0', async () => {
    sim = await KeapSimulator.start();
    const held: ServerResponse[] = [];
    sim.route('GET', '/crm/rest/v1/slow', (_req, res) => held.push(res));
    const [a] = (await replicas(1, { SHUTDOWN_DELAY_MS: '2000', SHUTDOWN_GRACE_MS: '10000' })) as [ProxyProcess];
    await allServe([a]);
    const slow = send(a.url, 'GET', '/crm/rest/v1/slow').then(
      (r) => r,
      (err: unknown) => err as Error,
    );
    await until('the slow request to reach Keap', () => held.length === 1);
    a.kill('SIGTERM');
    // The log line comes within a batch (250 ms), well inside the 2 s delay.
    await a.waitFor('stopping');
    expect((await send(a.url, 'GET', '/readyz')).status).toBe(503);
    held[0]?.writeHead(200, { 'content-type': 'application/json' }).end('{"slow":true}');
    const answered = await slow;
    if (answered instanceof Error) throw answered;
    expect(answered.json()).toEqual({ slow: true });
    expect(await a.exited).toEqual({ code: 0, signal: null });
    const stopped = a.lines.find((l) => l.event === 'stopped');
    expect(stopped).toMatchObject({ requests: 2, cut: 0 });
    expect(a.lines.filter((l) => l.outcome === 'cut_by_shutdown')).toEqual([]);
  });
});
