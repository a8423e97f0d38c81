// Several accounts with Redis: each OAuth account's grant (and its lock) lives under keys of
// its own below REDIS_PREFIX, so what the replicas guarantee for one grant holds per account;
// two replicas serve both accounts from the same Redis.
import { describe, it, expect, afterEach } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/config.js';
import { startProxy, type RunningProxy } from '../src/http/server.js';
import { createLogger } from '../src/observability/log.js';
import { openTokenStore } from '../src/tokens/open-token-store.js';
import { KeapSimulator, SIM_CLIENT_ID, SIM_CLIENT_SECRET } from './simulator/keap-simulator.js';
import { grantIssuedAt } from './grants.js';
import { LogCapture, send, tempDir, until } from './harness.js';
import { startRedisServer } from './redis-server.js';

const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of open.splice(0).reverse()) await close();
});

describe('several accounts on one Redis', () => {
  it("each account's grant is under its own keys; two replicas serve both accounts with their own tokens", async () => {
    const redis = await startRedisServer();
    open.push(() => redis.stop());
    const sim = await KeapSimulator.start();
    open.push(() => sim.close());
    const url = `redis://${redis.host}:${redis.port}/0`;
    const dir = tempDir();
    const client = { KEAP_CLIENT_ID: SIM_CLIENT_ID, KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET };
    const file = path.join(dir, 'accounts.json');
    writeFileSync(file, JSON.stringify({ accounts: { a: client, b: client } }));
    const env = {
      KEAP_API_URL: sim.url,
      KEAP_TOKEN_URL: sim.tokenUrl,
      ACCOUNTS_FILE: file,
      TOKEN_STORE: 'redis',
      REDIS_URL: url,
      REDIS_PREFIX: 'kp:',
      RATE_LIMIT_PER_SECOND: '0',
      PORT: '0',
      LOG_LEVEL: 'info',
    };
    const config = loadConfig({ env, cwd: dir });
    expect(config.accounts.map((x) => [x.id, x.tokenStore, x.redisPrefix])).toEqual([
      ['a', { kind: 'redis', url }, 'kp:accounts:a:'],
      ['b', { kind: 'redis', url }, 'kp:accounts:b:'],
    ]);
    // Each account's grant, written where its store keeps it.
    const tokens: Record<string, string> = {};
    for (const account of config.accounts) {
      tokens[account.id] = sim.issueAccessToken(3600);
      const opened = openTokenStore(
        account.tokenStore,
        { ...config.redis, prefix: account.redisPrefix },
        { onWarning: () => undefined },
      );
      const grant = grantIssuedAt(Date.now(), {
        accessToken: tokens[account.id] as string,
        refreshToken: `rt-${account.id}`,
      });
      await until('the store is connected', () => opened.connected() === true);
      await opened.store.withLock(() => opened.store.save(grant));
      await opened.close();
    }
    const reader = redis.client();
    await until('the test client is connected', () => reader.status === 'ready');
    const keys = (await reader.keys('kp:*')).sort();
    expect(keys.filter((k) => k.startsWith('kp:accounts:a:'))).not.toEqual([]);
    expect(keys.filter((k) => k.startsWith('kp:accounts:b:'))).not.toEqual([]);
    expect(keys.every((k) => k.startsWith('kp:accounts:'))).toBe(true);

    const replicas: RunningProxy[] = [];
    for (let i = 0; i < 2; i++) {
      const proxy = await startProxy(config, { logger: createLogger('info', new LogCapture()) });
      open.push(() => proxy.close());
      replicas.push(proxy);
    }
    for (const proxy of replicas)
      for (const id of ['a', 'b']) {
        expect((await send(proxy.url, 'GET', `/accounts/${id}/crm/rest/v1/contacts`)).status).toBe(200);
        expect(sim.lastRequests.at(-1)?.headers.authorization).toBe(`Bearer ${tokens[id]}`);
      }
    for (const proxy of replicas)
      expect((await send(proxy.url, 'GET', '/readyz?account=b')).json()).toMatchObject({
        status: 'ready',
        account: 'b',
        tokenStore: { kind: 'redis', connected: true },
      });
  });
});
