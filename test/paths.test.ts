// The request target reaches Keap byte for byte, or not at all. The upstream here is a raw
// TCP server, not an HTTP library, so nothing between the proxy and the assertion parses,
// normalises or re-encodes the request line.
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import http from 'node:http';
import type { Socket } from 'node:net';
import type { RunningProxy } from '../src/http/server.js';
import { Forwarder } from '../src/upstream/forwarder.js';
import { hasDotSegment } from '../src/pipeline/stages.js';
import { startRawRig, until, type LogCapture, type RawRig } from './harness.js';
import { MANUAL, ok, rawExchange, type RawUpstream } from './raw-upstream.js';

/** Sends one raw request (the target as bytes, latin1) and returns the status and body. */
async function rawGet(proxyUrl: string, target: string): Promise<{ status: number; body: string }> {
  const u = new URL(proxyUrl);
  const text = await rawExchange(
    proxyUrl,
    Buffer.from(`GET ${target} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`, 'latin1'),
  );
  return { status: Number(text.slice(9, 12)), body: text.slice(text.indexOf('\r\n\r\n') + 4) };
}

/** Request targets as the bytes arrived (latin1: one char per byte). */
const targets = (): string[] => upstream.requests.map((r) => r.target);

let rig: RawRig;
let upstream: RawUpstream;
let proxy: RunningProxy;
let logs: LogCapture;

beforeAll(async () => {
  rig = await startRawRig();
  ({ upstream, proxy, logs } = rig);
});
afterAll(async () => {
  await rig.close();
});
beforeEach(() => {
  upstream.reset();
  upstream.respond = () => ok();
});

describe('the request target reaches Keap byte for byte', () => {
  it.each([
    ['an empty query', '/crm/rest/v1/contacts?'],
    ['quotes in the query', `/crm/rest/v1/contacts?a=1&b='"`],
    ['characters URL parsers percent-encode', '/crm/rest/v1/x/{id}|^`?q=<a>{b}|^`'],
    ['an encoded slash, both cases', '/crm/rest/v1/files/a%2Fb%2fc'],
    ['an encoded NUL', '/crm/rest/v1/x/a%00b?c=%00'],
    ['non-ASCII percent-encodings, both cases', '/crm/rest/v1/tags/%C3%A9t%c3%a9?name=%E2%82%AC'],
    ['invalid percent-encodings', '/crm/rest/v1/x/%zz%2?q=%G1%'],
    ['empty segments', '/crm//rest///v1/x//'],
    ['a trailing slash', '/crm/rest/v1/contacts/'],
    ['; parameters', '/crm/rest/v1/x;jsessionid=abc/y;a=1;b?c=;'],
    ['a second ? and repeated &', '/crm/rest/v1/x?a=1?b=2&&c=&'],
    ['only ? and &', '/crm/rest/v1/x?&'],
    ['+ and %20', '/crm/rest/v1/x/a+b%20c?q=a+b%20c'],
    ['dots that are not dot-segments', '/crm/rest/v1/.well-known/a.b/.../..x/x../%2e%2e%2e/.%2e.'],
    ['dot-segments in the query (only the path is checked)', '/crm/rest/v1/x?path=/../../etc&p=%2e%2e'],
    ['an encoded backslash and percent', '/crm/rest/v1/x/a%5Cb%25?q=\\'],
    ['a fragment', '/crm/rest/v1/x?a=1#frag'],
    ['the root', '/'],
    ['the legacy XML-RPC path on GET (routed only for POST)', '/api/xmlrpc?x=%27'],
  ])('%s: %s', async (_name, target) => {
    const r = await rawGet(proxy.url, target);
    expect(r.status).toBe(200);
    expect(targets()).toEqual([target]);
  });
});

describe('an empty query ("/x?")', () => {
  // http-proxy-3 drops it; the proxy puts it back before the request's head is built, which
  // for a request that waits for a free upstream connection is before it gets a socket.
  it('survives a wait for a free upstream connection', async () => {
    // The first request holds the only upstream connection until the other two wait for it.
    const held: Socket[] = [];
    upstream.respond = (req, socket) => (req.target === '/slow' ? (held.push(socket), MANUAL) : ok());
    let arrived = 0;
    const forwarder = new Forwarder({ target: new URL(upstream.url), timeoutMs: 5000, maxSockets: 1 });
    const front = http.createServer((req, res) => {
      arrived += 1;
      forwarder.send(req, res, undefined, undefined).then(
        (up) => forwarder.relay(up, res, 'test'),
        () => res.destroy(),
      );
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(front.address() as { port: number }).port}`;
      const slow = rawGet(url, '/slow');
      await until('the first request to hold the connection', () => held.length === 1);
      const queued = ['/queued?', '/queued?a=1?'].map((t) => rawGet(url, t));
      await until('the other two to wait for it', () => arrived === 3);
      held[0]?.write(ok());
      const replies = await Promise.all([slow, ...queued]);
      expect(replies.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(upstream.connections).toBe(1);
      expect(targets()).toEqual(['/slow', '/queued?', '/queued?a=1?']);
    } finally {
      forwarder.close();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    }
  });
});

describe('dot-segments and backslashes are refused before Keap is contacted', () => {
  const dotSegments = [
    '/crm/rest/v1/tags/%2e%2e/%2E%2e/admin',
    '/a/../../x',
    '/crm/rest/v1/./contacts',
    '/crm/rest/v1/contacts/.',
    '/crm/rest/v1/contacts/..',
    '/crm/rest/v1/contacts/..?x=1',
    '/crm/rest/v1/contacts/..#x',
    '/./crm/rest/v1/contacts',
    '/..',
    '/.',
    '/crm/rest/v1/%2e/contacts',
    '/crm/rest/v1/%2E/contacts',
    '/crm/rest/v1/%2e%2e/contacts',
    '/crm/rest/v1/%2E%2E/contacts',
    '/crm/rest/v1/.%2e/contacts',
    '/crm/rest/v1/.%2E/contacts',
    '/crm/rest/v1/%2e./contacts',
    '/crm/rest/v1/%2E./contacts',
    // Servers that decode %2F before splitting the path see these as dot-segments too.
    '/crm/rest/v1/tags/..%2fadmin',
    '/crm/rest/v1/tags%2F..%2Fadmin',
    '/crm/rest/v1/tags/%2e%2e%5cadmin',
    // Java servers drop ;parameters before resolving dot-segments.
    '/crm/rest/v1/tags/..;x/admin',
    '/crm/rest/v1/tags/.;/admin',
  ];
  it.each(dotSegments)('%s gets 400 invalid_path', async (target) => {
    const r = await rawGet(proxy.url, target);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toMatchObject({
      error: 'invalid_path',
      message: expect.stringMatching(/"\."|"\.\."/) as unknown,
    });
    expect(upstream.connections).toBe(0);
  });

  it.each(['/crm/rest/v1/a\\b', '/crm\\rest/v1/contacts', '/crm/rest/v1/x\\..\\admin'])(
    'a backslash in the path gets 400 invalid_path: %s',
    async (target) => {
      const r = await rawGet(proxy.url, target);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body)).toMatchObject({
        error: 'invalid_path',
        message: expect.stringMatching(/backslash/) as unknown,
      });
      expect(upstream.connections).toBe(0);
    },
  );

  it('the refusal is logged with the path, like any request', async () => {
    const target = '/crm/rest/v1/logged/%2e%2e/x';
    await rawGet(proxy.url, target);
    const line = await until('the request line', () =>
      logs.entries.find((e) => e.event === 'request' && e.path === target),
    );
    expect(line).toMatchObject({ status: 400, attempts: 0 });
  });
});

describe('hasDotSegment', () => {
  const check = (url: string): boolean => hasDotSegment(url, url.length);
  it.each([
    '/.',
    '/..',
    '/%2e',
    '/%2E%2E',
    '/a/.%2E',
    '/a/%2e.',
    '/a/..;',
    '/a/.;b=c/d',
    '/a%2f.%2fb',
    '/a%5C..%5Cb',
    '//..//',
  ])('finds one in %s', (url) => {
    expect(check(url)).toBe(true);
  });
  it.each([
    '/',
    '//',
    '/a',
    '/.a',
    '/a.',
    '/...',
    '/%2e%2e%2e',
    '/%2e%2',
    '/%2',
    '/%',
    '/a/%2ex',
    '/a;..',
    '/a/x;.',
    '/%2f',
    '/a%2fb',
    '/.well-known',
    '/;',
    '/.x;./..x',
  ])('finds none in %s', (url) => {
    expect(check(url)).toBe(false);
  });
});

/** Sends one raw POST (the target as bytes) with an XML-RPC body and returns the status. */
async function rawPost(proxyUrl: string, target: string, body: string): Promise<number> {
  const u = new URL(proxyUrl);
  const text = await rawExchange(
    proxyUrl,
    Buffer.from(
      `POST ${target} HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: text/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      'latin1',
    ),
  );
  return Number(text.slice(9, 12));
}

const CALL =
  '<?xml version="1.0"?><methodCall><methodName>DataService.getAppSetting</methodName><params><param><value><string>k</string></value></param></params></methodCall>';

describe("legacy clients' habits", () => {
  const SECRET = 'legacy-sdk-token-e8b1f0';
  it.each([
    ['alone', `/crm/rest/v1/contacts?access_token=${SECRET}`, '/crm/rest/v1/contacts'],
    ['first', `/crm/rest/v1/contacts?access_token=${SECRET}&limit=5`, '/crm/rest/v1/contacts?limit=5'],
    ['last', `/crm/rest/v1/contacts?limit=5&access_token=${SECRET}`, '/crm/rest/v1/contacts?limit=5'],
    [
      'between, twice, the rest byte for byte',
      `/crm/rest/v1/x?a=%27&access_token=${SECRET}&b=c+d&access_token=${SECRET}&&e`,
      '/crm/rest/v1/x?a=%27&b=c+d&&e',
    ],
    ['empty', '/crm/rest/v1/contacts?limit=1&access_token=', '/crm/rest/v1/contacts?limit=1'],
    ['without a value', '/crm/rest/v1/contacts?access_token&limit=1', '/crm/rest/v1/contacts?limit=1'],
    [
      'names that only resemble it stay',
      '/crm/rest/v1/x?my_access_token=1&access_tokens=2&q=access_token',
      '/crm/rest/v1/x?my_access_token=1&access_tokens=2&q=access_token',
    ],
    ['in the path it is no parameter', '/crm/rest/v1/access_token/1', '/crm/rest/v1/access_token/1'],
  ])('access_token in the query (%s) is removed before Keap: %s', async (_name, target, forwarded) => {
    const r = await rawGet(proxy.url, target);
    expect(r.status).toBe(200);
    expect(targets()).toEqual([forwarded]);
    const [req] = upstream.requests;
    if (req === undefined) throw new Error('no upstream request');
    // The proxy's own credential goes in the header; the client's token goes nowhere.
    expect(upstream.header(req, 'x-keap-api-key')).toHaveLength(1);
    expect(req.raw.toString('latin1')).not.toContain(SECRET);
  });

  it('the token is in no log line: the request line has the path only', async () => {
    const before = logs.lines.length;
    await rawGet(proxy.url, `/crm/rest/v1/logged-token?access_token=${SECRET}&limit=2`);
    await rawGet(proxy.url, `/crm/rest/v1/refused/%2e%2e/x?access_token=${SECRET}`);
    const line = await until('the request lines', () => {
      const lines = logs.entries.slice(before).filter((e) => e.event === 'request');
      return lines.length === 2 ? lines : undefined;
    });
    expect(line.map((e) => e.path)).toEqual(['/crm/rest/v1/logged-token', '/crm/rest/v1/refused/%2e%2e/x']);
    expect(logs.lines.slice(before).join('\n')).not.toContain(SECRET);
  });

  it.each([
    ['/api/xmlrpc', '/crm/xmlrpc/v1'],
    ['/api/xmlrpc/', '/crm/xmlrpc/v1'],
    ['/api/xmlrpc/v1', '/crm/xmlrpc/v1'],
    ['/api/xmlrpc/v1/', '/crm/xmlrpc/v1'],
    ['/crm/xmlrpc/v1/', '/crm/xmlrpc/v1'],
    ['/crm/xmlrpc/', '/crm/xmlrpc/v1'],
    ['/api/xmlrpc/v1?x=1', '/crm/xmlrpc/v1?x=1'],
    [`/api/xmlrpc/v1?access_token=${SECRET}`, '/crm/xmlrpc/v1'],
    // Keap serves these two as they are.
    ['/crm/xmlrpc/v1', '/crm/xmlrpc/v1'],
    ['/crm/xmlrpc', '/crm/xmlrpc'],
  ])('an XML-RPC POST to %s reaches Keap at %s, as XML-RPC', async (target, forwarded) => {
    expect(await rawPost(proxy.url, target, CALL)).toBe(200);
    expect(targets()).toEqual([forwarded]);
    const [req] = upstream.requests;
    // Routed as XML-RPC: key mode splices the key into privateKey.
    expect(req?.body.toString('utf8')).toContain('<methodName>DataService.getAppSetting</methodName>');
    expect(req?.body.toString('utf8')).not.toContain('<string>k</string>');
    expect(req?.raw.toString('latin1')).not.toContain(SECRET);
  });
});
