// The XML-RPC reader under garbage (fast-check): whatever the bytes, it answers or refuses
// with XmlRpcError, never another error; what it accepts it rewrites so that the key is the
// only change; entity expansion is never performed. Through the proxy, garbage gets a fault.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import fc from 'fast-check';
import { readMethodName, readPrivateKey, rewritePrivateKey, XmlRpcError } from '../src/keap/xmlrpc.js';
import { startHarness, send, type Harness } from './harness.js';

const KEY = 'the-account-key';

/** Runs `fn`; an XmlRpcError is a refusal, anything else thrown is a defect. */
function refusedOrAnswered<T>(fn: () => T): { ok: true; value: T } | { ok: false } {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    if (err instanceof XmlRpcError) return { ok: false };
    throw err;
  }
}

/** Bodies that look like XML-RPC some of the way, then go wrong anywhere. */
const fragments = fc.constantFrom(
  '<?xml version="1.0"?>',
  '<methodCall>',
  '</methodCall>',
  '<methodName>',
  '</methodName>',
  'ContactService.load',
  '<params>',
  '</params>',
  '<param>',
  '</param>',
  '<value>',
  '</value>',
  '<string>',
  '</string>',
  '<int>1</int>',
  '<struct><member><name>a</name><value>b</value></member></struct>',
  '<![CDATA[x]]>',
  '<!-- c -->',
  '&amp;',
  '&#x41;',
  '&lol;',
  '<!DOCTYPE x [<!ENTITY lol "lol">]>',
  '<',
  '>',
  '&',
  '"',
  ' ',
  '\u0000',
  '\ud800',
  'é',
);
const xmlish = fc.array(fragments, { maxLength: 30 }).map((parts) => parts.join(''));

describe('the XML-RPC reader under fuzz', () => {
  it('any bytes: an answer or an XmlRpcError, never another error', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
          xmlish.map((s) => Buffer.from(s)),
        ),
        (body) => {
          refusedOrAnswered(() => readMethodName(body));
          refusedOrAnswered(() => readPrivateKey(body));
          refusedOrAnswered(() => rewritePrivateKey(body, KEY));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('a call it accepts is rewritten with the key as the only change, and reads back the key', () => {
    let accepted = 0;
    // Well-formed calls, so that acceptance is common, with garbage around the first param.
    const calls = fc
      .tuple(xmlish, fc.constantFrom('', '<params>', '<params><param><value>'))
      .map(([inner, open]) => `<methodCall><methodName>A.b</methodName>${open}${inner}`);
    fc.assert(
      fc.property(
        fc.oneof(xmlish, calls, fc.constant('<methodCall><methodName>A.b</methodName></methodCall>')),
        (text) => {
          const body = Buffer.from(text);
          const rewritten = refusedOrAnswered(() => rewritePrivateKey(body, KEY));
          if (!rewritten.ok) return;
          accepted += 1;
          expect(readPrivateKey(rewritten.value)).toBe(KEY);
          expect(readMethodName(rewritten.value)).toBe(readMethodName(body));
        },
      ),
      { numRuns: 3000 },
    );
    // Not vacuous: some of the generated calls were accepted and checked.
    expect(accepted).toBeGreaterThan(0);
  });

  it('refuses entity declarations ("billion laughs") rather than expanding them', () => {
    const laughs =
      '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">' +
      '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>' +
      '<methodCall><methodName>x.y</methodName><params><param><value><string>&lol3;</string></value></param></params></methodCall>';
    expect(() => readPrivateKey(Buffer.from(laughs))).toThrow(XmlRpcError);
    expect(() => readPrivateKey(Buffer.from(laughs))).toThrow(/<!DOCTYPE are not accepted/);
  });
});

describe('garbage through the proxy', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ mode: 'key', env: { LOG_LEVEL: 'silent' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it("gets an XML-RPC fault or Keap's answer, and the proxy keeps serving", async () => {
    await fc.assert(
      fc.asyncProperty(xmlish, async (text) => {
        const r = await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body: text });
        expect(r.status).toBe(200);
        expect(r.headers['content-type']).toMatch(/xml/);
      }),
      { numRuns: 150 },
    );
    expect((await send(h.proxy.url, 'GET', '/healthz')).status).toBe(200);
  });
});
