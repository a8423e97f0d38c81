// XML-RPC values read (saxes underneath) and written whole: what the translation to REST v2
// will answer legacy clients with. Round trips on generated values, Keap's own documents, and
// refusals for what is not well-formed XML-RPC.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  parseMethodCall,
  parseMethodResponse,
  writeFault,
  writeMethodCall,
  writeMethodResponse,
  type XmlRpcValue,
} from '../src/keap/xmlrpc-codec.js';
import { XmlRpcError } from '../src/keap/xmlrpc.js';

/** Text XML can carry (the writer drops what it cannot; that is tested on its own below). */
const xmlString = fc
  .string({ unit: 'grapheme', maxLength: 30 })
  .map((s) => s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff\r]/g, ''));

const value: fc.Arbitrary<XmlRpcValue> = fc.letrec<{ value: XmlRpcValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((n) => ({ type: 'int' as const, value: n })),
    fc.boolean().map((b) => ({ type: 'boolean' as const, value: b })),
    xmlString.map((s) => ({ type: 'string' as const, value: s })),
    fc
      .double({ noNaN: true, noDefaultInfinity: true })
      .filter((d) => !Object.is(d, -0))
      .map((d) => ({ type: 'double' as const, value: d })),
    fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => ({
      type: 'dateTime' as const,
      value: d.toISOString().slice(0, 19).replace(/[-]/g, ''),
    })),
    fc.uint8Array({ maxLength: 20 }).map((a) => ({ type: 'base64' as const, value: Buffer.from(a) })),
    fc.constant({ type: 'nil' as const }),
    fc.array(tie('value'), { maxLength: 4 }).map((a) => ({ type: 'array' as const, value: a })),
    fc
      .uniqueArray(fc.tuple(xmlString, tie('value')), { maxLength: 4, selector: ([k]) => k })
      .map((entries) => ({ type: 'struct' as const, value: new Map(entries) })),
  ),
})).value;

describe('the XML-RPC codec', () => {
  it('reads back every value it writes, in a response and in a call', () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(parseMethodResponse(writeMethodResponse(v))).toEqual({ kind: 'value', value: v });
        expect(parseMethodCall(writeMethodCall({ methodName: 'A.b', params: [v, v] }))).toEqual({
          methodName: 'A.b',
          params: [v, v],
        });
      }),
      { numRuns: 500 },
    );
  });

  it("reads Keap's own fault and classic untyped values", () => {
    // The fault body as Keap sends it (keap-xmlrpc-to-rest-v2.md, 4.3).
    const keapFault =
      '<?xml version="1.0" encoding="utf-8"?><methodResponse><fault><value><struct><member><name>faultCode</name><value><i4>13</i4></value></member><member><name>faultString</name><value>[FailedLoginAttempt]username not found: test@test.com</value></member></struct></value></fault></methodResponse>';
    expect(parseMethodResponse(keapFault)).toEqual({
      kind: 'fault',
      faultCode: 13,
      faultString: '[FailedLoginAttempt]username not found: test@test.com',
    });
    expect(parseMethodResponse(writeFault(5, '[RecordNotFound]Record not found for Id:7 & <x>'))).toEqual({
      kind: 'fault',
      faultCode: 5,
      faultString: '[RecordNotFound]Record not found for Id:7 & <x>',
    });
    const call = parseMethodCall(
      '<methodCall>\n <methodName> ContactService.load </methodName>\n <params><param><value>key</value></param>' +
        '<param><value><int>42</int></value></param><param><value><array><data><value>Id</value><value><![CDATA[Email]]></value></data></array></value></param></params></methodCall>',
    );
    expect(call).toEqual({
      methodName: 'ContactService.load',
      params: [
        { type: 'string', value: 'key' },
        { type: 'int', value: 42 },
        {
          type: 'array',
          value: [
            { type: 'string', value: 'Id' },
            { type: 'string', value: 'Email' },
          ],
        },
      ],
    });
  });

  it.each([
    ['not XML', 'hello'],
    ['mismatched tags', '<methodCall><methodName>a.b</methodName><params></methodCall>'],
    [
      'a DOCTYPE (no entity is ever expanded)',
      '<!DOCTYPE x [<!ENTITY a "b">]><methodCall><methodName>&a;</methodName></methodCall>',
    ],
    ['an undefined entity', '<methodCall><methodName>&lol;</methodName></methodCall>'],
    [
      'an int out of range',
      '<methodCall><methodName>a.b</methodName><params><param><value><int>2147483648</int></value></param></params></methodCall>',
    ],
    [
      'a boolean that is not 0 or 1',
      '<methodCall><methodName>a.b</methodName><params><param><value><boolean>true</boolean></value></param></params></methodCall>',
    ],
    [
      'an unknown type',
      '<methodCall><methodName>a.b</methodName><params><param><value><float>1</float></value></param></params></methodCall>',
    ],
    [
      'nesting past the limit',
      `<methodCall><methodName>a.b</methodName><params><param>${'<value><array><data>'.repeat(40)}${'</data></array></value>'.repeat(40)}</param></params></methodCall>`,
    ],
    [
      'a response with two params',
      '<methodResponse><params><param><value>a</value></param><param><value>b</value></param></params></methodResponse>',
    ],
  ])('refuses %s with an XmlRpcError', (_what, body) => {
    const parse = body.includes('methodResponse') ? parseMethodResponse : parseMethodCall;
    expect(() => parse(body)).toThrow(XmlRpcError);
  });

  it('any bytes: a value or an XmlRpcError, never another error', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 200 }),
          fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
        ),
        (body) => {
          for (const parse of [parseMethodCall, parseMethodResponse]) {
            try {
              parse(body);
            } catch (err) {
              expect(err).toBeInstanceOf(XmlRpcError);
            }
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('writes only what XML can hold: forbidden characters are dropped, markup escaped', () => {
    const written = writeMethodResponse({ type: 'string', value: 'a\u0001b<c>&\ud800' });
    expect(written).toContain('<string>ab&lt;c&gt;&amp;</string>');
    expect(parseMethodResponse(written)).toEqual({ kind: 'value', value: { type: 'string', value: 'ab<c>&' } });
  });
});
