// Only requests addressed to a loopback name or one in ALLOWED_HOSTS are served (DNS
// rebinding), and Keap's CORS headers reach clients only when RELAY_CORS_HEADERS is set.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { rawExchange } from './raw-upstream.js';
import { startHarness, harnessPerTest, send, type Harness } from './harness.js';
import { AllowedHosts, hostAllowed, hostName, parseAllowedHosts } from '../src/http/host-check.js';
import { endToEndHeaders } from '../src/upstream/forwarder.js';

let h: Harness;
let port: string;
beforeAll(async () => {
  h = await startHarness({
    mode: 'oauth',
    env: { ALLOWED_HOSTS: 'Proxy.Internal, 10.0.0.5', KEAP_REDIRECT_URI: 'http://127.0.0.1:8080/oauth/callback' },
  });
  port = new URL(h.proxy.url).port;
});
afterAll(async () => {
  await h.close();
});

describe('Host check', () => {
  const foreign = [
    'evil.example',
    'evil.example:8080',
    '127.0.0.1.evil.example',
    'localhost.evil.example',
    'proxy.internal.evil.example',
    '0.0.0.0:8080',
    '10.0.0.6',
    '127.1',
    '[::1].evil',
    '[::2]:80',
  ];

  it.each(foreign)(
    'Host: %s gets 421 on a proxied path, /oauth/start and /metrics, and Keap sees nothing',
    async (host) => {
      const api = h.sim.counters.apiCalls;
      const tokens = h.sim.counters.tokenCalls;
      for (const path of ['/crm/rest/v1/contacts', '/oauth/start', '/metrics', '/healthz/../metrics', '/readyzz']) {
        const r = await send(h.proxy.url, 'GET', path, { headers: { host } });
        expect(r.status, path).toBe(421);
        expect(r.headers['content-type']).toMatch(/^application\/json/);
        const body = r.json<{ error: string; message: string }>();
        expect(body.error).toBe('misdirected_request');
        expect(body.message).toMatch(/ALLOWED_HOSTS/);
        expect(body.message).toMatch(/127\.0\.0\.1/);
      }
      expect(h.sim.counters.apiCalls).toBe(api);
      expect(h.sim.counters.tokenCalls).toBe(tokens);
    },
  );

  it('a refused body-carrying request is not forwarded either', async () => {
    const api = h.sim.counters.apiCalls;
    const r = await send(h.proxy.url, 'POST', '/crm/rest/v1/contacts', {
      headers: { host: 'evil.example', 'content-type': 'application/json' },
      body: '{"given_name":"x"}',
    });
    expect(r.status).toBe(421);
    expect(h.sim.counters.apiCalls).toBe(api);
  });

  // PORT: the proxy's port, known only once it listens.
  it.each([
    '127.0.0.1:PORT',
    '127.0.0.1',
    'localhost',
    'LocalHost:PORT',
    'localhost.',
    '[::1]:PORT',
    '[::1]',
    '127.5.5.5',
    '127.255.255.255:1',
    'PROXY.internal',
    'proxy.INTERNAL:PORT',
    'proxy.internal.',
    '10.0.0.5:8080',
  ])('Host: %s is served', async (given) => {
    const host = given.replace('PORT', port);
    const before = h.sim.counters.apiCalls;
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', { headers: { host } });
    expect(r.status).toBe(200);
    expect(h.sim.counters.apiCalls).toBe(before + 1);
    expect((await send(h.proxy.url, 'GET', '/metrics', { headers: { host } })).status).toBe(200);
    expect((await send(h.proxy.url, 'GET', '/oauth/start', { headers: { host } })).status).toBe(302);
  });

  it('/healthz and /readyz answer a foreign Host (Kubernetes probes send the pod IP)', async () => {
    for (const path of ['/healthz', '/readyz', '/healthz?probe=1']) {
      const r = await send(h.proxy.url, 'GET', path, { headers: { host: '10.244.3.17:8080' } });
      expect(r.status, path).toBe(200);
    }
    expect((await send(h.proxy.url, 'GET', '/healthz', { headers: { host: 'evil.example' } })).status).toBe(200);
  });

  it('an HTTP/1.0 request without Host is served', async () => {
    const before = h.sim.counters.apiCalls;
    const reply = await rawExchange(h.proxy.url, 'GET /crm/rest/v1/__echo HTTP/1.0\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1\.1 200/);
    expect(h.sim.counters.apiCalls).toBe(before + 1);
  });

  it('an HTTP/1.0 request with a foreign Host is refused', async () => {
    const reply = await rawExchange(h.proxy.url, 'GET /crm/rest/v1/__echo HTTP/1.0\r\nHost: evil.example\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1\.1 421/);
    expect(reply).toContain('"error":"misdirected_request"');
  });

  it('a refused Host is logged once, without the query string', async () => {
    await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts?access_token=secret-in-query', {
      headers: { host: 'logged.example' },
    });
    await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts', { headers: { host: 'logged.example' } });
    const lines = h.logs.entries.filter((e) => e.event === 'host_refused' && e.host === 'logged.example');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', path: '/crm/rest/v1/contacts' });
    expect(h.logs.text()).not.toContain('secret-in-query');
  });
});

describe('hostAllowed', () => {
  const names = new Set(parseAllowedHosts('Proxy.Internal,10.0.0.5,[FD00:0::1]'));
  it.each([
    [undefined, true],
    ['', true],
    ['127.0.0.1', true],
    ['127.0.0.1:65535', true],
    ['localhost:1', true],
    ['[::1]:8080', true],
    ['proxy.internal:1', true],
    ['[fd00::1]:80', true],
    ['10.0.0.5', true],
    ['127.0.0.1.', true],
    ['::1', false],
    ['[::1', false],
    ['[::1]x', false],
    ['127.0.0.256', false],
    ['127.0.0', false],
    ['evil.example', false],
    ['internal', false],
    ['10.0.0.50', false],
  ] as const)('%s -> %s', (host, allowed) => {
    expect(hostAllowed(host, names)).toBe(allowed);
    // The memo of the last allowed value must never turn a refusal into a pass.
    const cached = new AllowedHosts([...names]);
    cached.allows('127.0.0.1');
    expect(cached.allows(host)).toBe(allowed);
    expect(cached.allows(host)).toBe(allowed);
  });

  it('hostName drops the port and a trailing dot, lower-cases, keeps IPv6 brackets', () => {
    expect(hostName('Example.COM.:80')).toBe('example.com');
    expect(hostName('[::1]:80')).toBe('[::1]');
  });
});

describe('parseAllowedHosts', () => {
  it('normalises entries as Host values are compared', () => {
    expect(parseAllowedHosts(' A.Example , b-1.example., ,10.1.2.3,::1,[2001:DB8:0:0::1],compose_service ')).toEqual([
      'a.example',
      'b-1.example',
      '10.1.2.3',
      '[::1]',
      '[2001:db8::1]',
      'compose_service',
    ]);
    expect(parseAllowedHosts('')).toEqual([]);
  });

  it.each([
    ['proxy.internal:8080', /without scheme or port/],
    ['http://proxy.internal', /without scheme or port/],
    ['*.internal', /wildcards are not supported/],
    ['bad host', /not a host name/],
    ['-lead.example', /not a host name/],
    ['a..b', /not a host name/],
  ])('refuses %s', (entry, why) => {
    expect(() => parseAllowedHosts(`ok.example,${entry}`)).toThrow(why);
  });
});

describe('CORS response headers', () => {
  const open = harnessPerTest(afterEach);
  const CORS = {
    'access-control-allow-origin': '*',
    'access-control-allow-credentials': 'true',
    'access-control-allow-methods': 'GET, POST',
    'access-control-allow-headers': 'authorization',
    'access-control-allow-private-network': 'true',
    'access-control-expose-headers': 'x-total',
    'access-control-max-age': '600',
  };

  async function corsHarness(env: Record<string, string>): Promise<Harness> {
    const c = await open({ mode: 'key', env: { CACHE_RULES: '/crm/rest/v1/__cors=60', ...env } });
    c.sim.route('GET', '/crm/rest/v1/__cors', (_req, res) => {
      res
        .writeHead(200, {
          ...CORS,
          vary: 'Origin',
          'x-kept': 'yes',
          'content-type': 'application/json',
          'content-length': '2',
        })
        .end('{}');
    });
    return c;
  }

  it('do not reach the client by default, relayed or from the cache', async () => {
    const c = await corsHarness({});
    for (const cache of ['MISS', 'HIT']) {
      const r = await send(c.proxy.url, 'GET', '/crm/rest/v1/__cors');
      expect(r.status).toBe(200);
      expect(r.headers['x-cache']).toBe(cache);
      for (const name of Object.keys(CORS)) expect(r.headers[name], `${cache} ${name}`).toBeUndefined();
      expect(r.headers['x-kept']).toBe('yes');
      expect(r.headers.vary).toBe('Origin');
    }
  });

  it('reach the client with RELAY_CORS_HEADERS=true, relayed and from the cache', async () => {
    const c = await corsHarness({ RELAY_CORS_HEADERS: 'true' });
    for (const cache of ['MISS', 'HIT']) {
      const r = await send(c.proxy.url, 'GET', '/crm/rest/v1/__cors');
      expect(r.headers['x-cache']).toBe(cache);
      for (const [name, value] of Object.entries(CORS)) expect(r.headers[name], `${cache} ${name}`).toBe(value);
    }
  });

  it('endToEndHeaders matches the names in any case and nothing else', () => {
    const raw = [
      'Access-Control-Allow-Origin',
      '*',
      'ACCESS-CONTROL-MAX-AGE',
      '1',
      'access-control-expose-headers',
      'x',
      'Access-Control-Request-Method',
      'GET',
      'access-control-max-ages',
      'kept',
      'X-Keap-Product-Throttle-Available',
      '9',
    ];
    expect(endToEndHeaders(raw)).toEqual([
      'Access-Control-Request-Method',
      'GET',
      'access-control-max-ages',
      'kept',
      'X-Keap-Product-Throttle-Available',
      '9',
    ]);
    expect(endToEndHeaders(raw, undefined, true)).toEqual(raw);
  });
});
