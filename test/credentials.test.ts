import { describe, it, expect, afterEach } from 'vitest';
import { startHarness, send, SIM_API_KEY, SIM_LEGACY_KEY, type Harness } from './harness.js';

interface Echo {
  headers: Record<string, string>;
}

const CLIENT_KEY = 'client-key-0123456789abcdef';

function xmlCall(privateKeyParam: string, method = 'ContactService.load'): string {
  return `<?xml version="1.0"?>\n<methodCall><methodName>${method}</methodName><params>${privateKeyParam}<param><value><int>42</int></value></param></params></methodCall>`;
}

/** The struct members the simulator's XML-RPC echo answers with. */
function member(xml: string, name: string): string | undefined {
  const m = new RegExp(`<name>${name}</name>\\s*<value>(?:<\\w+>)?([^<]*)`).exec(xml);
  return m?.[1]?.replace(
    /&(amp|lt|gt|quot|apos);/g,
    (_, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" })[e] ?? '',
  );
}

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe('OAuth mode', () => {
  it('exchanges the seed once at start, stores the grant and injects the bearer token', async () => {
    h = await startHarness({ mode: 'oauth' });
    expect(h.sim.counters.refreshGrants).toBe(1);
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', {
      headers: { authorization: 'Bearer client-supplied', 'x-keap-api-key': 'client-supplied-key' },
    });
    expect(r.status).toBe(200);
    const echo = r.json<Echo>();
    expect(echo.headers.authorization).toMatch(/^Bearer \S+$/);
    expect(echo.headers.authorization).not.toContain('client-supplied');
    expect(echo.headers['x-keap-api-key']).toBeUndefined();
    // More requests reuse the token: no further token calls.
    for (let i = 0; i < 5; i++) expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    expect(h.sim.counters.tokenCalls).toBe(1);
  });

  it('XML-RPC calls carry the bearer header; the body passes unchanged', async () => {
    h = await startHarness({ mode: 'oauth' });
    const body = xmlCall('<param><value><string>placeholder</string></value></param>');
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body, headers: { 'content-type': 'text/xml' } });
    expect(r.status).toBe(200);
    expect(member(r.text(), 'authenticatedBy')).toBe('bearer');
    expect(h.sim.lastRequests.at(-1)?.body.toString()).toBe(body);
  });

  it('/readyz is red with the reason when no grant can be had', async () => {
    h = await startHarness({ mode: 'oauth', env: { KEAP_REFRESH_TOKEN: 'not-a-live-token' } });
    const ready = await send(h.proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json()).toMatchObject({ error: 'reauthorization_required' });
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(503);
    expect(r.json()).toMatchObject({ error: 'reauthorization_required' });
    expect(h.sim.counters.apiCalls).toBe(0);
    expect((await send(h.proxy.url, 'GET', '/healthz')).status).toBe(200);
  });
});

describe('key mode', () => {
  it('injects X-Keap-API-Key on REST calls and strips client credentials', async () => {
    h = await startHarness({ mode: 'key' });
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', {
      headers: { authorization: 'Bearer theirs', 'X-Keap-API-Key': 'theirs' },
    });
    const echo = r.json<Echo>();
    expect(echo.headers['x-keap-api-key']).toBe(SIM_API_KEY);
    expect(echo.headers.authorization).toBeUndefined();
  });

  it('writes the key into the XML-RPC privateKey, keeping the rest of the body byte-identical', async () => {
    h = await startHarness({ mode: 'key' });
    const tail = '<param><value><int>42</int></value></param></params></methodCall>';
    const body = `<?xml version="1.0"?>\n<methodCall><methodName>ContactService.load</methodName><params><param><value><string>client junk</string></value></param>${tail}`;
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body, headers: { 'content-type': 'text/xml' } });
    expect(r.status).toBe(200);
    expect(member(r.text(), 'privateKey')).toBe(SIM_API_KEY);
    const sent = h.sim.lastRequests.at(-1);
    expect(sent?.headers['x-keap-api-key']).toBe(SIM_API_KEY);
    expect(sent?.headers['content-length']).toBe(String(sent?.body.length));
    expect(sent?.body.toString()).toBe(body.replace('client junk', SIM_API_KEY));
  });

  it.each([
    ['empty string', '<param><value><string></string></value></param>'],
    ['self-closed string', '<param><value><string/></value></param>'],
    ['bare value', '<param><value>x</value></param>'],
    ['whitespace', '<param>\n  <value>\n    <string>x</string>\n  </value>\n</param>'],
  ])('replaces a %s privateKey', async (_name, param) => {
    h = await startHarness({ mode: 'key' });
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body: xmlCall(param) });
    expect(member(r.text(), 'privateKey')).toBe(SIM_API_KEY);
    expect(member(r.text(), 'paramCount')).toBe('2');
  });

  it('XML-escapes a legacy key and serves the old /api/xmlrpc path from /crm/xmlrpc/v1', async () => {
    const key = `legacy&<key>"'`;
    h = await startHarness({ mode: 'key', env: { KEAP_API_KEY: key }, sim: { legacyKeys: [key], apiKeys: [key] } });
    const r = await send(h.proxy.url, 'POST', '/api/xmlrpc', {
      body: xmlCall('<param><value><string></string></value></param>'),
    });
    expect(r.status).toBe(200);
    expect(member(r.text(), 'privateKey')).toBe(key);
    const sent = h.sim.lastRequests.at(-1);
    expect(sent?.url).toBe('/crm/xmlrpc/v1');
    expect(sent?.body.toString()).toContain('<string>legacy&amp;&lt;key&gt;&quot;&apos;</string>');
  });

  it('a legacy Encrypted Key authenticates through the privateKey', async () => {
    h = await startHarness({ mode: 'key', env: { KEAP_API_KEY: SIM_LEGACY_KEY } });
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc', {
      body: xmlCall('<param><value><string></string></value></param>'),
    });
    expect(member(r.text(), 'authenticatedBy')).toBe('legacy-key');
  });

  it('inserts a privateKey into a call with no params', async () => {
    h = await startHarness({ mode: 'key' });
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
      body: '<?xml version="1.0"?><methodCall><methodName>DataService.echo</methodName></methodCall>',
    });
    expect(member(r.text(), 'privateKey')).toBe(SIM_API_KEY);
  });

  it('malformed XML-RPC gets a parse fault (code 0, as Keap answers it) and never reaches Keap', async () => {
    h = await startHarness({ mode: 'key' });
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
      body: '<methodCall><methodName>x</methodName><params><param><value><string>oops',
    });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/xml; charset=utf-8');
    expect(r.text()).toMatch(/<name>faultCode<\/name><value><i4>0<\/i4><\/value>/);
    expect(r.text()).toMatch(/Failed to parse XML-RPC request: .*\(keap-proxy: malformed_xmlrpc\)/);
    expect(h.sim.counters.apiCalls).toBe(0);
  });
});

describe('client keys (PROXY_CLIENT_KEYS)', () => {
  it('requires one of the keys as a bearer token, without calling Keap otherwise', async () => {
    h = await startHarness({ mode: 'key', env: { PROXY_CLIENT_KEYS: `other-key-aaaaaaaaaaaaaa,${CLIENT_KEY}` } });
    for (const headers of [
      {},
      { authorization: 'Bearer wrong-key-xxxxxxxxxxxx' },
      { authorization: `Basic ${CLIENT_KEY}` },
    ]) {
      const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts', { headers });
      expect(r.status).toBe(401);
      expect(r.json()).toMatchObject({ error: 'client_unauthorized' });
    }
    expect(h.sim.counters.apiCalls).toBe(0);
    const ok = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', {
      headers: { authorization: `Bearer ${CLIENT_KEY}` },
    });
    expect(ok.status).toBe(200);
    expect(ok.json<Echo>().headers.authorization).toBeUndefined();
    expect(ok.json<Echo>().headers['x-keap-api-key']).toBe(SIM_API_KEY);
  });

  it('XML-RPC clients may send the client key as privateKey; it never reaches Keap', async () => {
    h = await startHarness({ mode: 'oauth', env: { PROXY_CLIENT_KEYS: CLIENT_KEY } });
    const ok = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
      body: xmlCall(`<param><value><string>${CLIENT_KEY}</string></value></param>`),
    });
    expect(ok.status).toBe(200);
    expect(member(ok.text(), 'authenticatedBy')).toBe('bearer');
    expect(h.sim.lastRequests.at(-1)?.body.toString()).not.toContain(CLIENT_KEY);
    const bad = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
      body: xmlCall('<param><value><string>guess</string></value></param>'),
    });
    // An XML-RPC client reads a fault: Keap's InvalidKey.
    expect(bad.status).toBe(200);
    expect(bad.text()).toMatch(/<i4>2<\/i4>.*\[InvalidKey\]/);
  });

  it('health endpoints stay open and never go upstream', async () => {
    h = await startHarness({ mode: 'key', env: { PROXY_CLIENT_KEYS: CLIENT_KEY } });
    const health = await send(h.proxy.url, 'GET', '/healthz');
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({ status: 'ok' });
    const ready = await send(h.proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'ready', mode: 'key' });
    expect((await send(h.proxy.url, 'POST', '/healthz')).status).toBe(405);
    expect(h.sim.counters.apiCalls).toBe(0);
  });
});
