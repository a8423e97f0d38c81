import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CacheRules, GetCache, parseCacheRules, serveCached, type CacheRule } from '../src/cache/get-cache.js';

const TAGS = '/crm/rest/v1/tags';
const MODEL = '/crm/rest/v1/contacts/model';
const RULES: CacheRule[] = [
  { pattern: `${TAGS}*`, ttlSeconds: 300 },
  { pattern: MODEL, ttlSeconds: 3600 },
];
const rules = new CacheRules(RULES);

describe('parseCacheRules', () => {
  it('reads exact and prefix patterns with their TTLs', () => {
    expect(parseCacheRules('/crm/rest/v1/tags*=300,/crm/rest/v1/contacts/model=3600')).toEqual(RULES);
  });

  it('ignores whitespace around entries and empty entries', () => {
    expect(parseCacheRules(' /a* = 5 , /b=7 ,')).toEqual([
      { pattern: '/a*', ttlSeconds: 5 },
      { pattern: '/b', ttlSeconds: 7 },
    ]);
    expect(parseCacheRules('')).toEqual([]);
    expect(parseCacheRules('  ')).toEqual([]);
  });

  it.each([
    ['/crm/rest/v1/tags*', "missing '='"],
    ['/crm/rest/v1/tags=abc', 'whole number of seconds'],
    ['/crm/rest/v1/tags=0', 'whole number of seconds'],
    ['/crm/rest/v1/tags=-5', 'whole number of seconds'],
    ['/crm/rest/v1/tags=1.5', 'whole number of seconds'],
    ['/crm/rest/v1/tags=', 'whole number of seconds'],
    ['crm/rest/v1/tags=300', "starting with '/'"],
    ['=300', "starting with '/'"],
    ['/crm/*/tags=300', "'*' is allowed only at the end"],
    ['/crm/rest/v1/tags?limit=10=300', 'must not contain a query'],
    ['/crm/rest/v1/my tags=300', 'whitespace'],
  ])('refuses %s, naming the entry and the expected form', (entry, why) => {
    const text = `/ok=1,${entry}`;
    expect(() => parseCacheRules(text)).toThrow(why);
    expect(() => parseCacheRules(text)).toThrow(`'${entry.trim()}'`);
    expect(() => parseCacheRules(text)).toThrow('expected PATTERN=TTL_SECONDS');
  });

  it('refuses a pattern listed twice', () => {
    expect(() => parseCacheRules('/a*=5,/b=1,/a*=10')).toThrow(
      "Invalid cache rule '/a*=10': this pattern is already listed",
    );
  });
});

describe('CacheRules.keyFor', () => {
  it('is enabled only with rules', () => {
    expect(rules.enabled).toBe(true);
    const off = CacheRules.parse('');
    expect(off.enabled).toBe(false);
    expect(off).toBe(CacheRules.none);
    expect(off.keyFor('GET', TAGS, 't1', {})).toBeUndefined();
  });

  it('keys only GET', () => {
    expect(rules.keyFor('GET', TAGS, 't1', {})?.ttlMs).toBe(300_000);
    for (const m of ['HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'get'])
      expect(rules.keyFor(m, TAGS, 't1', {})).toBeUndefined();
  });

  it('matches an exact pattern on the path only, with or without a query', () => {
    expect(rules.keyFor('GET', MODEL, 't1', {})?.ttlMs).toBe(3_600_000);
    expect(rules.keyFor('GET', `${MODEL}?optional_properties=x`, 't1', {})?.ttlMs).toBe(3_600_000);
    expect(rules.keyFor('GET', `${MODEL}/`, 't1', {})).toBeUndefined();
    expect(rules.keyFor('GET', `${MODEL}s`, 't1', {})).toBeUndefined();
    expect(rules.keyFor('GET', '/crm/rest/v1/contacts/mode', 't1', {})).toBeUndefined();
    expect(rules.keyFor('GET', '/crm/rest/v1/contacts', 't1', {})).toBeUndefined();
  });

  it('matches a prefix pattern on everything under it', () => {
    for (const url of [TAGS, `${TAGS}/12`, `${TAGS}/12/contacts?limit=5`, `${TAGS}?category=3`]) {
      expect(rules.keyFor('GET', url, 't1', {})?.ttlMs).toBe(300_000);
    }
    expect(rules.keyFor('GET', '/crm/rest/v1/tag', 't1', {})).toBeUndefined();
    expect(rules.keyFor('GET', '/crm/rest/v2/tags', 't1', {})).toBeUndefined();
    expect(rules.keyFor('GET', '/crm/rest/v1/contacts?x=/crm/rest/v1/tags', 't1', {})).toBeUndefined();
  });

  it('lets the most specific rule decide the TTL', () => {
    const c = CacheRules.parse('/crm/*=10,/crm/rest/v1/tags*=300,/crm/rest/v1/tags/categories=900');
    expect(c.keyFor('GET', '/crm/rest/v1/settings', 't', {})?.ttlMs).toBe(10_000);
    expect(c.keyFor('GET', '/crm/rest/v1/tags/1', 't', {})?.ttlMs).toBe(300_000);
    expect(c.keyFor('GET', '/crm/rest/v1/tags/categories', 't', {})?.ttlMs).toBe(900_000);
  });

  it('keeps the query, exactly as sent, in the key', () => {
    const a = rules.keyFor('GET', `${TAGS}?limit=10&offset=0`, 't1', {})?.key;
    const b = rules.keyFor('GET', `${TAGS}?offset=0&limit=10`, 't1', {})?.key;
    const c = rules.keyFor('GET', `${TAGS}?limit=10&offset=0`, 't1', {})?.key;
    const bare = rules.keyFor('GET', TAGS, 't1', {})?.key;
    expect(a).toBeDefined();
    expect(a).toBe(c);
    expect(a).not.toBe(b);
    expect(a).not.toBe(bare);
  });

  it('separates tenants, even ones named to collide', () => {
    const one = rules.keyFor('GET', TAGS, 'tenant-1', {})?.key;
    const two = rules.keyFor('GET', TAGS, 'tenant-2', {})?.key;
    expect(one).toBeDefined();
    expect(one).not.toBe(two);
    // Tenant "a" asking for /x/y must not share a key with tenant "a/x" asking for /y.
    const c = CacheRules.parse('/*=60');
    expect(c.keyFor('GET', '/x/y', 'a', {})?.key).not.toBe(c.keyFor('GET', '/y', 'a/x', {})?.key);
  });

  it('keys on Accept-Encoding, so a compressed body never reaches a client that did not ask for it', () => {
    const gzip = rules.keyFor('GET', TAGS, 't1', { 'accept-encoding': 'gzip' })?.key;
    const none = rules.keyFor('GET', TAGS, 't1', {})?.key;
    expect(gzip).toBeDefined();
    expect(gzip).not.toBe(none);
    expect(rules.keyFor('GET', TAGS, 't1', { 'accept-encoding': 'gzip' })?.key).toBe(gzip);
  });

  it.each([
    [{ 'cache-control': 'no-cache' }],
    [{ 'cache-control': 'No-Cache' }],
    [{ 'cache-control': 'no-store' }],
    [{ 'cache-control': 'max-age=0' }],
    [{ 'cache-control': 'max-stale=5, no-cache' }],
    [{ pragma: 'no-cache' }],
  ])('bypasses on client %o', (headers) => {
    expect(rules.keyFor('GET', TAGS, 't1', headers)).toBeUndefined();
  });

  it('does not bypass on other client cache directives', () => {
    expect(rules.keyFor('GET', TAGS, 't1', { 'cache-control': 'max-age=60' })).toBeDefined();
    expect(rules.keyFor('GET', TAGS, 't1', { 'cache-control': 'no-transform' })).toBeDefined();
  });

  it('leaves paths Keap would normalise out of a rule uncached', () => {
    for (const url of [
      `${TAGS}/../contacts/1`,
      `${TAGS}/./1`,
      `${TAGS}/%2e%2e/contacts`,
      `${TAGS}/a%2Fb`,
      `${TAGS}\\..\\contacts`,
    ]) {
      expect(rules.keyFor('GET', url, 't1', {})).toBeUndefined();
    }
    // Encoded characters in the query are ordinary.
    expect(rules.keyFor('GET', `${TAGS}?name=a%2Fb`, 't1', {})).toBeDefined();
  });
});

describe('GetCache.set / get', () => {
  let clock: number;
  let cache: GetCache;
  beforeEach(() => {
    clock = 1_700_000_000_000;
    cache = new GetCache({ maxBytes: 100_000, now: () => clock });
  });
  const body = Buffer.from('{"tags":[]}');
  const headers = ['Content-Type', 'application/json'];

  it('stores a 200 and returns it until it expires, then drops it', () => {
    expect(cache.set('k', 5_000, 200, 'OK', headers, body)).toBe(true);
    const sizeStored = cache.size;
    expect(sizeStored).toBeGreaterThan(body.length);
    const hit = cache.get('k');
    expect(hit?.body.equals(body)).toBe(true);
    expect(hit?.storedAt).toBe(clock);
    expect(hit?.expiresAt).toBe(clock + 5_000);
    clock += 4_999;
    expect(cache.get('k')?.status).toBe(200);
    clock += 1;
    expect(cache.get('k')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it.each([201, 203, 204, 206, 301, 304, 404, 429, 500])('does not store a %i', (status) => {
    expect(cache.set('k', 5_000, status, 'x', headers, body)).toBe(false);
    expect(cache.get('k')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it.each([
    [['Cache-Control', 'no-store']],
    [['cache-control', 'max-age=60, Private']],
    [['Cache-Control', 'private="x-foo"']],
    [['Set-Cookie', 'session=1; HttpOnly']],
    [['Vary', '*']],
    [['Vary', 'Accept-Encoding, Cookie']],
  ])('does not store a response with %o', (extra) => {
    expect(cache.set('k', 5_000, 200, 'OK', [...headers, ...extra], body)).toBe(false);
    expect(cache.size).toBe(0);
  });

  it('stores responses that vary only on what the key holds, or on CORS preflight headers', () => {
    expect(
      cache.set(
        'k',
        5_000,
        200,
        'OK',
        [
          ...headers,
          'Vary',
          'Accept-Encoding, Origin',
          'vary',
          'Access-Control-Request-Method,Access-Control-Request-Headers',
        ],
        body,
      ),
    ).toBe(true);
  });

  it("keeps end-to-end headers only, and Keap's request id under another name", () => {
    const raw = [
      'Content-Type',
      'application/json',
      'Connection',
      'keep-alive, X-Hop',
      'X-Hop',
      'h',
      'Keep-Alive',
      'timeout=5',
      'Transfer-Encoding',
      'chunked',
      'Content-Length',
      '999',
      'X-Request-Id',
      'keap-1',
      'Age',
      '12',
      'ETag',
      '"v1"',
    ];
    expect(cache.set('k', 5_000, 200, 'OK', raw, body)).toBe(true);
    expect(cache.get('k')?.rawHeaders).toEqual([
      'Content-Type',
      'application/json',
      'x-upstream-request-id',
      'keap-1',
      'ETag',
      '"v1"',
    ]);
  });

  it('does not pin the buffer a body was sliced from', () => {
    const big = Buffer.alloc(50_000, 7);
    expect(cache.set('k', 5_000, 200, 'OK', headers, big.subarray(10, 20))).toBe(true);
    const stored = cache.get('k')?.body;
    expect(stored?.equals(big.subarray(10, 20))).toBe(true);
    expect(stored?.buffer.byteLength).toBe(10);
  });
});

describe('GetCache size bound', () => {
  const headers = ['Content-Type', 'application/json'];

  it('evicts least recently used entries so size never exceeds maxBytes', () => {
    const cache = new GetCache({ maxBytes: 10_000, maxEntryBytes: 3_000 });
    const entryBytes = (key: string, bodyLength: number): number => bodyLength + key.length + headers.join('').length;
    expect(cache.set('k0', 60_000, 200, 'OK', headers, Buffer.alloc(2_000, 0))).toBe(true);
    expect(cache.size).toBe(entryBytes('k0', 2_000));
    for (let i = 1; i < 20; i++) {
      // Keep k0 recently used: the LRU must evict the others around it.
      expect(cache.get('k0')).toBeDefined();
      expect(cache.set(`k${i}`, 60_000, 200, 'OK', headers, Buffer.alloc(2_000, i))).toBe(true);
      expect(cache.size).toBeLessThanOrEqual(10_000);
    }
    // Four 2 kB entries fit in 10 kB; the fifth does not.
    expect(cache.size).toBe(entryBytes('k0', 2_000) + 3 * entryBytes('k19', 2_000));
    expect(cache.get('k0')?.body[0]).toBe(0);
    expect(cache.get('k19')?.body[0]).toBe(19);
    expect(cache.get('k18')?.body[0]).toBe(18);
    expect(cache.get('k17')?.body[0]).toBe(17);
    expect(cache.get('k16')).toBeUndefined();
    expect(cache.get('k1')).toBeUndefined();
  });

  it('does not store an entry over maxEntryBytes, and keeps what it holds', () => {
    const cache = new GetCache({ maxBytes: 10_000, maxEntryBytes: 3_000 });
    expect(cache.set('small', 60_000, 200, 'OK', headers, Buffer.alloc(100))).toBe(true);
    const before = cache.size;
    expect(cache.set('big', 60_000, 200, 'OK', headers, Buffer.alloc(3_001))).toBe(false);
    // Within the limit on its body, over it with its headers.
    expect(cache.set('big', 60_000, 200, 'OK', [...headers, 'X-Pad', 'p'.repeat(100)], Buffer.alloc(2_950))).toBe(
      false,
    );
    expect(cache.get('big')).toBeUndefined();
    expect(cache.get('small')).toBeDefined();
    expect(cache.size).toBe(before);
  });

  it('defaults maxEntryBytes to a tenth of maxBytes', () => {
    const cache = new GetCache({ maxBytes: 10_000 });
    expect(cache.set('a', 60_000, 200, 'OK', [], Buffer.alloc(990))).toBe(true);
    expect(cache.set('b', 60_000, 200, 'OK', [], Buffer.alloc(1_001))).toBe(false);
  });

  it('refuses a maxBytes that is not a positive integer', () => {
    expect(() => new GetCache({ maxBytes: 0 })).toThrow(RangeError);
    expect(() => new GetCache({ maxBytes: 1.5 })).toThrow(RangeError);
  });
});

// ---------------------------------------------------------------------------------------
// Over real HTTP: an upstream server standing in for Keap and a client-facing server that
// relays as the forwarder does (raw header pairs, piped body) and uses the cache.

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

function request(port: number, path: string, headers: OutgoingHttpHeaders = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('capture and serveCached over HTTP', () => {
  let clock: number;
  let cache: GetCache;
  let upstream: Server;
  let front: Server;
  let frontPort: number;
  let upstreamHits: string[];
  let respond: (req: IncomingMessage, res: ServerResponse) => void;
  /** Resolves when the front has seen the current upstream response close (ended or aborted). */
  let upstreamClosed: Promise<void>;
  let markClosed: () => void;

  beforeEach(async () => {
    clock = 1_700_000_000_000;
    cache = new GetCache({ maxBytes: 2_000_000, maxEntryBytes: 200_000, now: () => clock });
    upstreamHits = [];
    respond = (_req, res) => res.end('unset');
    upstream = http.createServer((req, res) => {
      upstreamHits.push(req.url ?? '');
      respond(req, res);
    });
    const upstreamPort = await listen(upstream);
    front = http.createServer((req, res) => {
      const tenant = String(req.headers['x-tenant'] ?? 'default');
      const k = rules.keyFor(req.method ?? '', req.url ?? '', tenant, req.headers);
      if (k !== undefined) {
        const cached = cache.get(k.key);
        if (cached !== undefined) {
          serveCached(res, cached, 'our-req-id', clock);
          return;
        }
      }
      upstreamClosed = new Promise((resolve) => (markClosed = resolve));
      const up = http.request(
        {
          host: '127.0.0.1',
          port: upstreamPort,
          method: req.method,
          path: req.url,
          headers: { 'accept-encoding': req.headers['accept-encoding'] ?? '' },
          agent: false,
        },
        (proxyRes) => {
          const pairs: string[] = [];
          const raw = proxyRes.rawHeaders;
          for (let i = 0; i < raw.length; i += 2)
            if (!HOP.has((raw[i] as string).toLowerCase())) pairs.push(raw[i] as string, raw[i + 1] as string);
          pairs.push('x-request-id', 'our-req-id');
          if (k !== undefined) pairs.push('x-cache', 'MISS');
          res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, pairs);
          proxyRes.on('error', () => res.destroy());
          proxyRes.on('close', () => markClosed());
          proxyRes.pipe(res);
          if (k !== undefined) cache.capture(k.key, k.ttlMs, proxyRes);
        },
      );
      up.on('error', () => {
        res.destroy();
        markClosed();
      });
      up.end();
    });
    frontPort = await listen(front);
  });

  afterEach(async () => {
    await close(front);
    await close(upstream);
  });

  it('serves a captured 200 from the cache: same bytes, same headers, X-Cache HIT and Age', async () => {
    const payload = randomBytes(150_000);
    respond = (_req, res) => {
      // Chunked, in pieces: the cache must rebuild the body and give it a Content-Length.
      res.writeHead(200, 'Fine', [
        'Content-Type',
        'application/octet-stream',
        'X-Keap-Thing',
        'abc',
        'X-Request-Id',
        'keap-77',
        'ETag',
        '"e1"',
      ]);
      for (let i = 0; i < payload.length; i += 16_384) res.write(payload.subarray(i, i + 16_384));
      res.end();
    };
    const miss = await request(frontPort, `${TAGS}?limit=1000`);
    expect(miss.status).toBe(200);
    expect(miss.headers['x-cache']).toBe('MISS');
    expect(miss.body.equals(payload)).toBe(true);
    expect(upstreamHits).toEqual([`${TAGS}?limit=1000`]);

    clock += 42_900;
    const hit = await request(frontPort, `${TAGS}?limit=1000`);
    expect(upstreamHits).toHaveLength(1);
    expect(hit.status).toBe(200);
    expect(hit.body.equals(payload)).toBe(true);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.headers.age).toBe('42');
    expect(hit.headers['content-type']).toBe('application/octet-stream');
    expect(hit.headers['x-keap-thing']).toBe('abc');
    expect(hit.headers.etag).toBe('"e1"');
    expect(hit.headers['x-upstream-request-id']).toBe('keap-77');
    expect(hit.headers['x-request-id']).toBe('our-req-id');
    expect(hit.headers['content-length']).toBe(String(payload.length));
    expect(hit.headers['transfer-encoding']).toBeUndefined();

    // Another query, another tenant, a client that asks for gzip: each its own entry.
    await request(frontPort, `${TAGS}?limit=999`);
    await request(frontPort, `${TAGS}?limit=1000`, { 'x-tenant': 'other' });
    await request(frontPort, `${TAGS}?limit=1000`, { 'accept-encoding': 'gzip' });
    expect(upstreamHits).toHaveLength(4);
  });

  it('goes upstream for a client that says no-cache, and leaves the entry as it was', async () => {
    let version = 1;
    respond = (_req, res) => res.end(`v${version}`);
    expect((await request(frontPort, MODEL)).body.toString()).toBe('v1');
    version = 2;
    const fresh = await request(frontPort, MODEL, { 'cache-control': 'no-cache' });
    expect(fresh.body.toString()).toBe('v2');
    expect(fresh.headers['x-cache']).toBeUndefined();
    expect(upstreamHits).toHaveLength(2);
    const hit = await request(frontPort, MODEL);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.body.toString()).toBe('v1');
  });

  it.each([404, 500, 429])('does not serve a %i from the cache', async (status) => {
    respond = (_req, res) => {
      res.statusCode = status;
      res.end('{"message":"nope"}');
    };
    for (let i = 0; i < 2; i++) {
      const r = await request(frontPort, `${TAGS}/9`);
      expect(r.status).toBe(status);
      expect(r.headers['x-cache']).toBe('MISS');
    }
    expect(upstreamHits).toHaveLength(2);
    expect(cache.size).toBe(0);
  });

  it('does not cache a 200 that sets a cookie', async () => {
    respond = (_req, res) => {
      res.setHeader('set-cookie', 'a=b');
      res.end('{}');
    };
    await request(frontPort, TAGS);
    await request(frontPort, TAGS);
    expect(upstreamHits).toHaveLength(2);
    expect(cache.size).toBe(0);
  });

  it('goes upstream again once the entry has expired', async () => {
    let n = 0;
    respond = (_req, res) => res.end(`n${++n}`);
    await request(frontPort, TAGS);
    clock += 299_999;
    expect((await request(frontPort, TAGS)).headers['x-cache']).toBe('HIT');
    clock += 1;
    const after = await request(frontPort, TAGS);
    expect(after.headers['x-cache']).toBe('MISS');
    expect(after.body.toString()).toBe('n2');
    expect(upstreamHits).toHaveLength(2);
    // And the refreshed entry is served from then on.
    expect((await request(frontPort, TAGS)).body.toString()).toBe('n2');
  });

  it('gives up past maxEntryBytes without disturbing what the client receives', async () => {
    const payload = randomBytes(500_000);
    respond = (_req, res) => {
      // No Content-Length, so the limit is found while streaming, not from the head.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (let i = 0; i < payload.length; i += 32_768) res.write(payload.subarray(i, i + 32_768));
      res.end();
    };
    for (let i = 0; i < 2; i++) {
      const r = await request(frontPort, TAGS);
      expect(r.body.equals(payload)).toBe(true);
      expect(r.headers['x-cache']).toBe('MISS');
    }
    expect(upstreamHits).toHaveLength(2);
    expect(cache.size).toBe(0);
  });

  it('does not cache a body delimited only by the connection closing, which may be cut short', async () => {
    respond = (req) => {
      req.socket.end(
        'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"tags":[{"id":1},',
      );
    };
    const r = await request(frontPort, TAGS);
    expect(r.body.toString()).toBe('{"tags":[{"id":1},');
    await upstreamClosed;
    expect(cache.size).toBe(0);
    await request(frontPort, TAGS);
    expect(upstreamHits).toHaveLength(2);
  });

  it.each([
    ['with a Content-Length', { 'content-length': '100000' }],
    ['chunked', {}],
  ])('gives up on a response aborted mid-body (%s)', async (_name, head) => {
    respond = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', ...head });
      res.write(Buffer.alloc(30_000, 120));
      // Let the partial body reach the front, then cut Keap's connection.
      setTimeout(() => req.socket.destroy(), 50);
    };
    await expect(request(frontPort, TAGS)).rejects.toThrow();
    await upstreamClosed;
    // Give any (wrong) late 'end' a turn to store something.
    await new Promise((r) => setTimeout(r, 20));
    expect(cache.size).toBe(0);
    expect(cache.get(rules.keyFor('GET', TAGS, 'default', {})?.key ?? '')).toBeUndefined();

    respond = (_req, res) => res.end('[]');
    expect((await request(frontPort, TAGS)).headers['x-cache']).toBe('MISS');
    expect(upstreamHits).toHaveLength(2);
  });
});
