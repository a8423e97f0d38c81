// XML-RPC clients get XML-RPC answers: every error the proxy itself produces on an XML-RPC
// call is a <methodResponse><fault> over HTTP 200 in text/xml; REST calls keep their JSON.
import { describe, it, expect, afterEach } from 'vitest';
import { faultFor, faultXml } from '../src/http/xmlrpc-fault.js';
import { HttpError } from '../src/http/http-error.js';
import { harnessPerTest, send } from './harness.js';

const startHarness = harnessPerTest(afterEach);

const CALL =
  '<?xml version="1.0"?><methodCall><methodName>ContactService.load</methodName><params>' +
  '<param><value><string>k</string></value></param><param><value><int>1</int></value></param></params></methodCall>';

/** faultCode and faultString of a fault answer, read with the grammar Keap's faults follow. */
function fault(text: string): { code: number; string: string } {
  const m =
    /^<\?xml version="1\.0" encoding="UTF-8"\?><methodResponse><fault><value><struct><member><name>faultCode<\/name><value><i4>(-?\d+)<\/i4><\/value><\/member><member><name>faultString<\/name><value><string>([^<]*)<\/string><\/value><\/member><\/struct><\/value><\/fault><\/methodResponse>$/.exec(
      text,
    );
  if (m === null) throw new Error(`not an XML-RPC fault: ${text.slice(0, 200)}`);
  return { code: Number(m[1]), string: m[2] as string };
}

describe('faults for XML-RPC calls', () => {
  it('a body over MAX_BODY_BYTES: a fault (code 3) with the advice, connection: close, nothing sent to Keap', async () => {
    const h = await startHarness({ mode: 'key', env: { MAX_BODY_BYTES: '100' } });
    const r = await send(h.proxy.url, 'POST', '/api/xmlrpc', { body: CALL + ' '.repeat(200) });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/xml; charset=utf-8');
    expect(fault(r.text())).toEqual({
      code: 3,
      string:
        '[Unexpected]Request body is larger than 100 bytes (MAX_BODY_BYTES); send a smaller body. (keap-proxy: body_too_large)',
    });
    expect(r.headers.connection).toBe('close');
    expect(h.sim.counters.apiCalls).toBe(0);
  });

  it('no token and none to be had: a fault with Retry-After, telling the operator what to do', async () => {
    const h = await startHarness({ mode: 'oauth', sim: { seedRefreshToken: 'not-the-seed' } });
    const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body: CALL });
    expect(r.status).toBe(200);
    const f = fault(r.text());
    expect(f.code).toBe(1);
    expect(f.string).toMatch(
      /^\[InvalidConfig\]Keap authorization is needed: .*keap-proxy auth.*\(keap-proxy: reauthorization_required\)$/,
    );
    expect(r.headers['retry-after']).toBe('60');
    expect(r.headers['x-request-id']).toMatch(/./);
  });

  it('Keap unreachable: a fault naming KEAP_API_URL, while a REST call to the same proxy still gets JSON', async () => {
    const h = await startHarness({ mode: 'key', env: { KEAP_API_URL: 'http://127.0.0.1:9' } });
    const x = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body: CALL });
    expect(x.status).toBe(200);
    expect(fault(x.text())).toMatchObject({ code: 3 });
    expect(fault(x.text()).string).toContain('KEAP_API_URL');
    const rest = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(rest.status).toBe(502);
    expect(rest.json()).toMatchObject({ error: 'upstream_unreachable' });
  });
});

describe('fault text', () => {
  it("follows Keap's table where a code fits, and says which error of the proxy's it was", () => {
    expect(faultFor(new HttpError(401, 'client_unauthorized', 'Send a key.'))).toEqual({
      faultCode: 2,
      faultString: '[InvalidKey]Send a key. (keap-proxy: client_unauthorized)',
    });
    expect(faultFor(new HttpError(429, 'rate_limited', 'Retry later.'))).toEqual({
      faultCode: 3,
      faultString: '[Unexpected]Retry later. (keap-proxy: rate_limited)',
    });
  });

  it('escapes markup and drops what XML 1.0 cannot hold', () => {
    expect(faultXml(0, 'a <b> & "c" \u0001\u0008 \ud800 ok')).toContain(
      '<string>a &lt;b&gt; &amp; &quot;c&quot;   ok</string>',
    );
  });
});
