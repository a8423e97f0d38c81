// What README promises about malformed XML-RPC calls, held in both modes: a POST to an
// XML-RPC path whose body is missing or not a well-formed methodCall gets Keap's parse fault
// (HTTP 200, faultCode 0, `malformed_xmlrpc` at the end) from the proxy and never reaches Keap.
import { afterEach, describe, expect, it } from 'vitest';
import { harnessPerTest, send, SIM_API_KEY } from './harness.js';

const start = harnessPerTest(afterEach);

const MALFORMED: [string, string][] = [
  ['an unclosed first param', '<methodCall><methodName>x</methodName><params><param><value><string>oops'],
  [
    'a later param unclosed',
    '<methodCall><methodName>x</methodName><params><param><value><string>k</string></value></param><param><value><string>oops',
  ],
  ['not XML', 'hello'],
  ['text after </methodCall>', '<methodCall><methodName>DataService.echo</methodName></methodCall>trailing'],
  ['no body at all', ''],
];

describe.each([
  ['OAuth mode', 'oauth', {}],
  ['OAuth mode, XMLRPC_MODE=translate', 'oauth', { XMLRPC_MODE: 'translate' }],
  ['OAuth mode, XMLRPC_MODE=fallback', 'oauth', { XMLRPC_MODE: 'fallback' }],
  ['key mode', 'key', {}],
] as const)('%s', (_name, mode, env) => {
  it.each(MALFORMED)('%s: the parse fault, code 0, malformed_xmlrpc; Keap is not called', async (_what, body) => {
    const h = await start({ mode, env });
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body, headers: { 'content-type': 'text/xml' } });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/xml; charset=utf-8');
    expect(r.text()).toMatch(/<name>faultCode<\/name><value><i4>0<\/i4><\/value>/);
    expect(r.text()).toMatch(/Failed to parse XML-RPC request: .*\(keap-proxy: malformed_xmlrpc\)/);
    expect(h.sim.counters.apiCalls).toBe(0);
  });
});

describe("OAuth mode passes a well-formed call's privateKey as the client sent it", () => {
  it('Keap gets the bearer token and the privateKey untouched', async () => {
    const h = await start({ mode: 'oauth' });
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
      body: '<?xml version="1.0"?><methodCall><methodName>DataService.echo</methodName><params><param><value><string>what-the-client-sent</string></value></param></params></methodCall>',
    });
    expect(r.status).toBe(200);
    expect(r.text()).toContain('<name>privateKey</name><value><string>what-the-client-sent</string>');
    expect(r.text()).toContain('<name>authenticatedBy</name><value><string>bearer</string>');
    expect(r.text()).not.toContain(SIM_API_KEY);
  });
});
