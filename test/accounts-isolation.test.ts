// Several accounts behind one proxy, each isolated (issue 12, point 3): its own credential,
// queue, cache rules, log field and metric label, and one account's dead grant or full queue
// never fails or holds up another's requests. A real simulator and a real proxy on loopback,
// the accounts in an ACCOUNTS_FILE; the default account (the settings', at `/`) beside them
// in key mode, so that its lines and series can be seen to stay as they were.
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  accountsHarnessPerTest,
  metric,
  send,
  SIM_API_KEY,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_SEED,
  type AccountEntries,
  type Harness,
  type Reply,
} from './harness.js';
import type { RecordedRequest } from './simulator/keap-simulator.js';

const KEY_A = 'KeapAK-account-a-personal-access-token';
const KEY_B = 'KeapAK-account-b-personal-access-token';

const start = accountsHarnessPerTest(afterEach);

/**
 * A simulator that takes both keys (and its one OAuth client), and the proxy in front of it
 * with these accounts in its ACCOUNTS_FILE, beside the default account in key mode.
 */
function withAccounts(accounts: (dir: string) => AccountEntries, env: Record<string, string> = {}): Promise<Harness> {
  return start({
    accounts,
    env: { KEAP_API_KEY: SIM_API_KEY, LOG_LEVEL: 'trace', ...env },
    sim: { apiKeys: [SIM_API_KEY, KEY_A, KEY_B] },
  });
}

/** What the simulator received for this (unique) path and query. */
function received(h: Harness, url: string): RecordedRequest[] {
  return h.sim.lastRequests.filter((r) => r.url === url);
}

/** The request lines the proxy wrote. */
function requestLines(h: Harness): Record<string, unknown>[] {
  return h.logs.entries.filter((e) => e.event === 'request');
}

describe('each account reaches Keap with its own credential', () => {
  it("/accounts/a/ with a's key, /accounts/b/ with b's, /accounts/c/ with c's OAuth token, the prefix removed", async () => {
    const h = await withAccounts((dir) => ({
      a: { KEAP_API_KEY: KEY_A },
      b: { KEAP_API_KEY: KEY_B },
      c: {
        KEAP_CLIENT_ID: SIM_CLIENT_ID,
        KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
        KEAP_REFRESH_TOKEN: SIM_SEED,
        TOKEN_STORE: path.join(dir, 'c.json'),
      },
    }));
    const replies = await Promise.all([
      send(h.proxy.url, 'GET', '/accounts/a/crm/rest/v1/contacts?who=a', { headers: { 'x-keap-api-key': KEY_B } }),
      send(h.proxy.url, 'GET', '/accounts/b/crm/rest/v1/contacts?who=b'),
      send(h.proxy.url, 'GET', '/accounts/c/crm/rest/v1/contacts?who=c'),
      send(h.proxy.url, 'GET', '/crm/rest/v1/contacts?who=default'),
    ]);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200]);

    const [a, b, c, dflt] = ['a', 'b', 'c', 'default'].map((who) =>
      received(h, `/crm/rest/v1/contacts?who=${who}`),
    ) as [RecordedRequest[], RecordedRequest[], RecordedRequest[], RecordedRequest[]];
    // One request each, at Keap's path: nothing of /accounts/<id> reached Keap.
    for (const got of [a, b, c, dflt]) expect(got).toHaveLength(1);
    expect(h.sim.lastRequests.some((r) => r.url.startsWith('/accounts/'))).toBe(false);
    // The key a client sends never passes: the account's own does.
    expect(a[0]?.headers['x-keap-api-key']).toBe(KEY_A);
    expect(a[0]?.headers.authorization).toBeUndefined();
    expect(b[0]?.headers['x-keap-api-key']).toBe(KEY_B);
    expect(b[0]?.headers.authorization).toBeUndefined();
    expect(c[0]?.headers['x-keap-api-key']).toBeUndefined();
    expect(c[0]?.headers.authorization).toMatch(/^Bearer \S+$/);
    expect(c[0]?.headers.authorization).not.toContain(KEY_A);
    expect(dflt[0]?.headers['x-keap-api-key']).toBe(SIM_API_KEY);
    // The token c got is the one the simulator issued for its grant (a refresh from SIM_SEED).
    expect(h.sim.counters.refreshGrants).toBe(1);
    expect(h.sim.counters.unauthorized).toBe(0);
  });

  it('an account not configured gets 404 unknown_account, and nothing reaches Keap', async () => {
    const h = await withAccounts(() => ({ a: { KEAP_API_KEY: KEY_A } }));
    const r = await send(h.proxy.url, 'GET', '/accounts/zz/crm/rest/v1/contacts');
    expect(r.status).toBe(404);
    expect(r.json()).toMatchObject({ error: 'unknown_account' });
    expect(h.sim.counters.apiCalls).toBe(0);
  });
});

describe("one account's trouble is its own", () => {
  it("a dead grant on a: a's clients get 503 reauthorization_required while b keeps answering 200, concurrently", async () => {
    const h = await withAccounts((dir) => ({
      a: {
        KEAP_CLIENT_ID: SIM_CLIENT_ID,
        KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
        // Keap no longer knows this refresh token: its answer is invalid_grant.
        KEAP_REFRESH_TOKEN: 'revoked-refresh-token',
        TOKEN_STORE: path.join(dir, 'a.json'),
      },
      b: { KEAP_API_KEY: KEY_B },
    }));
    const order: string[] = [];
    const tracked = (who: string, i: number): Promise<Reply> =>
      send(h.proxy.url, 'GET', `/accounts/${who}/crm/rest/v1/contacts?i=${i}`).then((r) => {
        order.push(who);
        return r;
      });
    const all = await Promise.all(Array.from({ length: 12 }, (_, i) => tracked(i % 2 === 0 ? 'a' : 'b', i)));
    const a = all.filter((_, i) => i % 2 === 0);
    const b = all.filter((_, i) => i % 2 === 1);
    for (const r of a) {
      expect(r.status).toBe(503);
      expect(r.json()).toMatchObject({ error: 'reauthorization_required' });
    }
    for (const r of b) expect(r.status).toBe(200);
    expect(order.filter((w) => w === 'b')).toHaveLength(6);
    // Nothing of a's reached Keap's API; every one of b's did, with b's key.
    const apiCalls = h.sim.lastRequests.filter((r) => r.url.startsWith('/crm/rest/v1/contacts?i='));
    expect(apiCalls).toHaveLength(6);
    for (const r of apiCalls) expect(r.headers['x-keap-api-key']).toBe(KEY_B);
    // a's grant was asked for once, not once per request.
    expect(h.sim.counters.invalidGrants).toBe(1);

    // And b goes on answering after a has failed.
    expect((await send(h.proxy.url, 'GET', '/accounts/b/crm/rest/v1/contacts')).status).toBe(200);
    const ready = await send(h.proxy.url, 'GET', '/readyz?account=b');
    expect(ready.status).toBe(200);
    expect((await send(h.proxy.url, 'GET', '/readyz?account=a')).status).toBe(503);
  });

  it("a full queue on a: a's excess gets 503 queue_full, and b's requests are answered while a's queued ones still wait", async () => {
    const h = await withAccounts(() => ({
      // One departure a second, room for two to wait: a flood of eight overflows it at once.
      a: { KEAP_API_KEY: KEY_A, RATE_LIMIT_PER_SECOND: '1', QUEUE_LIMIT: '2' },
      b: { KEAP_API_KEY: KEY_B, RATE_LIMIT_PER_SECOND: '1000' },
    }));
    const order: string[] = [];
    const flood = Array.from({ length: 8 }, (_, i) =>
      send(h.proxy.url, 'GET', `/accounts/a/crm/rest/v1/contacts?flood=${i}`).then((r) => {
        order.push(`a${r.status}`);
        return r;
      }),
    );
    // The queue is full once a refusal has come back; only then does b send.
    await Promise.race(flood.map((p) => p.then((r) => (r.status === 503 ? r : new Promise<never>(() => {})))));
    const trickle: Reply[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await send(h.proxy.url, 'GET', `/accounts/b/crm/rest/v1/contacts?trickle=${i}`);
      order.push(`b${r.status}`);
      trickle.push(r);
    }
    const floodReplies = await Promise.all(flood);

    const refused = floodReplies.filter((r) => r.status === 503);
    const served = floodReplies.filter((r) => r.status === 200);
    expect(refused.length + served.length).toBe(8);
    expect(refused.length).toBeGreaterThanOrEqual(1);
    for (const r of refused) expect(r.json()).toMatchObject({ error: 'queue_full' });
    // What a's pacer let through reached Keap with a's key; the refused never did.
    const aCalls = h.sim.lastRequests.filter((r) => r.url.includes('?flood='));
    expect(aCalls).toHaveLength(served.length);
    for (const r of aCalls) expect(r.headers['x-keap-api-key']).toBe(KEY_A);
    // b: every one answered, one after another, each before a's queue had drained.
    expect(trickle.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(served.length).toBeGreaterThanOrEqual(2);
    const lastB = order.lastIndexOf('b200');
    const lastA = order.lastIndexOf('a200');
    expect(lastB).toBeLessThan(lastA);
    // The refusals are a's alone, in a's series.
    expect(await metric(h.proxy.url, 'keap_proxy_rate_limited_total', { account: 'a', outcome: 'rejected_full' })).toBe(
      refused.length,
    );
    expect(
      await metric(h.proxy.url, 'keap_proxy_rate_limited_total', { account: 'b', outcome: 'rejected_full' }),
    ).toBeUndefined();
    expect(
      (await send(h.proxy.url, 'GET', '/metrics')).text().includes('keap_proxy_queue_wait_seconds_count{account="b"'),
    ).toBe(true);
  });
});

describe('logs and metrics name the account', () => {
  it("request lines of file accounts carry account, the default account's do not; the account's own parts log with it", async () => {
    const h = await withAccounts(
      (dir) => ({
        a: { KEAP_API_KEY: KEY_A, RATE_LIMIT_PER_SECOND: '1000' },
        b: { KEAP_API_KEY: KEY_B, RATE_LIMIT_PER_SECOND: '1000' },
        dead: {
          KEAP_CLIENT_ID: SIM_CLIENT_ID,
          KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
          KEAP_REFRESH_TOKEN: 'revoked-refresh-token',
          TOKEN_STORE: path.join(dir, 'dead.json'),
        },
      }),
      { RATE_LIMIT_PER_SECOND: '1000' },
    );
    const ids = { a: 'req-a', b: 'req-b', default: 'req-default', dead: 'req-dead' };
    expect(
      (await send(h.proxy.url, 'GET', '/accounts/a/crm/rest/v1/contacts', { headers: { 'x-request-id': ids.a } }))
        .status,
    ).toBe(200);
    expect(
      (await send(h.proxy.url, 'GET', '/accounts/b/crm/rest/v1/contacts', { headers: { 'x-request-id': ids.b } }))
        .status,
    ).toBe(200);
    expect(
      (await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts', { headers: { 'x-request-id': ids.default } })).status,
    ).toBe(200);
    expect(
      (await send(h.proxy.url, 'GET', '/accounts/dead/crm/rest/v1/contacts', { headers: { 'x-request-id': ids.dead } }))
        .status,
    ).toBe(503);

    const line = (reqId: string): Record<string, unknown> | undefined => requestLines(h).find((e) => e.reqId === reqId);
    expect(line(ids.a)).toMatchObject({ account: 'a', path: '/crm/rest/v1/contacts', status: 200 });
    expect(line(ids.b)).toMatchObject({ account: 'b', status: 200 });
    expect(line(ids.dead)).toMatchObject({ account: 'dead', status: 503 });
    // The default account's line is as it was before there were several accounts.
    expect(line(ids.default)).toMatchObject({ status: 200 });
    expect(line(ids.default)).not.toHaveProperty('account');
    // The line's field order is a child logger's: the binding right after the logger's own.
    const raw = h.logs.lines.find((l) => l.includes(`"reqId":"${ids.a}"`)) as string;
    expect(raw).toMatch(/"name":"keap-proxy","account":"a","event":"request"/);
    // What the dead account's broker says of its grant names the account.
    const refreshFailed = h.logs.entries.filter((e) => e.event === 'token_refresh_failed');
    expect(refreshFailed.length).toBeGreaterThanOrEqual(1);
    for (const e of refreshFailed) expect(e.account).toBe('dead');
    // a's key source said it is ready, as a's.
    expect(
      h.logs.entries
        .filter((e) => e.event === 'credential_ready')
        .map((e) => e.account ?? 'default')
        .sort(),
    ).toEqual(['a', 'b', 'default']);

    // Each account's queue wait is its own series, labelled with its id (the default's `default`).
    const text = (await send(h.proxy.url, 'GET', '/metrics')).text();
    for (const account of ['a', 'b', 'default'])
      expect(text).toMatch(
        new RegExp(`keap_proxy_queue_wait_seconds_count\\{account="${account}",tenant="[^"]+"\\} 1\\n`),
      );
    // The dead account sent nothing to Keap: no wait of its is recorded (its queue is listed, empty).
    expect(text).not.toContain('keap_proxy_queue_wait_seconds_count{account="dead"');
    expect(text).toContain('keap_proxy_queue_depth{account="dead",tenant="unknown"} 0');
    // The label takes account ids from the configuration alone: an unknown one makes no series.
    await send(h.proxy.url, 'GET', '/accounts/nobody/crm/rest/v1/contacts');
    expect((await send(h.proxy.url, 'GET', '/metrics')).text()).not.toContain('account="nobody"');
  });
});

describe('each account caches by its own rules', () => {
  it("a's rule caches its GETs; b (no rules) is never served from the cache, c (a's rules and key) not from a's entries", async () => {
    const h = await withAccounts(() => ({
      a: { KEAP_API_KEY: KEY_A, CACHE_RULES: '/crm/rest/v2/tags*=60' },
      b: { KEAP_API_KEY: KEY_A },
      c: { KEAP_API_KEY: KEY_A, CACHE_RULES: '/crm/rest/v2/tags*=60' },
    }));
    const tags = '/crm/rest/v2/tags?limit=5';
    const get = (who: string): Promise<Reply> => send(h.proxy.url, 'GET', `/accounts/${who}${tags}`);
    const upstream = (): number => received(h, tags).length;

    const a1 = await get('a');
    expect(a1.status).toBe(200);
    expect(a1.headers['x-cache']).toBe('MISS');
    const a2 = await get('a');
    expect(a2.headers['x-cache']).toBe('HIT');
    expect(a2.body.equals(a1.body)).toBe(true);
    expect(upstream()).toBe(1);

    // b has no rules: the same path goes to Keap every time, and is never stored.
    for (let i = 0; i < 2; i++) {
      const b = await get('b');
      expect(b.status).toBe(200);
      expect(b.headers['x-cache']).toBeUndefined();
    }
    expect(upstream()).toBe(3);

    // c has a's rules and the same Keap tenant behind the same key, yet an entry of its own.
    expect((await get('c')).headers['x-cache']).toBe('MISS');
    expect((await get('c')).headers['x-cache']).toBe('HIT');
    expect(upstream()).toBe(4);
    // The default account has no rules either.
    expect((await send(h.proxy.url, 'GET', tags)).headers['x-cache']).toBeUndefined();
    expect(upstream()).toBe(5);

    const cacheOf = (who: string): unknown[] =>
      requestLines(h)
        .filter((e) => e.account === who)
        .map((e) => e.cache);
    expect(cacheOf('a')).toEqual(['MISS', 'HIT']);
    expect(cacheOf('b')).toEqual([undefined, undefined]);
    expect(cacheOf('c')).toEqual(['MISS', 'HIT']);
  });
});
