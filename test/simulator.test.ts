import { randomBytes } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  KeapSimulator,
  SIM_API_KEY,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_LEGACY_KEY,
  SIM_SCOPE,
  SIM_SEED,
  SIM_TENANT_ID,
} from './simulator/keap-simulator.js';
import { sha256, until } from './harness.js';

const BASIC = 'Basic ' + Buffer.from(`${SIM_CLIENT_ID}:${SIM_CLIENT_SECRET}`).toString('base64');
const FORM = 'application/x-www-form-urlencoded';

let sim: KeapSimulator;

beforeAll(async () => {
  sim = await KeapSimulator.start();
});
afterAll(async () => {
  await sim.close();
});
afterEach(() => {
  // Restore shared state the tests below may change.
  sim.setTokenEndpointMode('ok');
  sim.setApproved(true);
  sim.setRatePerSecond(0);
  sim.setRetryAfterOn429(false);
  sim.setDailyQuota(null);
  sim.setMinuteQuota(null);
  sim.clearRoutes();
  sim.setTenantHeaders('pipe');
  sim.setThrottleBody('apigee');
  sim.setEmptyQuotaHeadersOn401(true);
  sim.crm.reset();
});

interface TokenBody {
  access_token: string;
  token_type: string;
  expires_in: number;
  refresh_token: string;
  scope: string;
}

async function tokenCall(form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(sim.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': FORM, ...headers },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function refresh(refreshToken: string) {
  return tokenCall({ grant_type: 'refresh_token', refresh_token: refreshToken }, { authorization: BASIC });
}

/** Gets a fresh token pair through a code exchange (also makes the test independent of seed state). */
async function freshTokens(): Promise<TokenBody> {
  const redirect = 'https://app.example.com/cb';
  const r = await tokenCall({
    grant_type: 'authorization_code',
    code: sim.issueAuthorizationCode(redirect),
    redirect_uri: redirect,
    client_id: SIM_CLIENT_ID,
    client_secret: SIM_CLIENT_SECRET,
  });
  expect(r.status).toBe(200);
  return r.json as unknown as TokenBody;
}

function api(path: string, init: RequestInit = {}) {
  return fetch(sim.url + path, init);
}

/**
 * Sends a request, waits until the simulator has it and one more round trip to the simulator
 * has been made (an immediate answer would have come by then), and gives up on it: it must
 * have had no answer.
 */
async function expectNoAnswer(url: string, init: RequestInit, received: () => boolean): Promise<void> {
  const abort = new AbortController();
  const pending = fetch(url, { ...init, signal: abort.signal });
  await until('the simulator to have the request', received);
  const roundTrip = await api('/crm/rest/v1/__bytes?size=1', { headers: { 'x-keap-api-key': SIM_API_KEY } });
  expect(roundTrip.status).toBe(200);
  await roundTrip.arrayBuffer();
  abort.abort();
  await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
}

describe('POST /token', () => {
  it('refreshes the seed token with Basic client auth, rotating the refresh token', async () => {
    const seed = sim.currentRefreshToken();
    expect(seed).toBe(SIM_SEED);
    const before = { ...sim.counters };
    const r = await refresh(seed!);
    expect(r.status).toBe(200);
    const body = r.json as unknown as TokenBody;
    expect(body.token_type).toBe('bearer');
    expect(body.expires_in).toBe(86400);
    expect(body.scope).toBe(SIM_SCOPE);
    expect(body.access_token).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(body.refresh_token).not.toBe(seed);
    expect(sim.currentRefreshToken()).toBe(body.refresh_token);
    expect(sim.counters.refreshGrants).toBe(before.refreshGrants + 1);
    expect(sim.counters.tokenCalls).toBe(before.tokenCalls + 1);

    // The old refresh token died at once.
    const again = await refresh(seed!);
    expect(again.status).toBe(400);
    expect(again.json).toEqual({ error: 'invalid_grant', error_description: 'Invalid refresh token' });
    expect(sim.counters.invalidGrants).toBe(before.invalidGrants + 1);

    // The new one works, and the first access token is still valid (no revocation on refresh).
    const next = await refresh(body.refresh_token);
    expect(next.status).toBe(200);
    const res = await api('/crm/rest/v1/contacts', { headers: { authorization: `Bearer ${body.access_token}` } });
    expect(res.status).toBe(200);
  });

  it('accepts client credentials as form fields and records the request', async () => {
    const { refresh_token } = await freshTokens();
    const r = await tokenCall({
      grant_type: 'refresh_token',
      refresh_token,
      client_id: SIM_CLIENT_ID,
      client_secret: SIM_CLIENT_SECRET,
    });
    expect(r.status).toBe(200);
    const last = sim.lastTokenRequests.at(-1)!;
    expect(last.body.toString()).toContain(`client_id=${SIM_CLIENT_ID}`);
    expect(last.headers.authorization).toBeUndefined();
  });

  it('rejects wrong client credentials with 401 invalid_grant (Basic and form)', async () => {
    const before = sim.counters.invalidClients;
    const live = sim.currentRefreshToken()!;
    const wrongBasic = 'Basic ' + Buffer.from(`${SIM_CLIENT_ID}:nope`).toString('base64');
    const a = await tokenCall({ grant_type: 'refresh_token', refresh_token: live }, { authorization: wrongBasic });
    expect(a.status).toBe(401);
    expect(a.json).toEqual({
      error: 'invalid_grant',
      error_description: 'Unable to authenticate username and password',
    });
    const b = await tokenCall({
      grant_type: 'refresh_token',
      refresh_token: live,
      client_id: SIM_CLIENT_ID,
      client_secret: 'x',
    });
    expect(b.status).toBe(401);
    const c = await tokenCall({ grant_type: 'refresh_token', refresh_token: live }); // no client auth at all
    expect(c.status).toBe(401);
    expect(sim.counters.invalidClients).toBe(before + 3);
    // The refresh token was not consumed by the failed attempts.
    expect(sim.currentRefreshToken()).toBe(live);
  });

  it('exchanges a code once, checks redirect_uri, and replaces the live refresh token', async () => {
    const redirect = 'https://app.example.com/callback';
    const oldRefresh = sim.currentRefreshToken();
    const code = sim.issueAuthorizationCode(redirect);
    const form = {
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirect,
      client_id: SIM_CLIENT_ID,
      client_secret: SIM_CLIENT_SECRET,
    };
    const codeGrants = sim.counters.codeGrants;
    const ok = await tokenCall(form);
    expect(ok.status).toBe(200);
    expect(sim.counters.codeGrants).toBe(codeGrants + 1);
    expect(sim.currentRefreshToken()).toBe((ok.json as unknown as TokenBody).refresh_token);
    expect(sim.currentRefreshToken()).not.toBe(oldRefresh);

    const reuse = await tokenCall(form);
    expect(reuse.status).toBe(400);
    expect(reuse.json.error).toBe('invalid_grant');

    const code2 = sim.issueAuthorizationCode(redirect);
    const mismatch = await tokenCall({ ...form, code: code2, redirect_uri: 'https://evil.example.com/cb' });
    expect(mismatch.status).toBe(400);
    expect(mismatch.json.error).toBe('invalid_grant');
  });

  it('rejects refresh after revokeRefreshTokens, and bad grant types', async () => {
    const { refresh_token } = await freshTokens();
    sim.revokeRefreshTokens();
    expect(sim.currentRefreshToken()).toBeUndefined();
    const r = await refresh(refresh_token);
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_grant');
    const g = await tokenCall({ grant_type: 'password' }, { authorization: BASIC });
    expect(g.status).toBe(400);
    expect(g.json.error).toBe('unsupported_grant_type');
  });

  it('answers 500 in error500 mode and never answers in hang mode', async () => {
    sim.setTokenEndpointMode('error500');
    const r = await tokenCall({ grant_type: 'refresh_token', refresh_token: 'x' }, { authorization: BASIC });
    expect(r.status).toBe(500);
    expect(r.json.error).toBe('server_error');

    sim.setTokenEndpointMode('hang');
    const before = sim.lastTokenRequests.length;
    await expectNoAnswer(
      sim.tokenUrl,
      {
        method: 'POST',
        headers: { 'content-type': FORM, authorization: BASIC },
        body: 'grant_type=refresh_token&refresh_token=x',
      },
      () => sim.lastTokenRequests.length > before,
    );
  });
});

describe('API authentication (Apigee 401 faults)', () => {
  async function expectFault(res: Response, errorcode: string, faultstring: string) {
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ fault: { faultstring, detail: { errorcode } } });
  }

  it('answers oauth.v2.InvalidAccessToken without or with a malformed header, even on unknown paths', async () => {
    const before = { ...sim.counters };
    await expectFault(await api('/crm/rest/v1/contacts'), 'oauth.v2.InvalidAccessToken', 'Invalid access token');
    await expectFault(await api('/crm/rest/v1/no/such/thing'), 'oauth.v2.InvalidAccessToken', 'Invalid access token');
    await expectFault(
      await api('/crm/rest/v1/contacts', { headers: { authorization: BASIC } }),
      'oauth.v2.InvalidAccessToken',
      'Invalid access token',
    );
    expect(sim.counters.apiCalls).toBe(before.apiCalls + 3);
    expect(sim.counters.unauthorized).toBe(before.unauthorized + 3);
    expect(sim.lastRequests.at(-1)!.url).toBe('/crm/rest/v1/contacts');
  });

  it('answers invalid_access_token for unknown tokens and keys', async () => {
    await expectFault(
      await api('/crm/rest/v1/contacts', { headers: { authorization: 'Bearer not-a-token' } }),
      'keymanagement.service.invalid_access_token',
      'Invalid Access Token',
    );
    await expectFault(
      await api('/crm/rest/v1/contacts', { headers: { 'x-keap-api-key': 'KeapAK-wrong' } }),
      'keymanagement.service.invalid_access_token',
      'Invalid Access Token',
    );
  });

  it('answers access_token_expired after expireAccessTokens, until a refresh', async () => {
    const t = await freshTokens();
    const auth = { authorization: `Bearer ${t.access_token}` };
    expect((await api('/crm/rest/v1/contacts', { headers: auth })).status).toBe(200);
    sim.expireAccessTokens();
    await expectFault(
      await api('/crm/rest/v1/contacts', { headers: auth }),
      'keymanagement.service.access_token_expired',
      'Access Token expired',
    );
    const r = await refresh(t.refresh_token);
    expect(r.status).toBe(200);
    const res = await api('/crm/rest/v1/contacts', {
      headers: { authorization: `Bearer ${r.json.access_token as string}` },
    });
    expect(res.status).toBe(200);
  });

  it('expires tokens by their own expires_in', async () => {
    const token = sim.issueAccessToken(0.05);
    const auth = { authorization: `Bearer ${token}` };
    expect((await api('/crm/rest/v1/contacts', { headers: auth })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 80));
    await expectFault(
      await api('/crm/rest/v1/contacts', { headers: auth }),
      'keymanagement.service.access_token_expired',
      'Access Token expired',
    );
  });

  it('answers access_token_not_approved when the app is not approved', async () => {
    sim.setApproved(false);
    await expectFault(
      await api('/crm/rest/v1/contacts', { headers: { 'x-keap-api-key': SIM_API_KEY } }),
      'keymanagement.service.access_token_not_approved',
      'Access Token not approved',
    );
  });

  it('accepts an API key in X-Keap-API-Key or as Bearer, and 404s unknown paths once authenticated', async () => {
    const a = await api('/crm/rest/v1/contacts', { headers: { 'x-keap-api-key': SIM_API_KEY } });
    expect(a.status).toBe(200);
    expect(await a.json()).toMatchObject({ contacts: [], count: 0 });
    const b = await api('/crm/rest/v2/tags', { headers: { authorization: `Bearer ${SIM_API_KEY}` } });
    expect(b.status).toBe(200);
    expect(((await b.json()) as { tags: unknown[] }).tags).toHaveLength(2);
    const c = await api('/crm/rest/v1/no/such/thing', { headers: { 'x-keap-api-key': SIM_API_KEY } });
    expect(c.status).toBe(404);
    expect(c.headers.get('content-type')).toBe('application/json');
    expect(c.headers.get('x-keap-tenant-id')).toBe(SIM_TENANT_ID);
  });
});

describe('REST routes', () => {
  const key = { 'x-keap-api-key': SIM_API_KEY };

  it('echoes a binary body byte for byte', async () => {
    const payload = randomBytes(4096);
    const res = await api('/crm/rest/v1/__echo?x=1&y=%20', {
      method: 'PUT',
      headers: { ...key, 'content-type': 'application/octet-stream', 'x-custom': 'abc' },
      body: payload,
    });
    expect(res.status).toBe(200);
    const echo = (await res.json()) as Record<string, unknown> & { headers: Record<string, string> };
    expect(echo.method).toBe('PUT');
    expect(echo.url).toBe('/crm/rest/v1/__echo?x=1&y=%20');
    expect(echo.headers['x-custom']).toBe('abc');
    expect(echo.bodyLength).toBe(4096);
    expect(echo.bodySha256).toBe(sha256(payload));
    expect(Buffer.from(echo.bodyBase64 as string, 'base64').equals(payload)).toBe(true);
    expect(sim.lastRequests.at(-1)!.body.equals(payload)).toBe(true);

    // Large bodies: hash only.
    const big = randomBytes(100 * 1024);
    const bigRes = (await (
      await api('/crm/rest/v2/__echo', { method: 'POST', headers: key, body: big })
    ).json()) as Record<string, unknown>;
    expect(bigRes.bodyLength).toBe(big.length);
    expect(bigRes.bodySha256).toBe(sha256(big));
    expect(bigRes.bodyBase64).toBeUndefined();
  });

  it('streams chunks with chunked encoding, spaced in time', async () => {
    // The simulator's delays run on fake time (setTimeout only); the socket is real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const res = await api('/crm/rest/v1/__stream?chunks=3&delayMs=120', { headers: key });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-length')).toBeNull();
      expect(res.headers.get('transfer-encoding')).toBe('chunked');
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      const next = async (): Promise<string | undefined> => {
        const { done, value } = await reader.read();
        return done ? undefined : dec.decode(value);
      };
      // The first chunk comes at once; each next one only once delayMs have passed.
      expect(await next()).toBe('chunk 0\n');
      const second = next();
      let early = false;
      void second.then(() => (early = true));
      await vi.advanceTimersByTimeAsync(119);
      // A round trip to the simulator, after which a chunk written early would have arrived.
      expect((await api('/crm/rest/v1/__bytes?size=1', { headers: key })).status).toBe(200);
      expect(early).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(await second).toBe('chunk 1\n');
      const third = next();
      await vi.advanceTimersByTimeAsync(120);
      expect(await third).toBe('chunk 2\n');
      expect(await next()).toBeUndefined();
    } finally {
      vi.useRealTimers();
    }
  });

  it('serves deterministic bytes and hangs on __hang', async () => {
    const res = await api('/crm/rest/v1/__bytes?size=1000', { headers: key });
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const buf = Buffer.from(await res.arrayBuffer());
    expect(buf.length).toBe(1000);
    expect(buf[0]).toBe(0);
    expect(buf[250]).toBe(250);
    expect(buf[251]).toBe(0);
    expect(buf[999]).toBe(999 % 251);

    await expectNoAnswer(sim.url + '/crm/rest/v1/__hang', { headers: key }, () =>
      sim.lastRequests.some((q) => q.url === '/crm/rest/v1/__hang'),
    );
  });

  it('creates contacts and serves the fixed JSON routes', async () => {
    const created = await api('/crm/rest/v1/contacts', {
      method: 'POST',
      headers: { ...key, 'content-type': 'application/json' },
      body: JSON.stringify({ given_name: 'Grace', email_addresses: [{ email: 'grace@example.com', field: 'EMAIL1' }] }),
    });
    expect(created.status).toBe(201);
    const c = (await created.json()) as { id: number; given_name: string };
    expect(c.given_name).toBe('Grace');
    expect(typeof c.id).toBe('number');
    const ui = await api('/crm/rest/v1/oauth/connect/userinfo', { headers: key });
    expect(((await ui.json()) as { email: string }).email).toBe('sim.user@example.com');
    const prof = await api('/crm/rest/v1/account/profile', { headers: key });
    expect(((await prof.json()) as { id: string }).id).toBe(SIM_TENANT_ID);
  });

  it('runs route() overrides after auth and before built-ins', async () => {
    sim.route('GET', '/crm/rest/v1/contacts', (_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"message":"down"}');
    });
    expect((await api('/crm/rest/v1/contacts')).status).toBe(401);
    const res = await api('/crm/rest/v1/contacts', { headers: key });
    expect(res.status).toBe(503);
    expect(await res.text()).toBe('{"message":"down"}');
    expect(res.headers.get('x-keap-product-quota-limit')).toBe('30000'); // quota headers still set
    sim.clearRoutes();
    expect((await api('/crm/rest/v1/contacts', { headers: key })).status).toBe(200);
  });

  it('keeps connections alive', async () => {
    const ports = new Set<number>();
    const keepAliveAgent = new Agent({ keepAlive: true, maxSockets: 1 });
    const agentGet = () =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(`${sim.url}/crm/rest/v1/contacts`, { headers: key, agent: keepAliveAgent }, (res) => {
          res.resume();
          res.on('end', () => resolve(req.socket!.localPort!));
        });
        req.on('error', reject);
        req.end();
      });
    for (let i = 0; i < 5; i++) ports.add(await agentGet());
    keepAliveAgent.destroy();
    expect(ports.size).toBe(1);
  });
});

describe('XML-RPC', () => {
  const call = (method: string, first: string | null, extra = '') =>
    `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>` +
    (first === null ? '' : `<param><value>${first}</value></param>`) +
    extra +
    '</params></methodCall>';

  async function rpc(path: string, body: string, headers: Record<string, string> = {}) {
    const res = await api(path, { method: 'POST', headers: { 'content-type': 'text/xml', ...headers }, body });
    return { res, text: await res.text() };
  }

  function member(xml: string, name: string): string | undefined {
    const m = new RegExp(`<member><name>${name}</name><value><(?:string|int)>([^<]*)</`).exec(xml);
    return m?.[1];
  }

  it('answers a struct describing the call, authenticated by bearer or API key', async () => {
    const t = await freshTokens();
    const before = sim.counters.xmlrpcCalls;
    const a = await rpc(
      '/crm/xmlrpc/v1',
      call('ContactService.load', '<string>placeholder</string>', '<param><value><int>5</int></value></param>'),
      {
        authorization: `Bearer ${t.access_token}`,
      },
    );
    expect(a.res.status).toBe(200);
    expect(a.res.headers.get('content-type')).toContain('text/xml');
    expect(a.text.startsWith('<?xml version="1.0"?><methodResponse><params><param><value><struct>')).toBe(true);
    expect(member(a.text, 'methodName')).toBe('ContactService.load');
    expect(member(a.text, 'privateKey')).toBe('placeholder');
    expect(member(a.text, 'paramCount')).toBe('2');
    expect(member(a.text, 'authenticatedBy')).toBe('bearer');

    const b = await rpc('/crm/xmlrpc', call('DataService.query', 'bare &amp; &lt;text&gt;'), {
      'x-keap-api-key': SIM_API_KEY,
    });
    expect(member(b.text, 'authenticatedBy')).toBe('api-key');
    expect(member(b.text, 'privateKey')).toBe('bare &amp; &lt;text&gt;'); // decoded, then re-escaped in the response
    expect(sim.counters.xmlrpcCalls).toBe(before + 2);
  });

  it('accepts a legacy key as privateKey only without header credentials', async () => {
    const ok = await rpc('/crm/xmlrpc/v1', call('DataService.echo', `<string>${SIM_LEGACY_KEY}</string>`));
    expect(ok.res.status).toBe(200);
    expect(member(ok.text, 'authenticatedBy')).toBe('legacy-key');
    expect(member(ok.text, 'privateKey')).toBe(SIM_LEGACY_KEY);

    const wrong = await rpc('/crm/xmlrpc/v1', call('DataService.echo', '<string>not-a-key</string>'));
    expect(wrong.res.status).toBe(401);
    expect(JSON.parse(wrong.text).fault.detail.errorcode).toBe('oauth.v2.InvalidAccessToken');

    const badHeader = await rpc('/crm/xmlrpc/v1', call('DataService.echo', `<string>${SIM_LEGACY_KEY}</string>`), {
      authorization: 'Bearer nope',
    });
    expect(badHeader.res.status).toBe(401);
    expect(JSON.parse(badHeader.text).fault.detail.errorcode).toBe('keymanagement.service.invalid_access_token');
  });

  it('answers malformed XML with HTTP 200 and a fault', async () => {
    for (const body of [
      'not xml at all',
      '<methodCall><methodName>x</methodName><params></methodCall>',
      '<methodCall><params/></methodCall>',
    ]) {
      const r = await rpc('/crm/xmlrpc/v1', body, { 'x-keap-api-key': SIM_API_KEY });
      expect(r.res.status).toBe(200);
      expect(r.text).toContain('<methodResponse><fault>');
      expect(r.text).toContain('<name>faultCode</name>');
      expect(r.text).toMatch(/<name>faultString<\/name><value><string>Failed to parse XML-RPC request/);
    }
  });
});

describe('quotas and 429s', () => {
  const key = { 'x-keap-api-key': SIM_API_KEY };

  it('sends Keap quota headers with realistic counting', async () => {
    const t = await freshTokens();
    sim.resetQuotas();
    const auth = { authorization: `Bearer ${t.access_token}` };
    const r1 = await api('/crm/rest/v1/contacts', { headers: auth });
    const r2 = await api('/crm/rest/v1/contacts', { headers: auth });
    const h = r2.headers;
    expect(h.get('x-keap-product-quota-limit')).toBe('150000');
    expect(h.get('x-keap-product-quota-time-unit')).toBe('day');
    expect(h.get('x-keap-product-quota-interval')).toBe('1');
    expect(r1.headers.get('x-keap-product-quota-used')).toBe('1');
    expect(h.get('x-keap-product-quota-used')).toBe('2');
    expect(h.get('x-keap-product-quota-available')).toBe('149998');
    const d = new Date();
    const midnight = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
    expect(Number(h.get('x-keap-product-quota-expiry-time'))).toBe(midnight);
    expect(h.get('x-keap-product-throttle-limit')).toBe('1500');
    expect(h.get('x-keap-product-throttle-time-unit')).toBe('minute');
    expect(h.get('x-keap-product-throttle-used')).toBe('2');
    expect(h.get('x-keap-product-throttle-available')).toBe('1498');
    expect(h.get('x-keap-product-spike-limit')).toBe('25ps');
    expect(h.get('x-keap-tenant-id')).toBe(SIM_TENANT_ID);
    expect(h.get('x-keap-tenant-throttle-limit')).toBe('10000|250000');
    expect(h.get('x-keap-tenant-throttle-time-unit')).toBe('minute|day');
    expect(h.get('x-keap-tenant-throttle-used')).toBe('2|2');
    expect(h.get('x-keap-tenant-throttle-available')).toBe('9998|249998');

    // A PAT has its own, smaller bucket; the tenant counts both.
    const k = await api('/crm/rest/v1/contacts', { headers: key });
    expect(k.headers.get('x-keap-product-quota-limit')).toBe('30000');
    expect(k.headers.get('x-keap-product-quota-used')).toBe('1');
    expect(k.headers.get('x-keap-product-throttle-limit')).toBe('240');
    expect(k.headers.get('x-keap-product-spike-limit')).toBe('10ps');
    expect(k.headers.get('x-keap-tenant-throttle-used')).toBe('3|3');
  });

  it('reports the tenant limits it was started with (never enforced)', async () => {
    const own = await KeapSimulator.start({ tenantLimits: { minute: 7, day: 9 } });
    try {
      const auth = { authorization: `Bearer ${own.issueAccessToken()}` };
      // Past the minute limit: still 200. (Counts are read back, not assumed: a minute may roll over.)
      for (let i = 1; i <= 8; i++) {
        const r = await fetch(`${own.url}/crm/rest/v1/contacts`, { headers: auth });
        expect(r.status).toBe(200);
        expect(r.headers.get('x-keap-tenant-throttle-limit')).toBe('7|9');
        const [minute = NaN, day = NaN] = (r.headers.get('x-keap-tenant-throttle-used') ?? '').split('|').map(Number);
        expect(day).toBe(i);
        expect(r.headers.get('x-keap-tenant-throttle-available')).toBe(`${Math.max(0, 7 - minute)}|${9 - day}`);
      }
    } finally {
      await own.close();
    }
  });

  it('answers 429 SpikeArrestViolation over ratePerSecond, without then with Retry-After', async () => {
    // The spike window is judged on the simulator's clock: fake Date here, which the test moves.
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      await spikeArrest();
    } finally {
      vi.useRealTimers();
    }
  });

  async function spikeArrest(): Promise<void> {
    sim.setRatePerSecond(3);
    const before = sim.counters.throttled;
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 5; i++) {
      last = await api('/crm/rest/v1/contacts', { headers: key });
      statuses.push(last.status);
      if (last.status === 200) await last.arrayBuffer();
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect(sim.counters.throttled).toBe(before + 2);
    expect(last!.headers.get('retry-after')).toBeNull();
    expect(last!.headers.get('x-keap-product-spike-limit')).toBe('3ps');
    expect(last!.headers.get('x-keap-product-quota-limit')).toBe('30000');
    const body = (await last!.json()) as { fault: { faultstring: string; detail: { errorcode: string } } };
    expect(body.fault.detail.errorcode).toBe('policies.ratelimit.SpikeArrestViolation');
    expect(body.fault.faultstring).toContain('messagesPerPeriod=3');

    sim.setRatePerSecond(2); // fresh window
    sim.setRetryAfterOn429(true);
    await (await api('/crm/rest/v1/contacts', { headers: key })).arrayBuffer();
    await (await api('/crm/rest/v1/contacts', { headers: key })).arrayBuffer();
    const limited = await api('/crm/rest/v1/contacts', { headers: key });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('1');
    await limited.arrayBuffer();

    // Until the window slides past, calls are refused; then they pass again.
    vi.setSystemTime(Date.now() + 999);
    expect((await api('/crm/rest/v1/contacts', { headers: key })).status).toBe(429);
    vi.setSystemTime(Date.now() + 1);
    expect((await api('/crm/rest/v1/contacts', { headers: key })).status).toBe(200);
  }

  it('answers 429 QuotaViolation over an enforced minute quota', async () => {
    sim.resetQuotas();
    sim.setMinuteQuota(2);
    const s = [];
    for (let i = 0; i < 3; i++) {
      const r = await api('/crm/rest/v1/contacts', { headers: key });
      s.push(r.status);
      if (i === 2) {
        expect(r.headers.get('x-keap-product-throttle-available')).toBe('0');
        expect(r.headers.get('x-keap-product-throttle-used')).toBe('2');
        const body = (await r.json()) as { fault: { faultstring: string; detail: { errorcode: string } } };
        expect(body.fault.detail.errorcode).toBe('policies.ratelimit.QuotaViolation');
        expect(body.fault.faultstring).toMatch(/^Rate limit quota violation/);
      } else await r.arrayBuffer();
    }
    expect(s).toEqual([200, 200, 429]);

    sim.setDailyQuota(0);
    sim.setRetryAfterOn429(true);
    const d = await api('/crm/rest/v1/contacts', { headers: key });
    expect(d.status).toBe(429);
    const secondsToMidnight = Number(d.headers.get('retry-after'));
    expect(secondsToMidnight).toBeGreaterThan(0);
    expect(secondsToMidnight).toBeLessThanOrEqual(86400);
  });
});
