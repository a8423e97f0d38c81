import { describe, expect, it } from 'vitest';
import { XmlRpcError, escapeXml, readPrivateKey, rewritePrivateKey } from '../src/keap/xmlrpc.js';

const DECL = '<?xml version="1.0" encoding="UTF-8"?>';
const HEAD = '<methodCall><methodName>ContactService.load</methodName>';
const TAIL = '</methodCall>';
const KEY = 'SECRET-key-123';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');

/** A call whose first <param> holds `firstValue` (the whole <value>…</value>), then `rest` params. */
function call(firstValue: string, rest = '', decl = DECL): { body: Buffer; prefix: Buffer; suffix: Buffer } {
  const prefix = b(`${decl}${HEAD}<params><param>`);
  const suffix = b(`</param>${rest}</params>${TAIL}`);
  return { body: Buffer.concat([prefix, b(firstValue), suffix]), prefix, suffix };
}

/** The rewrite keeps `prefix` and `suffix` byte for byte and puts exactly `middle` between them. */
function expectSplice(out: Buffer, prefix: Buffer, middle: string, suffix: Buffer): void {
  expect(out.subarray(0, prefix.length).equals(prefix)).toBe(true);
  expect(out.subarray(out.length - suffix.length).equals(suffix)).toBe(true);
  expect(out.subarray(prefix.length, out.length - suffix.length).toString('utf8')).toBe(middle);
  expect(out.length).toBe(prefix.length + Buffer.byteLength(middle) + suffix.length);
}

function expectMalformed(body: Buffer, why?: RegExp): void {
  for (const fn of [() => readPrivateKey(body), () => rewritePrivateKey(body, KEY)]) {
    let err: unknown;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(XmlRpcError);
    const x = err as XmlRpcError;
    expect(x.code).toBe('malformed_xmlrpc');
    expect(x.message).toMatch(/^XML-RPC body is not a well-formed methodCall: /);
    if (why) expect(x.message).toMatch(why);
  }
}

describe('rewritePrivateKey: first value variants', () => {
  const cases: Array<[string, string, string, string]> = [
    // [name, first <value>, expected replacement of it, value read before rewrite]
    ['typed string', '<value><string>old</string></value>', `<value><string>${KEY}</string></value>`, 'old'],
    ['bare value', '<value>old</value>', `<value><string>${KEY}</string></value>`, 'old'],
    ['empty string element', '<value><string/></value>', `<value><string>${KEY}</string></value>`, ''],
    ['self-closing string with space', '<value><string /></value>', `<value><string>${KEY}</string></value>`, ''],
    ['empty string pair', '<value><string></string></value>', `<value><string>${KEY}</string></value>`, ''],
    ['self-closing value', '<value/>', `<value><string>${KEY}</string></value>`, ''],
    ['empty value pair', '<value></value>', `<value><string>${KEY}</string></value>`, ''],
    [
      'whitespace and newlines between tags',
      '\n  <value>\n <string>old</string>\n</value>\n',
      `\n  <value>\n <string>${KEY}</string>\n</value>\n`,
      'old',
    ],
    [
      'whitespace inside tags',
      '<value ><string >old</string ></value >',
      `<value ><string >${KEY}</string ></value >`,
      'old',
    ],
    [
      'bare value with whitespace is all string',
      '<value>  old \n</value>',
      `<value><string>${KEY}</string></value>`,
      '  old \n',
    ],
    [
      'CDATA inside string',
      '<value><string><![CDATA[a</string>&b]]></string></value>',
      `<value><string>${KEY}</string></value>`,
      'a</string>&b',
    ],
    ['CDATA in a bare value', '<value><![CDATA[<old>]]></value>', `<value><string>${KEY}</string></value>`, '<old>'],
    [
      'text, entities, CDATA and comment mixed inside string',
      '<value><string>a&amp;<!-- c --><![CDATA[&lt;]]>&#x42;</string></value>',
      `<value><string>${KEY}</string></value>`,
      'a&&lt;B',
    ],
    [
      'comments around the string',
      '<value><!-- x --><string>old</string><!-- y --></value>',
      `<value><!-- x --><string>${KEY}</string><!-- y --></value>`,
      'old',
    ],
    [
      'int (legacy junk) is replaced by a string',
      '<value><int>5</int></value>',
      `<value><string>${KEY}</string></value>`,
      '5',
    ],
    ['i4 with whitespace', '<value>\n  <i4>7</i4>\n</value>', `<value><string>${KEY}</string></value>`, '7'],
    ['nil', '<value><nil/></value>', `<value><string>${KEY}</string></value>`, ''],
    ['boolean', '<value><boolean>1</boolean></value>', `<value><string>${KEY}</string></value>`, '1'],
  ];

  for (const [name, value, expected, before] of cases) {
    it(name, () => {
      const { body, prefix, suffix } = call(value, '<param><value><int>42</int></value></param>');
      expect(readPrivateKey(body)).toBe(before);
      const out = rewritePrivateKey(body, KEY);
      expectSplice(out, prefix, expected, suffix);
      expect(readPrivateKey(out)).toBe(KEY);
    });
  }

  it('replaces a struct first value and reading a struct is refused', () => {
    const value = '<value><struct><member><name>a</name><value><string>b</string></value></member></struct></value>';
    const { body, prefix, suffix } = call(value);
    expect(() => readPrivateKey(body)).toThrow(XmlRpcError);
    expect(() => readPrivateKey(body)).toThrow(/must be a string, not a <struct>/);
    const out = rewritePrivateKey(body, KEY);
    expectSplice(out, prefix, `<value><string>${KEY}</string></value>`, suffix);
    expect(readPrivateKey(out)).toBe(KEY);
  });

  it('replaces an empty array first value', () => {
    const { body, prefix, suffix } = call('<value><array><data/></array></value>');
    expect(() => readPrivateKey(body)).toThrow(/not a <array>/);
    expectSplice(rewritePrivateKey(body, KEY), prefix, `<value><string>${KEY}</string></value>`, suffix);
  });

  it('works without an XML declaration', () => {
    const { body, prefix, suffix } = call('<value><string>old</string></value>', '', '');
    expect(body.toString().startsWith('<methodCall>')).toBe(true);
    expectSplice(rewritePrivateKey(body, KEY), prefix, `<value><string>${KEY}</string></value>`, suffix);
  });

  it('works with a UTF-8 BOM, comments and whitespace before the root', () => {
    const { body, prefix, suffix } = call('<value>old</value>', '', `\ufeff${DECL}\n<!-- hi -->\n`);
    expect(body.subarray(0, 3).equals(Buffer.from([0xef, 0xbb, 0xbf]))).toBe(true);
    expect(readPrivateKey(body)).toBe('old');
    expectSplice(rewritePrivateKey(body, KEY), prefix, `<value><string>${KEY}</string></value>`, suffix);
  });

  it('skips attributes (none in XML-RPC), even with ">" inside quotes', () => {
    const body = b(
      `<methodCall a="x>y" b='1'><methodName>M</methodName><params><param><value x="1"><string>old</string></value></param></params></methodCall>`,
    );
    expect(readPrivateKey(body)).toBe('old');
    expect(rewritePrivateKey(body, KEY).toString()).toBe(
      `<methodCall a="x>y" b='1'><methodName>M</methodName><params><param><value x="1"><string>${KEY}</string></value></param></params></methodCall>`,
    );
  });

  it('only the first param changes: later params with the same value stay', () => {
    const rest = '<param><value><string>old</string></value></param><param><value>old</value></param>';
    const { body, prefix, suffix } = call('<value><string>old</string></value>', rest);
    const out = rewritePrivateKey(body, KEY);
    expectSplice(out, prefix, `<value><string>${KEY}</string></value>`, suffix);
    expect(out.toString().split('old').length - 1).toBe(2);
  });

  it('does not mutate the input buffer', () => {
    const { body } = call('<value><string>old</string></value>');
    const copy = Buffer.from(body);
    rewritePrivateKey(body, KEY);
    expect(body.equals(copy)).toBe(true);
  });

  it('is idempotent for the same key', () => {
    for (const value of [
      '<value/>',
      '<value>x</value>',
      '<value><string>x</string></value>',
      '<value><int>1</int></value>',
    ]) {
      const once = rewritePrivateKey(call(value).body, KEY);
      expect(rewritePrivateKey(once, KEY).equals(once)).toBe(true);
    }
  });
});

describe('rewritePrivateKey: missing or empty <params>', () => {
  const inserted = `<params><param><value><string>${KEY}</string></value></param></params>`;

  it('inserts params right after </methodName> when there are none', () => {
    const prefix = b(`${DECL}\n<methodCall>\n  <methodName>DataService.echo</methodName>`);
    const suffix = b('\n</methodCall>\n');
    const body = Buffer.concat([prefix, suffix]);
    expect(readPrivateKey(body)).toBeUndefined();
    const out = rewritePrivateKey(body, KEY);
    expectSplice(out, prefix, inserted, suffix);
    expect(readPrivateKey(out)).toBe(KEY);
  });

  it('replaces <params/> with a params element holding the key', () => {
    for (const tag of ['<params/>', '<params />']) {
      const prefix = b(`${HEAD}\n`);
      const suffix = b(`\n${TAIL}`);
      const body = Buffer.concat([prefix, b(tag), suffix]);
      expect(readPrivateKey(body)).toBeUndefined();
      const out = rewritePrivateKey(body, KEY);
      expectSplice(out, prefix, inserted, suffix);
      expect(readPrivateKey(out)).toBe(KEY);
      expect(out.toString().match(/<params/g)).toHaveLength(1);
    }
  });

  it('inserts a first param into an empty <params></params>', () => {
    for (const inner of ['', '\n  ', '<!-- none -->']) {
      const prefix = b(`${HEAD}<params>`);
      const suffix = b(`${inner}</params>${TAIL}`);
      const body = Buffer.concat([prefix, suffix]);
      expect(readPrivateKey(body)).toBeUndefined();
      const out = rewritePrivateKey(body, KEY);
      expectSplice(out, prefix, `<param><value><string>${KEY}</string></value></param>`, suffix);
      expect(readPrivateKey(out)).toBe(KEY);
    }
  });
});

describe('escaping', () => {
  it('escapeXml escapes & < > " \' (and CR) and leaves everything else', () => {
    expect(escapeXml(`a&b<c>d"e'f`)).toBe('a&amp;b&lt;c&gt;d&quot;e&apos;f');
    expect(escapeXml('&amp;')).toBe('&amp;amp;');
    expect(escapeXml('plain ключ 🔑')).toBe('plain ключ 🔑');
    expect(escapeXml('a\rb\nc\td')).toBe('a&#13;b\nc\td');
    expect(escapeXml('')).toBe('');
  });

  it('writes the key escaped and reads it back unescaped', () => {
    const key = `k&<>"'ey]]>`;
    const { body, prefix, suffix } = call('<value><string>old</string></value>');
    const out = rewritePrivateKey(body, key);
    expectSplice(out, prefix, '<value><string>k&amp;&lt;&gt;&quot;&apos;ey]]&gt;</string></value>', suffix);
    expect(readPrivateKey(out)).toBe(key);
  });

  it('round-trips multibyte and CR/LF/tab keys', () => {
    for (const key of ['ключ-🔑-鍵', 'a\r\nb\tc', ' spaced ', '']) {
      for (const value of ['<value/>', '<value>x</value>', '<value><string>x</string></value>']) {
        expect(readPrivateKey(rewritePrivateKey(call(value).body, key))).toBe(key);
      }
    }
  });

  it("refuses a key XML cannot carry, with a plain Error (not the client's fault)", () => {
    const { body } = call('<value>x</value>');
    for (const key of ['a\u0000b', 'a\u001bb', 'a\ud800b', '\uffff']) {
      let err: unknown;
      try {
        rewritePrivateKey(body, key);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(XmlRpcError);
    }
  });
});

describe('readPrivateKey', () => {
  it('decodes the five entities and numeric references', () => {
    const { body } = call(
      '<value><string>&lt;&gt;&amp;&quot;&apos;&#65;&#x42;&#x043;&#x1F511;&#1082;</string></value>',
    );
    expect(readPrivateKey(body)).toBe(`<>&"'ABC🔑к`);
  });

  it('decodes UTF-8 text and normalizes line ends like an XML parser', () => {
    expect(readPrivateKey(call('<value>ключ\r\nx\ry&#13;</value>').body)).toBe('ключ\nx\ny\r');
  });

  it('returns undefined only when there is no first param', () => {
    expect(readPrivateKey(b(`${HEAD}${TAIL}`))).toBeUndefined();
    expect(readPrivateKey(b(`${HEAD}<params/>${TAIL}`))).toBeUndefined();
    expect(readPrivateKey(b(`${HEAD}<params></params>${TAIL}`))).toBeUndefined();
    expect(readPrivateKey(b(`${HEAD}<params><param><value/></param></params>${TAIL}`))).toBe('');
  });

  it('accepts a Uint8Array view of part of a larger buffer', () => {
    const whole = Buffer.concat([b('JUNK'), call('<value>k</value>').body, b('JUNK')]);
    const view = new Uint8Array(whole.buffer, whole.byteOffset + 4, whole.length - 8);
    expect(readPrivateKey(view as Buffer)).toBe('k');
    expect(readPrivateKey(rewritePrivateKey(view as Buffer, KEY))).toBe(KEY);
  });
});

describe('UTF-8 and large bodies', () => {
  it('keeps multibyte UTF-8 elsewhere in the body byte-identical', () => {
    const rest = '<param><value><string>Zoë Ωμέγα 日本語 🙂</string></value></param>';
    const decl = '<?xml version="1.0"?><!-- ünïcödé -->';
    const body = b(
      `${decl}<methodCall><methodName>Ünïcode.méthod</methodName><params><param><value>ä</value></param>${rest}</params></methodCall>`,
    );
    const out = rewritePrivateKey(body, 'ключ');
    expect(out.toString('utf8')).toBe(
      `${decl}<methodCall><methodName>Ünïcode.méthod</methodName><params><param><value><string>ключ</string></value></param>${rest}</params></methodCall>`,
    );
    expect(readPrivateKey(body)).toBe('ä');
    expect(readPrivateKey(out)).toBe('ключ');
  });

  // Speed is not measured here (that would measure the machine): the inputs are big enough
  // that a scan quadratic in their size would take minutes and fail on the test's timeout.
  it('keeps a 1 MiB base64 param and multibyte later params byte-identical', { timeout: 10_000 }, () => {
    const bytes = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919) & 0xff;
    const base64 = bytes.toString('base64');
    const rest =
      `<param><value><base64>${base64}</base64></value></param>` +
      `<param><value><struct><member><name>FirstName</name><value><string>Jürgen 🚀 東京</string></value></member></struct></value></param>`;
    const { body, prefix, suffix } = call('<value><string>client-key</string></value>', rest);
    expect(body.length).toBeGreaterThan(1024 * 1024);

    const out = rewritePrivateKey(body, KEY);

    expectSplice(out, prefix, `<value><string>${KEY}</string></value>`, suffix);
    expect(readPrivateKey(body)).toBe('client-key');
    expect(readPrivateKey(out)).toBe(KEY);
    const decoded = out.toString('utf8');
    expect(decoded).toContain(base64);
    expect(decoded).toContain('Jürgen 🚀 東京');
  });

  it('stays linear on a huge first value full of entities and on deep nesting later', { timeout: 10_000 }, () => {
    const many = '&amp;'.repeat(200_000);
    const nested = '<array><data><value>'.repeat(2000) + 'x' + '</value></data></array>'.repeat(2000);
    const { body } = call(`<value><string>${many}</string></value>`, `<param><value>${nested}</value></param>`);
    expect(readPrivateKey(body)).toBe('&'.repeat(200_000));
    expect(readPrivateKey(rewritePrivateKey(body, KEY))).toBe(KEY);
  });
});

describe('malformed bodies throw XmlRpcError', () => {
  const P = (first: string, rest = '') => `${HEAD}<params><param>${first}</param>${rest}</params>${TAIL}`;
  const cases: Array<[string, string, RegExp?]> = [
    ['empty body', '', /empty/],
    ['whitespace only', '  \n ', /no root element/],
    ['JSON instead of XML', '{"privateKey":"x"}', /expected <methodCall>/],
    ['methodResponse root', '<methodResponse><params/></methodResponse>', /root element is <methodResponse>/],
    ['case-mismatched root', '<MethodCall><methodName>M</methodName></MethodCall>', /root element is <MethodCall>/],
    ['self-closing methodCall', '<methodCall/>', /no <methodName>/],
    [
      'no methodName',
      '<methodCall><params><param><value>x</value></param></params></methodCall>',
      /expected <methodName>/,
    ],
    ['empty methodName', '<methodCall><methodName></methodName></methodCall>', /methodName> is empty/],
    ['self-closing methodName', '<methodCall><methodName/></methodCall>', /methodName> is empty/],
    ['element inside methodName', '<methodCall><methodName><b>M</b></methodName></methodCall>', /only text/],
    ['unclosed methodName', '<methodCall><methodName>M', /unclosed <methodName>/],
    ['text before root', 'hello<methodCall><methodName>M</methodName></methodCall>', /found text "hello"/],
    ['junk after the root', `${HEAD}${TAIL}<x/>`, /after <\/methodCall>/],
    ['second root', `${HEAD}${TAIL}${HEAD}${TAIL}`, /after <\/methodCall>/],
    ['missing </methodCall>', `${HEAD}<params><param><value>x</value></param></params>`, /unclosed <methodCall>/],
    ['DOCTYPE', `<!DOCTYPE methodCall [<!ENTITY a "b">]>${HEAD}${TAIL}`, /DOCTYPE/],
    ['unterminated comment', `${HEAD}<!-- ${TAIL}`, /unterminated comment/],
    ['unterminated tag', `${HEAD}<params`, /unterminated tag <params/],
    ['unclosed <param>', `${HEAD}<params><param><value>x</value></params>${TAIL}`, /expected <\/param>/],
    ['unclosed <param> at end', `${HEAD}<params><param><value>x</value>`, /unclosed <param>/],
    ['unclosed <value>', P('<value>x'), /expected <\/value>/],
    ['unclosed <value> at end', `${HEAD}<params><param><value>x`, /unclosed <value>/],
    ['unclosed <string>', P('<value><string>x</value>'), /expected <\/string>/],
    ['unclosed <string> at end', `${HEAD}<params><param><value><string>x`, /unclosed <string>/],
    ['unterminated CDATA in string', P('<value><string><![CDATA[x</string></value>'), /unterminated CDATA/],
    ['element inside <string>', P('<value><string><b>x</b></string></value>'), /only text/],
    ['mixed text and element in value', P('<value>a<string>b</string></value>'), /mixes text and elements/],
    ['text after the string in value', P('<value><string>b</string>c</value>'), /mixes text and elements/],
    ['two elements in value', P('<value><string>a</string><string>b</string></value>'), /more than one element/],
    ['unclosed struct in first value', P('<value><struct><member></struct></value>'), /expected <\/member>/],
    ['<param/> without value', `${HEAD}<params><param/></params>${TAIL}`, /no <value>/],
    ['<param></param> without value', `${HEAD}<params><param></param></params>${TAIL}`, /must contain a <value>/],
    ['text instead of value', P('key'), /must contain a <value>/],
    ['two values in the first param', P('<value>a</value><value>b</value>'), /expected <\/param>/],
    ['<value> outside a param', `${HEAD}<params><value>x</value></params>${TAIL}`, /expected <param>/],
    ['junk instead of params', `${HEAD}<param><value>x</value></param>${TAIL}`, /expected <params> or <\/methodCall>/],
    ['later param unclosed', P('<value>a</value>', '<param><value>b</value>'), /expected <\/param>, found <\/params>/],
    ['later param mismatched', P('<value>a</value>', '<param><value><int>1</i4></value></param>'), /expected <\/int>/],
    ['stray <', P('<value>a</value>', '< param/>'), /stray "<"/],
    ['malformed attribute', '<methodCall x><methodName>M</methodName></methodCall>', /malformed attribute/],
  ];

  for (const [name, body, why] of cases) {
    it(name, () => expectMalformed(b(body), why));
  }

  it('bad references in the first value make readPrivateKey throw', () => {
    for (const [inner, why] of [
      ['a & b', /"&" not followed/],
      ['&foo;', /unknown entity &foo;/],
      ['&#0;', /not an XML character/],
      ['&#xD800;', /not an XML character/],
      ['&#x110000;', /not an XML character/],
      ['&#12a;', /bad character reference/],
      ['&#X41;', /bad character reference/], // XML allows only a lowercase x
      ['&amp', /"&" not followed/],
    ] as const) {
      const { body } = call(`<value><string>${inner}</string></value>`);
      expect(() => readPrivateKey(body)).toThrow(XmlRpcError);
      expect(() => readPrivateKey(body)).toThrow(why);
      // The rewrite replaces that content wholesale, so it can still succeed.
      expect(readPrivateKey(rewritePrivateKey(body, KEY))).toBe(KEY);
    }
  });
});
