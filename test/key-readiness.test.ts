// Key mode: readiness that tells the truth. A key Keap's gateway rejects (its 401 with a token
// fault on every call) turns /readyz red with `key_rejected`, and a warning is logged at most
// once a minute; the next call Keap accepts turns it green again. Against the simulator,
// configured with a key it does not accept, which it then accepts.
import { afterEach, describe, expect, it } from 'vitest';
import { parseMethodResponse, writeMethodCall, type XmlRpcValue } from '../src/keap/xmlrpc-codec.js';
import { harnessPerTest, send } from './harness.js';

const s = (value: string): XmlRpcValue => ({ type: 'string', value });

const startHarness = harnessPerTest(afterEach);

const UNKNOWN_KEY = 'KeapAK-0123456789abcdef-not-yet-issued';

describe('key mode: /readyz says whether Keap accepts the key', () => {
  it('a key Keap rejects turns /readyz red (key_rejected) until a call is accepted', async () => {
    let now = Date.UTC(2026, 0, 1);
    const h = await startHarness({ mode: 'key', env: { KEAP_API_KEY: UNKNOWN_KEY }, overrides: { now: () => now } });
    const { proxy, sim, logs } = h;
    // Nothing is known of the key before its first call.
    expect((await send(proxy.url, 'GET', '/readyz')).status).toBe(200);

    const rejected = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(rejected.status).toBe(401);
    // The client sees Keap's answer as it is.
    expect(rejected.json()).toMatchObject({
      fault: { detail: { errorcode: 'keymanagement.service.invalid_access_token' } },
    });
    const red = await send(proxy.url, 'GET', '/readyz');
    expect(red.status).toBe(503);
    expect(red.json()).toMatchObject({
      error: 'key_rejected',
      details: { mode: 'key', errorcode: 'keymanagement.service.invalid_access_token' },
    });

    const warned = () => logs.entries.filter((e) => e.event === 'key_rejected');
    expect(warned()).toHaveLength(1);
    expect(warned()[0]).toMatchObject({ level: 'warn', errorcode: 'keymanagement.service.invalid_access_token' });
    // More rejections within the minute: no more warnings.
    now += 59_999;
    await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    await send(proxy.url, 'GET', '/crm/rest/v1/tags');
    expect(warned()).toHaveLength(1);
    now += 1;
    await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(warned()).toHaveLength(2);
    expect(warned()[1]).toMatchObject({ rejections: 3 });

    // Keap issues the key: the next call goes through and /readyz turns green.
    sim.acceptApiKey(UNKNOWN_KEY);
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    const green = await send(proxy.url, 'GET', '/readyz');
    expect(green.status).toBe(200);
    expect(green.json()).toMatchObject({ status: 'ready', mode: 'key' });
    expect(logs.entries.filter((e) => e.event === 'key_accepted')).toHaveLength(1);
    // The key is never in a log line.
    expect(logs.text()).not.toContain(UNKNOWN_KEY);

    // Revoked again: red again, and warned at once (a new rejection, not the old one's minute).
    sim.acceptApiKey(UNKNOWN_KEY, false);
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(401);
    expect((await send(proxy.url, 'GET', '/readyz')).status).toBe(503);
    expect(warned()).toHaveLength(3);
  });

  it("the application's own 401 (no Apigee fault) and Keap's 404 say the key was accepted", async () => {
    const h = await startHarness({ mode: 'key' });
    h.sim.route('GET', '/crm/rest/v1/own-401', (_req, res) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"message":"not yours"}');
    });
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/own-401')).status).toBe(401);
    expect((await send(h.proxy.url, 'GET', '/readyz')).status).toBe(200);
    expect(h.logs.entries.filter((e) => e.event === 'key_rejected')).toEqual([]);
  });

  it("translated XML-RPC calls judge the key too: their REST calls' answers turn /readyz red and green", async () => {
    const h = await startHarness({
      mode: 'key',
      env: { KEAP_API_KEY: UNKNOWN_KEY, XMLRPC_MODE: 'translate' },
      sim: { xmlrpc: 'keap' },
    });
    const call = () =>
      send(h.proxy.url, 'POST', '/api/xmlrpc', {
        body: writeMethodCall({
          methodName: 'ContactService.findByEmail',
          params: [s('k'), s('nobody@example.com'), { type: 'array', value: [s('Id')] }],
        }),
      });
    await call();
    expect((await send(h.proxy.url, 'GET', '/readyz')).json()).toMatchObject({ error: 'key_rejected' });
    h.sim.acceptApiKey(UNKNOWN_KEY);
    expect(parseMethodResponse((await call()).body)).toEqual({ kind: 'value', value: { type: 'array', value: [] } });
    expect((await send(h.proxy.url, 'GET', '/readyz')).status).toBe(200);
  });
});
