import { describe, it, expect, afterEach, vi } from 'vitest';
import { randomBytes } from 'node:crypto';
import { statSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  harnessPerTest,
  send,
  oauthEnv,
  sha256,
  tempDir,
  until,
  LogCapture,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_SCOPE,
  SIM_TENANT,
} from './harness.js';
import type { Grant } from '../src/tokens/grant.js';
import { grantIssuedAt } from './grants.js';
import { APP_UNAUTHORIZED_BODY, KeapSimulator } from './simulator/keap-simulator.js';
import { createLogger } from '../src/observability/log.js';
import { loadConfig } from '../src/config/config.js';
import { startProxy, type RunningProxy } from '../src/http/server.js';
import { TokenClient, TokenEndpointError } from '../src/tokens/token-client.js';
import { FileTokenStore, type TokenStore } from '../src/tokens/token-store.js';
import { REFRESH_FLOOR_MS, supersedes, TokenBroker } from '../src/tokens/token-broker.js';
import { classifyUnauthorized, parseFault } from '../src/keap/apigee.js';
import { storeFile } from './store-path.js';

interface Echo {
  method: string;
  bodySha256: string;
  headers: Record<string, string>;
}

const extraProxies: RunningProxy[] = [];
afterEach(async () => {
  for (const p of extraProxies.splice(0)) await p.close();
});
const harness = harnessPerTest(afterEach);

describe('one refresh for any 401 storm, then replay', () => {
  it('after expiry, 120 concurrent requests of every method cause exactly one token call; every body arrives byte-identical', async () => {
    const h = await harness({ mode: 'oauth' });
    const before = h.sim.counters.tokenCalls;
    h.sim.expireAccessTokens();
    const methods = ['GET', 'POST', 'PATCH', 'PUT', 'DELETE'];
    const requests = Array.from({ length: 120 }, (_, i) => {
      const method = methods[i % methods.length] as string;
      const body = method === 'GET' ? undefined : randomBytes(1 + ((i * 7919) % 20_000));
      return { method, body };
    });
    const replies = await Promise.all(
      requests.map(({ method, body }) =>
        send(h.proxy.url, method, `/crm/rest/v1/__echo?i=${method}`, {
          body,
          headers: body ? { 'content-type': 'application/octet-stream' } : {},
        }),
      ),
    );
    for (const [i, r] of replies.entries()) {
      expect(r.status, `request ${i}`).toBe(200);
      const echo = r.json<Echo>();
      expect(echo.method).toBe(requests[i]?.method);
      expect(echo.bodySha256).toBe(sha256(requests[i]?.body ?? Buffer.alloc(0)));
    }
    expect(h.sim.counters.tokenCalls - before).toBe(1);
    expect(h.sim.counters.unauthorized).toBeGreaterThan(0);
    // The clients never saw the 401s; the log says which requests were replayed.
    const lines = h.logs.entries.filter((e) => e.event === 'request');
    expect(lines.filter((e) => e.attempts === 2).length).toBe(h.sim.counters.unauthorized);
  });

  it('the broker refreshes only for the current token generation', async () => {
    const h = await harness({ mode: 'oauth' });
    const broker = new TokenBroker({
      client: new TokenClient({
        tokenUrl: new URL(h.sim.tokenUrl),
        clientId: SIM_CLIENT_ID,
        clientSecret: SIM_CLIENT_SECRET,
      }),
      store: new FileTokenStore(storeFile(h.config)),
      logger: createLogger('silent'),
      seedRefreshToken: undefined,
    });
    await broker.start();
    const first = await broker.get();
    const before = h.sim.counters.tokenCalls;
    await broker.invalidate(first);
    const second = await broker.get();
    expect(second.kind === 'bearer' && first.kind === 'bearer' && second.token !== first.token).toBe(true);
    expect(h.sim.counters.tokenCalls - before).toBe(1);
    // Late 401s for the replaced token (requests that left before the refresh) change nothing.
    // They may be replayed with the current token.
    expect(await Promise.all([broker.invalidate(first), broker.invalidate(first), broker.invalidate(first)])).toEqual([
      true,
      true,
      true,
    ]);
    expect(h.sim.counters.tokenCalls - before).toBe(1);
    expect(await broker.get()).toBe(second);
    broker.stop();
  });

  it('a 401 for a token already replaced makes no second refresh', async () => {
    const h = await harness({ mode: 'oauth' });
    h.sim.expireAccessTokens();
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    const after = h.sim.counters.tokenCalls;
    for (let i = 0; i < 5; i++) expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(h.sim.counters.tokenCalls).toBe(after);
  });

  it('access_token_not_approved is refreshed once and replayed; the same answer again means the app is not approved', async () => {
    const h = await harness({ mode: 'oauth' });
    const tokenCalls = h.sim.counters.tokenCalls;
    const apiCalls = h.sim.counters.apiCalls;
    h.sim.setApproved(false);
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({
      fault: { detail: { errorcode: 'keymanagement.service.access_token_not_approved' } },
    });
    expect(h.sim.counters.tokenCalls - tokenCalls).toBe(1);
    expect(h.sim.counters.apiCalls - apiCalls).toBe(2);
    expect(h.logs.entries.filter((e) => e.event === 'app_not_approved')).toEqual([
      expect.objectContaining({ level: 'error', errorcode: 'keymanagement.service.access_token_not_approved' }),
    ]);
    // Within the refresh floor a second request makes no second refresh: no loop.
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(401);
    expect(h.sim.counters.tokenCalls - tokenCalls).toBe(1);
    expect(h.sim.counters.apiCalls - apiCalls).toBe(3);
  });

  it('a body too large to buffer is not replayed: the 401 reaches the client, with a log line saying why', async () => {
    const h = await harness({ mode: 'oauth', env: { REPLAY_BODY_BYTES: '1000' } });
    h.sim.expireAccessTokens();
    const r = await send(h.proxy.url, 'POST', '/crm/rest/v1/__echo', { body: randomBytes(50_000) });
    expect(r.status).toBe(401);
    expect(h.logs.entries.find((e) => e.event === 'replay_skipped')).toMatchObject({
      reason: 'body_streamed',
      replayBodyBytes: 1000,
    });
    // The token was refreshed all the same: the next request goes through.
    expect((await send(h.proxy.url, 'POST', '/crm/rest/v1/__echo', { body: randomBytes(500) })).status).toBe(200);
  });

  it('in key mode a 401 goes to the client as Keap sent it', async () => {
    const h = await harness({ mode: 'key', env: { KEAP_API_KEY: 'KeapAK-not-a-valid-key' } });
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ fault: { detail: { errorcode: 'keymanagement.service.invalid_access_token' } } });
  });
});

describe('the token store', () => {
  it('holds the newest refresh token, mode 0600 in a 0700 directory', async () => {
    const h = await harness({ mode: 'oauth' });
    h.sim.expireAccessTokens();
    await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    const file = storeFile(h.config);
    const stored = JSON.parse(readFileSync(file, 'utf8')) as { refreshToken: string };
    expect(stored.refreshToken).toBe(h.sim.currentRefreshToken());
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
  });

  it('a restarted proxy works from the store with no seed', async () => {
    const h = await harness({ mode: 'oauth' });
    await h.proxy.close();
    const config = {
      ...h.config,
      credentials: { ...h.config.accounts[0]!.credentials, seedRefreshToken: undefined },
    } as typeof h.config;
    const restarted = await startProxy(config, { logger: createLogger('silent') });
    extraProxies.push(restarted);
    h.sim.expireAccessTokens();
    const r = await send(restarted.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(200);
    expect((await send(restarted.url, 'GET', '/readyz')).status).toBe(200);
    expect(h.sim.counters.invalidGrants).toBe(0);
  });

  it('two processes on one store make one refresh', async () => {
    const h = await harness({ mode: 'oauth' });
    // A second proxy on the same store file, with its own broker and store objects: only the file is shared.
    const second = await startProxy({ ...h.config, port: 0 }, { logger: createLogger('silent') });
    extraProxies.push(second);
    const before = h.sim.counters.tokenCalls;
    h.sim.expireAccessTokens();
    const replies = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        send(i % 2 === 0 ? h.proxy.url : second.url, 'GET', '/crm/rest/v1/contacts'),
      ),
    );
    for (const r of replies) expect(r.status).toBe(200);
    expect(h.sim.counters.tokenCalls - before).toBe(1);
    expect(h.sim.counters.invalidGrants).toBe(0);
  });
});

/**
 * A stored one-hour grant and a broker clock 56 minutes into it: past the proactive refresh
 * (due 5 minutes before expiry) and still inside the token's life. The clock stands still,
 * so however slow the machine, the token neither expires nor leaves the refresh window.
 */
function grantInItsRefreshWindow(sim: KeapSimulator): { grant: Grant; now: () => number } {
  const issuedAt = Date.now();
  const grant: Grant = {
    accessToken: sim.issueAccessToken(3600),
    refreshToken: String(sim.currentRefreshToken()),
    tokenType: 'bearer',
    scope: SIM_SCOPE,
    accessExpiresAt: issuedAt + 60 * 60_000,
    issuedAt,
    refreshIssuedAt: issuedAt,
  };
  return { grant, now: () => issuedAt + 56 * 60_000 };
}

const authorizationOfLastRequest = (sim: KeapSimulator): unknown => sim.lastRequests.at(-1)?.headers.authorization;

describe('proactive refresh', () => {
  it('once the refresh is due the token is replaced before it expires, with no request needed: clients see no 401 upstream', async () => {
    const sim = await KeapSimulator.start();
    const { grant, now } = grantInItsRefreshWindow(sim);
    const proxy = await startClockedProxy(sim, now, grant).catch(async (err: unknown) => {
      await sim.close();
      throw err;
    });
    try {
      // No request is sent: the refresh is the broker's own doing.
      await until('the proactive refresh', () => sim.counters.refreshGrants === 1);
      await until('the new grant to be in use', () => proxy.logs.entries.some((e) => e.event === 'token_refreshed'));
      for (let i = 0; i < 5; i++) {
        expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
        expect(authorizationOfLastRequest(sim)).not.toBe(`Bearer ${grant.accessToken}`);
      }
      expect(sim.counters.unauthorized).toBe(0);
      expect(sim.counters.tokenCalls).toBe(1);
    } finally {
      await proxy.close();
      await sim.close();
    }
  });

  it('with 3-second tokens and no traffic at all, the refreshes keep coming on their own (fake time)', async () => {
    const t0 = Date.UTC(2026, 10, 30, 12);
    vi.useFakeTimers({ now: t0 });
    const client = new FakeTokenClient(3000);
    const broker = new TokenBroker({
      client,
      store: new MemoryTokenStore(),
      logger: createLogger('silent'),
      seedRefreshToken: 'seed',
    });
    try {
      await broker.start();
      expect(client.calls).toEqual([{ at: t0, refreshToken: 'seed' }]);
      await vi.advanceTimersByTimeAsync(30_000);
      // Each refresh arms the next 10% of the lifetime before expiry: one every 2.7 s, each
      // with the refresh token the last one issued.
      expect(client.calls).toEqual(
        Array.from({ length: 12 }, (_, i) => ({ at: t0 + i * 2700, refreshToken: i === 0 ? 'seed' : `rt-${i}` })),
      );
      expect(broker.current()).toMatchObject({ kind: 'bearer', token: 'at-12' });
    } finally {
      broker.stop();
      vi.useRealTimers();
    }
  });

  it('after failures the retries back off, 1 s, 2 s, 4 s ... up to a minute, jitter taking up to half (fake time)', async () => {
    const t0 = Date.UTC(2026, 10, 30, 12);
    vi.useFakeTimers({ now: t0 });
    const client = new FakeTokenClient(3_600_000);
    client.failures = 9;
    const broker = new TokenBroker({
      client,
      store: new MemoryTokenStore(),
      logger: createLogger('silent'),
      seedRefreshToken: 'seed',
    });
    try {
      await broker.start();
      await vi.advanceTimersByTimeAsync(10 * 60_000);
      // Nine failures, then a success, and nothing more while the new token is good.
      expect(client.calls).toHaveLength(10);
      const at = client.calls.map((c) => c.at);
      const gaps = at.slice(1).map((t, i) => t - (at[i] as number));
      const bases = [1, 2, 4, 8, 16, 32, 60, 60, 60].map((s) => s * 1000);
      for (const [i, gap] of gaps.entries()) {
        expect(gap, `retry ${i + 1}`).toBeGreaterThanOrEqual((bases[i] as number) / 2);
        expect(gap, `retry ${i + 1}`).toBeLessThanOrEqual(bases[i] as number);
      }
      expect(broker.current()).toMatchObject({ kind: 'bearer', token: 'at-1' });
      expect(broker.readiness()).toMatchObject({ ready: true, details: { state: 'ready', refreshFailures: 0 } });
    } finally {
      broker.stop();
      vi.useRealTimers();
    }
  });
});

/** Keap's token endpoint in memory: each refresh issues a grant living `ttlMs` from the (fake) clock. */
class FakeTokenClient extends TokenClient {
  readonly calls: { at: number; refreshToken: string }[] = [];
  /** Refreshes still to fail as an outage would (5xx). */
  failures = 0;
  private issued = 0;

  constructor(private readonly ttlMs: number) {
    super({ tokenUrl: new URL('http://127.0.0.1:9/token'), clientId: SIM_CLIENT_ID, clientSecret: SIM_CLIENT_SECRET });
  }

  override refresh(refreshToken: string): Promise<Grant> {
    const now = Date.now();
    this.calls.push({ at: now, refreshToken });
    if (this.failures > 0) {
      this.failures -= 1;
      return Promise.reject(new TokenEndpointError('unavailable', 'token endpoint answered 500', 500));
    }
    this.issued += 1;
    return Promise.resolve({
      accessToken: `at-${this.issued}`,
      refreshToken: `rt-${this.issued}`,
      tokenType: 'bearer',
      scope: SIM_SCOPE,
      accessExpiresAt: now + this.ttlMs,
      issuedAt: now,
      refreshIssuedAt: now,
    });
  }
}

/** A token store in memory: no file, no lock, nothing that waits on real time. */
class MemoryTokenStore implements TokenStore {
  readonly location = 'memory';
  private grant: Grant | undefined;
  load(): Promise<Grant | undefined> {
    return Promise.resolve(this.grant);
  }
  save(grant: Grant): Promise<void> {
    this.grant = grant;
    return Promise.resolve();
  }
  withLock<T>(fn: () => Promise<T>): Promise<T> {
    return fn();
  }
  checkWritable(): Promise<void> {
    return Promise.resolve();
  }
}

describe('failures', () => {
  it('invalid_grant: 503 reauthorization_required and red readiness, healed by a newly stored grant without a restart', async () => {
    // Without a usable grant the broker looks in the store every 5 s: that poll runs on fake
    // time (setInterval only); everything else, sockets and files, on real time.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      await reauthorizedWithoutRestart();
    } finally {
      vi.useRealTimers();
    }
  });

  async function reauthorizedWithoutRestart(): Promise<void> {
    const h = await harness({ mode: 'oauth' });
    const tokenCallsBefore = h.sim.counters.tokenCalls;
    h.sim.revokeRefreshTokens();
    h.sim.expireAccessTokens();
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(503);
    expect(r.json()).toMatchObject({ error: 'reauthorization_required' });
    expect(r.json<{ message: string }>().message).toMatch(/keap-proxy auth/);
    const ready = await send(h.proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json()).toMatchObject({ error: 'reauthorization_required' });
    // No hammering: more requests make no more token calls.
    for (let i = 0; i < 5; i++) expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(503);
    expect(h.sim.counters.tokenCalls - tokenCallsBefore).toBe(1);

    // An operator authorizes again (what `keap-proxy auth` does): a new grant lands in the store.
    const client = new TokenClient({
      tokenUrl: new URL(h.sim.tokenUrl),
      clientId: SIM_CLIENT_ID,
      clientSecret: SIM_CLIENT_SECRET,
    });
    const grant = await client.exchangeCode(
      h.sim.issueAuthorizationCode('https://example.com/cb'),
      'https://example.com/cb',
    );
    const store = new FileTokenStore(storeFile(h.config));
    await store.withLock(() => store.save(grant));
    // Until the store is looked at again, nothing changes.
    expect((await send(h.proxy.url, 'GET', '/readyz')).status).toBe(503);

    await vi.advanceTimersByTimeAsync(5000);
    await until('readiness to turn green', async () => (await send(h.proxy.url, 'GET', '/readyz')).status === 200);
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    // The refused refresh and the operator's code exchange: the stored grant was taken as it was.
    expect(h.sim.counters.tokenCalls - tokenCallsBefore).toBe(2);
  }

  it('the token endpoint down for a while, then back, heals without a restart', async () => {
    const sim = await KeapSimulator.start();
    // The broker's clock runs with real time, and the test moves it past the backoff.
    let ahead = 0;
    const proxy = await startClockedProxy(sim, () => Date.now() + ahead).catch(async (err: unknown) => {
      await sim.close();
      throw err;
    });
    try {
      sim.setTokenEndpointMode('error500');
      sim.expireAccessTokens();
      const down = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
      expect(down.status).toBe(503);
      expect(down.json()).toMatchObject({ error: 'token_unavailable' });
      expect(Number(down.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect((await send(proxy.url, 'GET', '/readyz')).status).toBe(503);
      // While down, clients are answered at once from the backoff state rather than each trying Keap
      // (the broker's own retry, due within a second, may make one call meanwhile).
      const callsWhileDown = sim.counters.tokenCalls;
      for (let i = 0; i < 10; i++) expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(503);
      expect(sim.counters.tokenCalls - callsWhileDown).toBeLessThanOrEqual(1);

      sim.setTokenEndpointMode('ok');
      // Past any backoff (at most a minute): the next request refreshes and goes through.
      ahead = 61_000;
      expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
      expect((await send(proxy.url, 'GET', '/readyz')).status).toBe(200);
    } finally {
      await proxy.close();
      await sim.close();
    }
  });

  it('while the token endpoint is down, requests keep being served with the still-valid token', async () => {
    const sim = await KeapSimulator.start();
    const { grant, now } = grantInItsRefreshWindow(sim);
    sim.setTokenEndpointMode('error500');
    const proxy = await startClockedProxy(sim, now, grant).catch(async (err: unknown) => {
      await sim.close();
      throw err;
    });
    try {
      // The proactive refresh is due at once, and fails.
      const failed = await until('the proactive refresh to fail', () =>
        proxy.logs.entries.find((e) => e.event === 'token_refresh_failed'),
      );
      expect(failed).toMatchObject({
        level: 'warn',
        failure: 'unavailable',
      });
      for (let i = 0; i < 5; i++) {
        expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
        expect(authorizationOfLastRequest(sim)).toBe(`Bearer ${grant.accessToken}`);
      }
      expect(sim.counters.tokenCalls).toBeGreaterThanOrEqual(1);
      expect(sim.counters.refreshGrants).toBe(0);
      expect(sim.counters.unauthorized).toBe(0);
      // Degraded, and still ready: the token in hand is good.
      const ready = await send(proxy.url, 'GET', '/readyz');
      expect(ready.status).toBe(200);
      expect(ready.json()).toMatchObject({ state: 'degraded' });
    } finally {
      await proxy.close();
      await sim.close();
    }
  });

  it('/readyz shows the refresh token age and access token expiry, never a token', async () => {
    const h = await harness({ mode: 'oauth' });
    const r = await send(h.proxy.url, 'GET', '/readyz');
    expect(r.status).toBe(200);
    const body = r.json<Record<string, unknown>>();
    expect(body).toMatchObject({ status: 'ready', mode: 'oauth', tenant: SIM_TENANT });
    expect(typeof body.refreshTokenAgeSeconds).toBe('number');
    expect(body.accessTokenExpiresInSeconds as number).toBeGreaterThan(86_000);
    expect(r.text()).not.toContain(String(h.sim.currentRefreshToken()));
  });
});

describe('only Apigee token faults refresh and replay', () => {
  const expiredFault = (): Buffer =>
    Buffer.from(
      JSON.stringify({
        fault: {
          faultstring: 'Access Token expired',
          detail: { errorcode: 'keymanagement.service.access_token_expired' },
        },
      }),
    );

  it("classifies by errorcode; a 401 without a known fault is the application's", () => {
    const kind = (body: string): string => classifyUnauthorized(parseFault(Buffer.from(body)));
    const faultBody = (errorcode: string): string =>
      JSON.stringify({ fault: { faultstring: 'x', detail: { errorcode } } });
    expect(kind(faultBody('keymanagement.service.access_token_expired'))).toBe('token');
    expect(kind(faultBody('keymanagement.service.invalid_access_token'))).toBe('token');
    expect(kind(faultBody('oauth.v2.InvalidAccessToken'))).toBe('token');
    expect(kind(faultBody('keymanagement.service.access_token_not_approved'))).toBe('token');
    expect(kind(faultBody('keymanagement.service.invalid_client-client_id_not_approved'))).toBe('not_approved');
    expect(kind(faultBody('policies.ratelimit.QuotaViolation'))).toBe('other');
    expect(kind(faultBody('some.unknown.code'))).toBe('other');
    expect(kind('{"message":"unauthorized by app"}')).toBe('other');
    expect(kind('{"fault":{"faultstring":"Invalid Access Token"}}')).toBe('other');
    expect(kind('<html>401</html>')).toBe('other');
    expect(kind('null')).toBe('other');
    expect(kind('')).toBe('other');
  });

  it("an application's 401 reaches the client byte for byte: no token call, one upstream call per request, a log line without the body", async () => {
    const h = await harness({ mode: 'oauth' });
    const tokenCalls = h.sim.counters.tokenCalls;
    const apiCalls = h.sim.counters.apiCalls;
    const refreshToken = h.sim.currentRefreshToken();
    const requests: [string, string, Buffer | undefined][] = [
      ['GET', '/crm/rest/v1/__app401', undefined],
      ['POST', '/crm/rest/v1/__app401', Buffer.from('{"given_name":"Ada"}')],
      ['DELETE', '/crm/rest/v2/__app401', undefined],
      // An errorcode Apigee is not known to use for tokens is not proof either.
      ['GET', '/crm/rest/v1/__fault?errorcode=some.unknown.code', undefined],
    ];
    for (const [method, path, body] of requests) {
      const r = await send(h.proxy.url, method, path, {
        body,
        headers: body ? { 'content-type': 'application/json' } : {},
      });
      expect(r.status).toBe(401);
      if (path.includes('__app401')) expect(r.body.equals(APP_UNAUTHORIZED_BODY)).toBe(true);
      else expect(r.json()).toMatchObject({ fault: { detail: { errorcode: 'some.unknown.code' } } });
    }
    expect(h.sim.counters.tokenCalls - tokenCalls).toBe(0);
    expect(h.sim.counters.apiCalls - apiCalls).toBe(requests.length);
    expect(h.sim.currentRefreshToken()).toBe(refreshToken);
    const passedOn = h.logs.entries.filter((e) => e.event === 'unauthorized_passed_on');
    expect(passedOn).toHaveLength(requests.length);
    for (const e of passedOn) expect(e).toMatchObject({ level: 'info', status: 401, reqId: expect.any(String) });
    expect(h.logs.entries.filter((e) => e.event === 'request').map((e) => e.attempts)).toEqual(requests.map(() => 1));
    expect(h.logs.entries.some((e) => e.event === 'token_rejected' || e.event === 'refresh_floor')).toBe(false);
    const text = h.logs.text();
    expect(text).not.toContain('unauthorized by app');
    expect(text).not.toContain('some.unknown.code');
    const token = h.proxy.credentials.current();
    expect(token?.kind === 'bearer' && !text.includes(token.token)).toBe(true);
    expect(text).not.toContain(String(refreshToken));
  });

  it("an application's 401 larger than a fault body is relayed whole", async () => {
    const h = await harness({ mode: 'oauth' });
    const big = randomBytes(300_000);
    h.sim.route('GET', '/crm/rest/v1/__big401', (_req, res) => {
      // Chunked, no Content-Length: the proxy cannot know the size before reading.
      res.writeHead(401, { 'content-type': 'application/octet-stream' });
      for (let i = 0; i < big.length; i += 50_000) res.write(big.subarray(i, i + 50_000));
      res.end();
    });
    const tokenCalls = h.sim.counters.tokenCalls;
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__big401');
    expect(r.status).toBe(401);
    expect(sha256(r.body)).toBe(sha256(big));
    expect(h.sim.counters.tokenCalls).toBe(tokenCalls);
    expect(h.logs.entries.filter((e) => e.event === 'unauthorized_passed_on')).toHaveLength(1);
  });

  it('a storm of 20 concurrent requests that all get access_token_expired: exactly 1 refresh and 20 replays, bodies intact', async () => {
    const h = await harness({ mode: 'oauth' });
    const first = h.proxy.credentials.current();
    if (first?.kind !== 'bearer') throw new Error('no token');
    // Every request carrying the first token is held until all 20 have arrived, then all get
    // the gateway's expired fault: no request can slip past with the refreshed token.
    const held: import('node:http').ServerResponse[] = [];
    const seen: { token: string; bodySha256: string }[] = [];
    h.sim.route('*', '/crm/rest/v1/__storm', (req, res, body) => {
      const token = String(req.headers.authorization).slice('Bearer '.length);
      seen.push({ token, bodySha256: sha256(body) });
      if (token !== first.token) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ bodySha256: sha256(body) }));
        return;
      }
      held.push(res);
      if (held.length === 20)
        for (const r of held) r.writeHead(401, { 'content-type': 'application/json' }).end(expiredFault());
    });
    const before = { ...h.sim.counters };
    const bodies = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? undefined : randomBytes(1000 + i)));
    const replies = await Promise.all(
      bodies.map((body) => send(h.proxy.url, body ? 'POST' : 'GET', '/crm/rest/v1/__storm', { body })),
    );
    for (const [i, r] of replies.entries()) {
      expect(r.status, `request ${i}`).toBe(200);
      expect(r.json<{ bodySha256: string }>().bodySha256).toBe(sha256(bodies[i] ?? Buffer.alloc(0)));
    }
    expect(h.sim.counters.tokenCalls - before.tokenCalls).toBe(1);
    expect(h.sim.counters.refreshGrants - before.refreshGrants).toBe(1);
    expect(seen.filter((s) => s.token === first.token)).toHaveLength(20);
    const replays = seen.filter((s) => s.token !== first.token);
    expect(replays).toHaveLength(20);
    expect(new Set(replays.map((s) => s.token)).size).toBe(1);
    expect(h.sim.counters.apiCalls - before.apiCalls).toBe(40);
    expect(h.logs.entries.filter((e) => e.event === 'request').map((e) => e.attempts)).toEqual(bodies.map(() => 2));
    expect(h.logs.entries.some((e) => e.event === 'refresh_floor')).toBe(false);
  });

  it('access_token_not_approved for one revoked token: 1 refresh, 1 replay, the client gets the answer', async () => {
    const h = await harness({ mode: 'oauth' });
    const revoked = h.proxy.credentials.current();
    if (revoked?.kind !== 'bearer') throw new Error('no token');
    const tokens: string[] = [];
    h.sim.route('POST', '/crm/rest/v1/__revoked', (req, res) => {
      const token = String(req.headers.authorization).slice('Bearer '.length);
      tokens.push(token);
      if (token === revoked.token) {
        res.writeHead(401, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            fault: {
              faultstring: 'Access Token not approved',
              detail: { errorcode: 'keymanagement.service.access_token_not_approved' },
            },
          }),
        );
      } else {
        res.writeHead(201, { 'content-type': 'application/json' }).end('{"id":1}');
      }
    });
    const tokenCalls = h.sim.counters.tokenCalls;
    const r = await send(h.proxy.url, 'POST', '/crm/rest/v1/__revoked', {
      body: '{"x":1}',
      headers: { 'content-type': 'application/json' },
    });
    expect(r.status).toBe(201);
    expect(h.sim.counters.tokenCalls - tokenCalls).toBe(1);
    expect(tokens).toHaveLength(2);
    expect(tokens[0]).toBe(revoked.token);
    expect(tokens[1]).not.toBe(revoked.token);
    expect(h.logs.entries.some((e) => e.event === 'app_not_approved')).toBe(false);
  });

  it('client_id_not_approved: no refresh, no replay, the client gets the 401 and the operator an error line', async () => {
    const h = await harness({ mode: 'oauth' });
    const tokenCalls = h.sim.counters.tokenCalls;
    const apiCalls = h.sim.counters.apiCalls;
    const r = await send(
      h.proxy.url,
      'GET',
      '/crm/rest/v1/__fault?errorcode=keymanagement.service.invalid_client-client_id_not_approved',
    );
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({
      fault: { detail: { errorcode: 'keymanagement.service.invalid_client-client_id_not_approved' } },
    });
    expect(h.sim.counters.tokenCalls).toBe(tokenCalls);
    expect(h.sim.counters.apiCalls - apiCalls).toBe(1);
    expect(h.logs.entries.find((e) => e.event === 'app_not_approved')).toMatchObject({
      level: 'error',
      errorcode: 'keymanagement.service.invalid_client-client_id_not_approved',
    });
  });
});

/**
 * A proxy whose token broker runs on an injected clock, so the refresh floor or a token's
 * refresh time can be crossed without waiting for it; its store holds `stored` if given.
 */
async function startClockedProxy(
  sim: KeapSimulator,
  now: () => number,
  stored?: Grant,
): Promise<{ url: string; logs: LogCapture; close(): Promise<void> }> {
  const dir = tempDir();
  const config = loadConfig({ env: oauthEnv(sim, dir), cwd: dir });
  if (stored !== undefined) await new FileTokenStore(storeFile(config)).save(stored);
  const logs = new LogCapture();
  const proxy = await startProxy(config, { logger: createLogger('trace', logs), now });
  return { url: proxy.url, logs, close: () => proxy.close() };
}

describe('the refresh floor', () => {
  const INVALID = '/crm/rest/v1/__fault?errorcode=keymanagement.service.invalid_access_token';

  it(`an upstream that rejects every token makes at most 1 refresh per ${REFRESH_FLOOR_MS / 1000} s of (injected) time`, async () => {
    // A simulator of its own: the seed refresh token is good for one proxy only.
    const sim = await KeapSimulator.start();
    let clock = Date.now();
    const proxy = await startClockedProxy(sim, () => clock).catch(async (err: unknown) => {
      await sim.close();
      throw err;
    });
    try {
      const start = clock;
      const refreshes = sim.counters.refreshGrants;
      const apiCalls = sim.counters.apiCalls;
      const refreshedAt: number[] = [];
      // One request per injected second for a minute.
      for (let second = 0; second < 60; second++) {
        clock = start + second * 1000;
        const before = sim.counters.refreshGrants;
        const r = await send(proxy.url, 'GET', INVALID);
        expect(r.status).toBe(401);
        expect(r.json()).toMatchObject({
          fault: { detail: { errorcode: 'keymanagement.service.invalid_access_token' } },
        });
        if (sim.counters.refreshGrants > before) refreshedAt.push(second);
      }
      expect(refreshedAt).toEqual([0, 10, 20, 30, 40, 50]);
      expect(sim.counters.refreshGrants - refreshes).toBe(6);
      // A refreshed request is replayed once (its second 401 goes to the client); a blocked one is not.
      expect(sim.counters.apiCalls - apiCalls).toBe(60 + 6);
      const floor = proxy.logs.entries.filter((e) => e.event === 'refresh_floor');
      expect(floor).toHaveLength(54);
      for (const e of floor) expect(e).toMatchObject({ level: 'warn', floorMs: REFRESH_FLOOR_MS });
      expect(proxy.logs.text()).not.toContain(String(sim.currentRefreshToken()));
      // The floor kept the token: requests Keap accepts still go through with it, with no token call.
      const calls = sim.counters.tokenCalls;
      expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
      expect(sim.counters.tokenCalls).toBe(calls);
    } finally {
      await proxy.close();
      await sim.close();
    }
  });

  it('the broker: inside the floor the rejected token is kept and false returned; a token expired by our clock, or already replaced, needs no floor', async () => {
    const h = await harness({ mode: 'oauth' });
    let clock = Date.now();
    const now = (): number => clock;
    const logs = new LogCapture();
    const broker = new TokenBroker({
      client: new TokenClient({
        tokenUrl: new URL(h.sim.tokenUrl),
        clientId: SIM_CLIENT_ID,
        clientSecret: SIM_CLIENT_SECRET,
        now,
      }),
      store: new FileTokenStore(storeFile(h.config)),
      logger: createLogger('trace', logs),
      seedRefreshToken: undefined,
      now,
      // Longer than a token lives: only our own clock's verdict can let the last refresh through.
      refreshFloorMs: 48 * 60 * 60_000,
    });
    try {
      await broker.start();
      const calls = (): number => h.sim.counters.tokenCalls;
      const base = calls();
      const a = await broker.get();
      expect(await broker.invalidate(a)).toBe(true);
      expect(calls() - base).toBe(1);
      const b = await broker.get();
      expect(b).not.toEqual(a);

      clock += 1000;
      expect(await broker.invalidate(b)).toBe(false);
      expect(broker.current()).toBe(b);
      expect(calls() - base).toBe(1);
      expect(logs.entries.filter((e) => e.event === 'refresh_floor')).toHaveLength(1);
      // A late 401 for the replaced token: the current one may be used, no refresh.
      expect(await broker.invalidate(a)).toBe(true);
      expect(calls() - base).toBe(1);

      // Still inside the floor a day later: b is still trusted by our clock, so still kept.
      clock += 23 * 60 * 60_000;
      expect(await broker.invalidate(b)).toBe(false);
      expect(logs.entries.filter((e) => e.event === 'refresh_floor')).toHaveLength(2);
      // Past b's 24 h: expired by our own clock, the floor does not apply.
      clock += 60 * 60_000;
      expect(await broker.invalidate(b)).toBe(true);
      expect(calls() - base).toBe(2);
      expect(logs.entries.filter((e) => e.event === 'refresh_floor')).toHaveLength(2);
    } finally {
      broker.stop();
    }
  });
});

describe('which of two grants supersedes the other (clocks of replicas disagree)', () => {
  const at = (refreshIssuedAt: number, refreshToken: string, accessToken = 'at'): Grant =>
    grantIssuedAt(refreshIssuedAt, { accessToken, refreshToken });
  const T = Date.UTC(2026, 10, 30, 12);
  it('a stored grant dated up to ten minutes before ours still wins: another replica saved it under the lock', () => {
    expect(supersedes(at(T - 9 * 60_000, 'theirs'), at(T, 'ours'))).toBe(true);
    expect(supersedes(at(T + 60_000, 'theirs'), at(T, 'ours'))).toBe(true);
  });
  it('one plainly older (a store restored from an older state) does not, nor the same grant', () => {
    expect(supersedes(at(T - 11 * 60_000, 'theirs'), at(T, 'ours'))).toBe(false);
    expect(supersedes(at(T + 60_000, 'same'), at(T, 'same'))).toBe(false);
  });
  it('any stored grant supersedes a seed, whatever its date', () => {
    expect(supersedes(at(T - 86_400_000, 'theirs'), at(T, 'seed', ''))).toBe(true);
  });
});
