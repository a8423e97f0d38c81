import { describe, it, expect, afterEach } from 'vitest';
import { harnessPerTest, send, SIM_TENANT } from './harness.js';
import { sample } from './prometheus.js';

const harness = harnessPerTest(afterEach);

describe('GET /metrics', () => {
  it('counts requests by route and status, refreshes by outcome, 429s absorbed, and the quota Keap reported', async () => {
    const h = await harness({ mode: 'oauth', env: { RATE_LIMIT_PER_SECOND: '100' } });
    // One spike arrest, absorbed: replayed after the least wait (Keap says "now").
    let spikes = 0;
    h.sim.route('GET', '/crm/rest/v1/__spike', (_req, res) => {
      if (spikes++ > 0) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '0' }).end(
        JSON.stringify({
          fault: {
            faultstring: 'Spike arrest violation',
            detail: { errorcode: 'policies.ratelimit.SpikeArrestViolation' },
          },
        }),
      );
    });
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/__spike')).status).toBe(200);
    const replies = await Promise.all(
      Array.from({ length: 10 }, () => send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')),
    );
    replies.push(await send(h.proxy.url, 'GET', '/crm/rest/v1/no-such-thing'));
    replies.push(
      await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
        body: '<methodCall><methodName>DataService.echo</methodName></methodCall>',
      }),
    );
    const r = await send(h.proxy.url, 'GET', '/metrics');
    expect(r.status).toBe(200);
    expect(String(r.headers['content-type'])).toMatch(/text\/plain/);
    const text = r.text();
    expect(sample(text, 'keap_proxy_requests_total', { route: 'rest', status: '200' })).toBe(11);
    expect(sample(text, 'keap_proxy_requests_total', { route: 'rest', status: '404' })).toBe(1);
    expect(sample(text, 'keap_proxy_requests_total', { route: 'xmlrpc', status: '200' })).toBe(1);
    expect(sample(text, 'keap_proxy_token_refreshes_total', { outcome: 'success' })).toBe(1);
    expect(sample(text, 'keap_proxy_rate_limited_total', { tenant: SIM_TENANT, outcome: 'absorbed' })).toBe(1);
    expect(spikes).toBe(2);
    // Every send to Keap is timed: the spike's two, ten contacts, the 404.
    expect(sample(text, 'keap_proxy_upstream_duration_seconds_count', { route: 'rest' })).toBe(13);
    expect(
      sample(text, 'keap_proxy_keap_quota_limit', {
        tenant: SIM_TENANT,
        scope: 'product',
        window: 'day',
      }),
    ).toBe(150_000);
    // The proxy reads Keap's quota headers on a sample of responses: the gauge holds what one
    // of the answers the clients got reported.
    const reported = replies.map((reply) => Number(reply.headers['x-keap-product-quota-used'])).filter((n) => n > 0);
    expect(reported.length).toBeGreaterThanOrEqual(10);
    expect(reported).toContain(
      sample(text, 'keap_proxy_keap_quota_used', { tenant: SIM_TENANT, scope: 'product', window: 'day' }),
    );
    expect(sample(text, 'keap_proxy_queue_depth', { tenant: SIM_TENANT })).toBe(0);
    expect(text).not.toContain(String(h.sim.currentRefreshToken()));
    expect(h.sim.lastRequests.some((q) => q.url === '/metrics')).toBe(false);
  });
});

describe('GET cache', () => {
  it('serves repeat GETs of matching paths from the cache, per full URL, and no-cache bypasses it', async () => {
    const h = await harness({ mode: 'key', env: { CACHE_RULES: '/crm/rest/v2/tags*=60' } });
    const first = await send(h.proxy.url, 'GET', '/crm/rest/v2/tags?limit=5');
    expect(first.status).toBe(200);
    expect(first.headers['x-cache']).toBe('MISS');
    const calls = h.sim.counters.apiCalls;
    const second = await send(h.proxy.url, 'GET', '/crm/rest/v2/tags?limit=5', {
      headers: { 'x-request-id': 'from-cache' },
    });
    expect(second.status).toBe(200);
    expect(second.headers['x-cache']).toBe('HIT');
    expect(second.headers['x-request-id']).toBe('from-cache');
    expect(second.body.equals(first.body)).toBe(true);
    expect(h.sim.counters.apiCalls).toBe(calls);
    // Another query is another entry.
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v2/tags?limit=6')).headers['x-cache']).toBe('MISS');
    // The client asks for a fresh answer: Keap is asked.
    const fresh = await send(h.proxy.url, 'GET', '/crm/rest/v2/tags?limit=5', {
      headers: { 'cache-control': 'no-cache' },
    });
    expect(fresh.headers['x-cache']).toBeUndefined();
    expect(h.sim.counters.apiCalls).toBe(calls + 2);
    // Paths no rule names are never cached.
    const other = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(other.headers['x-cache']).toBeUndefined();
    expect(h.logs.entries.find((e) => e.reqId === 'from-cache')).toMatchObject({
      event: 'request',
      status: 200,
      cache: 'HIT',
      attempts: 0,
    });
  });

  it('does not cache errors', async () => {
    const h = await harness({ mode: 'key', env: { CACHE_RULES: '/crm/rest/v1/nothing*=60' } });
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/nothing-here')).status).toBe(404);
    const calls = h.sim.counters.apiCalls;
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/nothing-here')).status).toBe(404);
    expect(h.sim.counters.apiCalls).toBe(calls + 1);
  });

  it('bad CACHE_RULES refuse to start with a message naming the setting', async () => {
    await expect(harness({ mode: 'key', env: { CACHE_RULES: 'tags=soon' } })).rejects.toThrow(/CACHE_RULES/);
  });
});
