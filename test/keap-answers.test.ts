// Keap's real answers, through the proxy against the simulator (see
// /work/shared/keap-api-notes.md): a revoked token's access_token_not_approved, the empty
// quota headers of a 401, reported limits above the defaults, scalar tenant headers, the
// plain 429 body, and REST v1 contacts.
import { afterEach, describe, expect, it } from 'vitest';
import { harnessPerTest, metric, send, type Harness, type Reply } from './harness.js';
import { parseQuotaHeaders } from '../src/keap/keap-quota.js';
import { LocalGate, type PaceLimits } from '../src/pacing/gate.js';
import { createLogger } from '../src/observability/log.js';
import { unauthenticatedQuotaHeaders } from './simulator/quota.js';

const harness = harnessPerTest(afterEach);

/** `n` GETs, `concurrency` at a time, in order of sending; each may wait `deadlineMs` for the pacer. */
async function many(h: Harness, n: number, concurrency: number, deadlineMs: number): Promise<Reply[]> {
  const replies: Reply[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      next += 1;
      replies.push(
        await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts', {
          headers: { 'x-keap-proxy-deadline-ms': String(deadlineMs) },
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return replies;
}

const statuses = (replies: Reply[]): Record<number, number> => {
  const out: Record<number, number> = {};
  for (const r of replies) out[r.status] = (out[r.status] ?? 0) + 1;
  return out;
};

describe('access_token_not_approved (Apigee, for one revoked token)', () => {
  it('gets one refresh and one replay; the client gets 200 and the app is not reported', async () => {
    const h = await harness({ mode: 'oauth' });
    const revoked = h.proxy.credentials.current();
    if (revoked?.kind !== 'bearer') throw new Error('no token');
    h.sim.revokeAccessToken(revoked.token);
    const before = { ...h.sim.counters };
    const r = await send(h.proxy.url, 'POST', '/crm/rest/v1/contacts', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ given_name: 'Grace', email_addresses: [{ email: 'g@example.com', field: 'EMAIL1' }] }),
    });
    expect(r.status).toBe(201);
    expect(h.sim.counters.refreshGrants - before.refreshGrants).toBe(1);
    expect(h.sim.counters.apiCalls - before.apiCalls).toBe(2);
    expect(h.sim.counters.unauthorized - before.unauthorized).toBe(1);
    // Replayed once, so written once.
    expect(h.sim.crm.allContacts()).toHaveLength(1);
    const tokens = h.sim.lastRequests.slice(-2).map((q) => q.headers.authorization);
    expect(tokens[0]).toBe(`Bearer ${revoked.token}`);
    expect(tokens[1]).not.toBe(tokens[0]);
    expect(h.logs.entries.some((e) => e.event === 'app_not_approved')).toBe(false);
    expect(h.logs.entries.find((e) => e.event === 'request')).toMatchObject({ status: 201, attempts: 2 });
  });

  it('when the refresh itself fails, the grant is what is reported (503 reauthorization_required), not the app', async () => {
    const h = await harness({ mode: 'oauth' });
    const revoked = h.proxy.credentials.current();
    if (revoked?.kind !== 'bearer') throw new Error('no token');
    h.sim.revokeAccessToken(revoked.token);
    h.sim.revokeRefreshTokens();
    const before = { ...h.sim.counters };
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(503);
    expect(r.json()).toMatchObject({ error: 'reauthorization_required' });
    expect(h.sim.counters.apiCalls - before.apiCalls).toBe(1);
    expect(h.sim.counters.invalidGrants - before.invalidGrants).toBe(1);
    const events = h.logs.entries.map((e) => e.event);
    expect(events).toContain('reauthorization_required');
    expect(events).not.toContain('app_not_approved');
  });

  it('when the fresh token gets it too, the app is reported as not approved, once', async () => {
    const h = await harness({ mode: 'oauth' });
    h.sim.setApproved(false);
    const before = { ...h.sim.counters };
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(401);
    expect(h.sim.counters.refreshGrants - before.refreshGrants).toBe(1);
    expect(h.sim.counters.apiCalls - before.apiCalls).toBe(2);
    expect(h.logs.entries.filter((e) => e.event === 'app_not_approved')).toHaveLength(1);
  });
});

describe('empty quota headers (401s) mean unknown, never exhausted', () => {
  it('parse to no report, pipe-separated or scalar', () => {
    for (const style of ['pipe', 'scalar'] as const) {
      const flat = unauthenticatedQuotaHeaders(style);
      const headers: Record<string, string> = {};
      for (let i = 0; i < flat.length; i += 2) headers[flat[i] as string] = flat[i + 1] as string;
      expect(parseQuotaHeaders(headers)).toBeUndefined();
    }
  });

  it('a run of 401s with empty quota headers leaves the budgets alone: every request reaches Keap', async () => {
    // A key Keap does not know: every answer is the gateway's 401, with every quota header empty.
    const h = await harness({
      mode: 'key',
      env: { KEAP_API_KEY: 'KeapAK-revoked-key', RATE_LIMIT_PER_SECOND: '1000' },
    });
    const first = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(first.status).toBe(401);
    expect(first.headers['x-keap-product-quota-available']).toBe('');
    expect(first.headers['x-keap-tenant-throttle-available']).toBe('|');
    const replies = await many(h, 30, 5, 5000);
    expect(statuses(replies)).toEqual({ 401: 30 });
    expect(h.sim.counters.apiCalls).toBe(31);
    expect(h.sim.counters.unauthorized).toBe(31);
    const events = h.logs.entries.map((e) => e.event);
    expect(events).not.toContain('daily_quota_spent');
    expect(events).not.toContain('keap_quota_reported');
    expect(await metric(h.proxy.url, 'keap_proxy_keap_quota_available')).toBeUndefined();
  });

  it('after a refresh on a 401 with empty headers, the pacer still paces to the configured budget', async () => {
    const h = await harness({ mode: 'oauth', env: { RATE_LIMIT_PER_SECOND: '1000' } });
    h.sim.expireAccessTokens();
    const replies = await many(h, 20, 4, 5000);
    expect(statuses(replies)).toEqual({ 200: 20 });
    expect(h.logs.entries.map((e) => e.event)).not.toContain('daily_quota_spent');
    expect(await metric(h.proxy.url, 'keap_proxy_keap_quota_limit', { scope: 'product', window: 'day' })).toBe(150_000);
  });
});

const LIMITS: PaceLimits = {
  // No spacing: the minute and day budgets alone decide (as on a tenant gate).
  perSecond: Infinity,
  perMinute: 240,
  perDay: 100,
  tenantPerMinute: 10_000,
  tenantPerDay: 250_000,
  margin: 1,
  queueLimit: 10,
};
const DEFAULTS = { perSecond: false, perMinute: false, perDay: false, tenantPerMinute: false, tenantPerDay: false };

/** How many departures the gate books at one instant before it says wait or the day is spent. */
async function departures(gate: LocalGate, now: number): Promise<number> {
  let n = 0;
  while ((await gate.book(now)).kind === 'go') n += 1;
  return n;
}

describe("Keap's reported limits are the truth, unless the operator set the limit", () => {
  const now = Date.UTC(2026, 10, 30, 12);
  const clock = (): number => now;
  const report = {
    product: { minute: { limit: 600, unit: 'minute' }, day: { limit: 500 } },
    tenant: { minute: { limit: 20_000 }, day: { limit: 400 } },
  };

  it('left at the defaults: a higher reported limit raises the budgets, a lower one lowers them', async () => {
    const gate = new LocalGate({ ...LIMITS, explicit: DEFAULTS }, createLogger('silent'), clock);
    expect(await departures(gate, now)).toBe(100); // the day, before any report
    const raised = new LocalGate({ ...LIMITS, explicit: DEFAULTS }, createLogger('silent'), clock);
    raised.observe(report);
    // Day: the tenant's 400 (below the client's 500, above the configured 100); minute: 600.
    expect(await departures(raised, now)).toBe(400);
    const minute = new LocalGate({ ...LIMITS, perDay: 1e9, explicit: DEFAULTS }, createLogger('silent'), clock);
    minute.observe({ product: { minute: report.product.minute }, tenant: { minute: report.tenant.minute } });
    expect(await departures(minute, now)).toBe(600);
    const lowered = new LocalGate({ ...LIMITS, perDay: 1e9, explicit: DEFAULTS }, createLogger('silent'), clock);
    lowered.observe({ product: { minute: { limit: 50 } }, tenant: {} });
    expect(await departures(lowered, now)).toBe(50);
  });

  it('set explicitly: the operator limit stays the ceiling; a lower report still lowers it', async () => {
    const explicit = { ...DEFAULTS, perMinute: true, perDay: true };
    const gate = new LocalGate({ ...LIMITS, explicit }, createLogger('silent'), clock);
    gate.observe(report);
    expect(await departures(gate, now)).toBe(100);
    const minute = new LocalGate({ ...LIMITS, perDay: 1e9, explicit }, createLogger('silent'), clock);
    minute.observe(report);
    expect(await departures(minute, now)).toBe(240);
    const lowered = new LocalGate({ ...LIMITS, perDay: 1e9, explicit }, createLogger('silent'), clock);
    lowered.observe({ product: { minute: { limit: 50 } }, tenant: {} });
    expect(await departures(lowered, now)).toBe(50);
    // Without the flags (limits built by hand), every limit counts as set.
    const bare = new LocalGate({ ...LIMITS, perDay: 1e9 }, createLogger('silent'), clock);
    bare.observe(report);
    expect(await departures(bare, now)).toBe(240);
  });

  it("the spike limit Keap reports sets the spacing when the per-second limit is the default's", () => {
    const left = new LocalGate({ ...LIMITS, perSecond: 10, explicit: DEFAULTS }, createLogger('silent'), clock);
    expect(left.spacingMs()).toBe(100);
    left.observe({ product: { spikePerSecond: 50 }, tenant: {} });
    expect(left.spacingMs()).toBe(20);
    const set = new LocalGate(
      { ...LIMITS, perSecond: 10, explicit: { ...DEFAULTS, perSecond: true } },
      createLogger('silent'),
      clock,
    );
    set.observe({ product: { spikePerSecond: 50 }, tenant: {} });
    expect(set.spacingMs()).toBe(100);
  });

  it('through the proxy: a key whose reported minute limit is 1,000 is paced to it, not to the default 240', async () => {
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '1000', RATE_LIMIT_MARGIN: '0.9' } });
    h.sim.setProductLimits({ minute: 1000 });
    // Past 90% of the default (216), within 90% of Keap's reported 1,000.
    const replies = await many(h, 300, 10, 5000);
    expect(statuses(replies)).toEqual({ 200: 300 });
    expect(h.sim.counters.apiCalls).toBe(300);
    expect(h.sim.counters.throttled).toBe(0);
  });

  it('through the proxy: RATE_LIMIT_PER_MINUTE set explicitly wins over a higher reported limit', async () => {
    const h = await harness({
      mode: 'key',
      env: { RATE_LIMIT_PER_SECOND: '1000', RATE_LIMIT_PER_MINUTE: '240', RATE_LIMIT_MARGIN: '0.9' },
    });
    h.sim.setProductLimits({ minute: 1000 });
    const replies = await many(h, 300, 10, 5000);
    // 90% of 240 leave in the minute; the rest cannot wait for the window and get the proxy's 429.
    expect(statuses(replies)).toEqual({ 200: 216, 429: 84 });
    expect(h.sim.counters.apiCalls).toBe(216);
    for (const r of replies.filter((x) => x.status === 429)) expect(r.json()).toMatchObject({ error: 'rate_limited' });
  });
});

describe('the simulator as Keap answers, through the proxy', () => {
  it('scalar tenant headers: the tenant minute window is read, no day window is invented', async () => {
    const h = await harness({ mode: 'key', sim: { tenantHeaders: 'scalar' } });
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(await metric(h.proxy.url, 'keap_proxy_keap_quota_limit', { scope: 'tenant', window: 'minute' })).toBe(
      10_000,
    );
    expect(await metric(h.proxy.url, 'keap_proxy_keap_quota_used', { scope: 'tenant', window: 'minute' })).toBe(1);
    expect(
      await metric(h.proxy.url, 'keap_proxy_keap_quota_limit', { scope: 'tenant', window: 'day' }),
    ).toBeUndefined();
  });

  it('the plain 429 body ({"code":"429","message":"Quota Exceeded",...}) is absorbed like the others', async () => {
    const h = await harness({
      mode: 'key',
      env: { RATE_LIMIT_PER_SECOND: '1000' },
      sim: { throttleBody: 'plain', ratePerSecond: 1, retryAfterOn429: true },
    });
    const replies = await Promise.all([
      send(h.proxy.url, 'GET', '/crm/rest/v1/contacts'),
      send(h.proxy.url, 'GET', '/crm/rest/v1/contacts'),
    ]);
    expect(replies.map((r) => r.status)).toEqual([200, 200]);
    expect(h.sim.counters.throttled).toBeGreaterThanOrEqual(1);
    expect(h.sim.counters.apiCalls).toBe(2 + h.sim.counters.throttled);
    const limited = h.logs.entries.filter((e) => e.event === 'rate_limited');
    expect(limited.length).toBe(h.sim.counters.throttled);
    for (const e of limited) expect(e).toMatchObject({ outcome: 'absorbed' });
  });

  it("OAuth mode: a legacy SDK's ?access_token= is dropped; Keap sees the proxy's bearer token in the header", async () => {
    const h = await harness({ mode: 'oauth' });
    const own = h.proxy.credentials.current();
    if (own?.kind !== 'bearer') throw new Error('no token');
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo?access_token=sdk-token-123&limit=5');
    expect(r.status).toBe(200);
    const echo = r.json<{ url: string; headers: Record<string, string> }>();
    expect(echo.url).toBe('/crm/rest/v1/__echo?limit=5');
    expect(echo.headers.authorization).toBe(`Bearer ${own.token}`);
    expect(h.logs.text()).not.toContain('sdk-token-123');
  });

  it('REST v1 contacts through the proxy: create, read, update, list, delete', async () => {
    const h = await harness({ mode: 'oauth' });
    const json = { 'content-type': 'application/json' };
    const created = await send(h.proxy.url, 'POST', '/crm/rest/v1/contacts', {
      headers: json,
      body: JSON.stringify({ given_name: 'Ada', email_addresses: [{ email: 'ada@example.com', field: 'EMAIL1' }] }),
    });
    expect(created.status).toBe(201);
    const id = created.json<{ id: number }>().id;
    expect(id).toBe(1);
    const patched = await send(h.proxy.url, 'PATCH', `/crm/rest/v1/contacts/${id}`, {
      headers: json,
      body: JSON.stringify({ family_name: 'Lovelace' }),
    });
    expect(patched.json()).toMatchObject({ id, given_name: 'Ada', family_name: 'Lovelace' });
    const list = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts?limit=10&offset=0');
    expect(list.json()).toMatchObject({ count: 1, contacts: [{ id, family_name: 'Lovelace' }] });
    expect((await send(h.proxy.url, 'DELETE', `/crm/rest/v1/contacts/${id}`)).status).toBe(204);
    expect((await send(h.proxy.url, 'GET', `/crm/rest/v1/contacts/${id}`)).status).toBe(404);
    expect(
      h.logs.entries.filter((e) => e.event === 'request').map((e) => `${String(e.method)} ${String(e.status)}`),
    ).toEqual(['POST 201', 'PATCH 200', 'GET 200', 'DELETE 204', 'GET 404']);
  });
});
