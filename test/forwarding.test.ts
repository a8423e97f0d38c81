import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rawExchange } from './raw-upstream.js';
import http, { type ServerResponse } from 'node:http';
import { startHarness, send, sha256, until, type Harness } from './harness.js';

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  bodyLength: number;
  bodySha256: string;
  bodyBase64?: string;
}

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ mode: 'key' });
});
afterAll(async () => {
  await h.close();
});

describe('forwarding', () => {
  it.each(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])(
    '%s passes method, path and query through unchanged',
    async (method) => {
      const path = '/crm/rest/v1/__echo/a%20b/c?x=1&y=%C3%A9&y=2&empty=&flag';
      const body = method === 'GET' || method === 'OPTIONS' ? undefined : `{"method":"${method}"}`;
      const r = await send(h.proxy.url, method, path, {
        body,
        headers: body ? { 'content-type': 'application/json' } : {},
      });
      expect(r.status).toBe(200);
      const echo = r.json<Echo>();
      expect(echo.method).toBe(method);
      expect(echo.url).toBe(path);
      if (body) expect(Buffer.from(echo.bodyBase64 ?? '', 'base64').toString()).toBe(body);
    },
  );

  it('HEAD passes through', async () => {
    const r = await send(h.proxy.url, 'HEAD', '/crm/rest/v1/__echo');
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(0);
    expect(h.sim.lastRequests.at(-1)?.method).toBe('HEAD');
  });

  it('binary bodies arrive byte-identical', async () => {
    const body = randomBytes(40_000);
    const r = await send(h.proxy.url, 'POST', '/crm/rest/v1/__echo', {
      body,
      headers: { 'content-type': 'application/octet-stream' },
    });
    const echo = r.json<Echo>();
    expect(echo.bodyLength).toBe(body.length);
    expect(Buffer.from(echo.bodyBase64 ?? '', 'base64').equals(body)).toBe(true);
  });

  it('large bodies (over the replay buffer) stream through byte-identical', async () => {
    const body = randomBytes(24 * 1024 * 1024 + 17);
    const r = await send(h.proxy.url, 'PUT', '/crm/rest/v1/__echo', { body });
    const echo = r.json<Echo>();
    expect(echo.bodyLength).toBe(body.length);
    expect(echo.bodySha256).toBe(sha256(body));
  });

  it('chunked request bodies arrive whole', async () => {
    const u = new URL(h.proxy.url);
    const parts = [randomBytes(1000), randomBytes(70_000), randomBytes(3)];
    const echo = await new Promise<Echo>((resolve, reject) => {
      const req = http.request(
        { host: u.hostname, port: u.port, method: 'POST', path: '/crm/rest/v1/__echo', agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString()) as Echo));
        },
      );
      req.on('error', reject);
      for (const p of parts) req.write(p);
      req.end();
    });
    expect(echo.headers['transfer-encoding']).toBeUndefined();
    expect(echo.bodySha256).toBe(sha256(Buffer.concat(parts)));
  });

  it('large responses arrive byte-identical', async () => {
    const size = 5 * 1024 * 1024 + 3;
    const r = await send(h.proxy.url, 'GET', `/crm/rest/v1/__bytes?size=${size}`);
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(size);
    for (const i of [0, 250, 251, 1_000_000, size - 1]) expect(r.body[i]).toBe(i % 251);
  });

  it('responses stream: the first chunk reaches the client while the upstream still holds the rest', async () => {
    // The upstream sends one chunk and then waits for the test: a proxy that buffered the
    // response would never hand that chunk on, and the test would time out.
    let upstream: ServerResponse | undefined;
    h.sim.route('GET', '/crm/rest/v1/__held', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('chunk 0\n');
      upstream = res;
    });
    const u = new URL(h.proxy.url);
    const seen: string[] = [];
    await new Promise<void>((resolve, reject) => {
      http
        .get({ host: u.hostname, port: u.port, path: '/crm/rest/v1/__held', agent: false }, (res) => {
          res.on('data', (c: Buffer) => {
            seen.push(`${c.toString()}(upstream ${upstream?.writableEnded === false ? 'open' : 'done'})`);
            if (upstream?.writableEnded === false) upstream.end('chunk 1\n');
          });
          res.on('end', resolve);
        })
        .on('error', reject);
    });
    expect(seen).toEqual(['chunk 0\n(upstream open)', 'chunk 1\n(upstream done)']);
  });

  it('drops hop-by-hop headers, sets Host and X-Forwarded-*, keeps end-to-end headers', async () => {
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', {
      headers: {
        connection: 'keep-alive, x-private-hop',
        'x-private-hop': 'secret',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic abc',
        te: 'trailers',
        'x-custom': 'kept',
        accept: 'application/json',
      },
    });
    const echo = r.json<Echo>();
    const simHost = new URL(h.sim.url).host;
    expect(echo.headers.host).toBe(simHost);
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(echo.headers['x-forwarded-proto']).toBe('http');
    expect(echo.headers['x-custom']).toBe('kept');
    expect(echo.headers.accept).toBe('application/json');
    for (const hop of ['x-private-hop', 'keep-alive', 'proxy-authorization', 'te'])
      expect(echo.headers[hop], hop).toBeUndefined();
  });

  it('honours X-Request-Id and propagates it; makes one when absent', async () => {
    const given = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', { headers: { 'x-request-id': 'abc-123' } });
    expect(given.headers['x-request-id']).toBe('abc-123');
    expect(given.json<Echo>().headers['x-request-id']).toBe('abc-123');
    const made = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', {
      headers: { 'x-request-id': 'bad id with spaces' },
    });
    expect(made.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(made.json<Echo>().headers['x-request-id']).toBe(made.headers['x-request-id']);
  });

  it("keeps Keap's own request id as X-Upstream-Request-Id", async () => {
    h.sim.route('GET', '/crm/rest/v1/__with-id', (_req, res) => {
      res.writeHead(200, { 'x-request-id': 'keap-side-id', 'content-type': 'application/json' }).end('{}');
    });
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__with-id', { headers: { 'x-request-id': 'ours-1' } });
    h.sim.unroute('GET', '/crm/rest/v1/__with-id');
    expect(r.headers['x-request-id']).toBe('ours-1');
    expect(r.headers['x-upstream-request-id']).toBe('keap-side-id');
  });

  it('drops response headers a Connection header names, but always returns our request id', async () => {
    h.sim.route('GET', '/crm/rest/v1/__conn', (_req, res) => {
      res
        .writeHead(200, {
          connection: 'keep-alive, x-hop, x-request-id',
          'x-hop': 'gone',
          'x-request-id': 'keap-id',
          'x-kept': 'yes',
        })
        .end('{}');
    });
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__conn', { headers: { 'x-request-id': 'ours-2' } });
    h.sim.unroute('GET', '/crm/rest/v1/__conn');
    expect(r.headers['x-hop']).toBeUndefined();
    expect(r.headers['x-kept']).toBe('yes');
    expect(r.headers['x-request-id']).toBe('ours-2');
  });

  it('relays Keap statuses and bodies as they are', async () => {
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/no-such-thing');
    expect(r.status).toBe(404);
    expect(h.sim.lastRequests.at(-1)?.url).toBe('/crm/rest/v1/no-such-thing');
  });
});

describe('only Keap is contacted', () => {
  it('absolute-form targets are refused', async () => {
    const before = h.sim.counters.apiCalls;
    const reply = await rawExchange(
      h.proxy.url,
      'GET http://127.0.0.1:1/crm/rest/v1/contacts HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
    );
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect(reply).toContain('"error":"absolute_form_refused"');
    expect(h.sim.counters.apiCalls).toBe(before);
  });

  it('//host paths are refused', async () => {
    const before = h.sim.counters.apiCalls;
    const r = await send(h.proxy.url, 'GET', '//evil.example/crm/rest/v1/contacts');
    expect(r.status).toBe(400);
    expect(r.json()).toMatchObject({ error: 'invalid_path' });
    expect(h.sim.counters.apiCalls).toBe(before);
  });

  it('CONNECT is refused', async () => {
    const reply = await rawExchange(h.proxy.url, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1.1 405/);
    expect(reply).toContain('"error":"method_not_allowed"');
  });

  it('Content-Length together with Transfer-Encoding is refused', async () => {
    const before = h.sim.counters.apiCalls;
    const reply = await rawExchange(
      h.proxy.url,
      'POST /crm/rest/v1/__echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /crm/rest/v1/contacts HTTP/1.1\r\nHost: x\r\n\r\n',
    );
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect(reply).toContain('"error":"ambiguous_body_length"');
    expect(h.sim.counters.apiCalls).toBe(before);
  });

  it('bodies over MAX_BODY_BYTES get 413 without reaching Keap', async () => {
    const small = await startHarness({ mode: 'key', env: { MAX_BODY_BYTES: '1000', REPLAY_BODY_BYTES: '100' } });
    try {
      const declared = await send(small.proxy.url, 'POST', '/crm/rest/v1/__echo', { body: Buffer.alloc(1001) });
      expect(declared.status).toBe(413);
      expect(declared.json()).toMatchObject({ error: 'body_too_large' });
      expect(small.sim.counters.apiCalls).toBe(0);
      const ok = await send(small.proxy.url, 'POST', '/crm/rest/v1/__echo', { body: Buffer.alloc(1000, 1) });
      expect(ok.status).toBe(200);
      expect(ok.json<Echo>().bodyLength).toBe(1000);
    } finally {
      await small.close();
    }
  });

  it('chunked bodies that grow past MAX_BODY_BYTES get 413', async () => {
    const small = await startHarness({ mode: 'key', env: { MAX_BODY_BYTES: '50000', REPLAY_BODY_BYTES: '1000' } });
    try {
      const u = new URL(small.proxy.url);
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: u.hostname, port: u.port, method: 'POST', path: '/crm/rest/v1/__echo', agent: false },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        for (let i = 0; i < 10; i++) req.write(Buffer.alloc(10_000));
        req.end();
      });
      expect(status).toBe(413);
    } finally {
      await small.close();
    }
  });
});

describe('upstream failures', () => {
  it('an upstream that is down gives 502 JSON', async () => {
    const down = await startHarness({ mode: 'key' });
    try {
      await down.sim.close();
      const r = await send(down.proxy.url, 'GET', '/crm/rest/v1/contacts');
      expect(r.status).toBe(502);
      expect(r.json()).toMatchObject({ error: 'upstream_unreachable' });
      expect(r.json<{ message: string }>().message).toMatch(/Keap could not be reached/);
    } finally {
      await down.proxy.close();
    }
  });

  it('an upstream that does not answer within UPSTREAM_TIMEOUT_MS gives 504 JSON, not before', async () => {
    const slow = await startHarness({ mode: 'key', env: { UPSTREAM_TIMEOUT_MS: '60000' } });
    // The timeout runs on fake time (setTimeout only); sockets are real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const reply = send(slow.proxy.url, 'GET', '/crm/rest/v1/__hang');
      let answered = false;
      void reply.finally(() => (answered = true));
      await until('the request to reach Keap', () =>
        slow.sim.lastRequests.some((q) => q.url === '/crm/rest/v1/__hang'),
      );
      await vi.advanceTimersByTimeAsync(59_999);
      // Meanwhile other requests are served (a round trip, after which an early 504 would have shown).
      expect((await send(slow.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
      expect(answered).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      const r = await reply;
      expect(r.status).toBe(504);
      expect(r.json()).toMatchObject({ error: 'upstream_timeout' });
      // The proxy stays healthy afterwards.
      expect((await send(slow.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    } finally {
      vi.useRealTimers();
      await slow.close();
    }
  });

  it('a client that disconnects releases the upstream connection', async () => {
    let upstreamClosed = false;
    let arrived!: () => void;
    const atUpstream = new Promise<void>((r) => (arrived = r));
    h.sim.route('GET', '/crm/rest/v1/__held', (_req, res) => {
      res.on('close', () => {
        upstreamClosed = true;
      });
      arrived();
    });
    const u = new URL(h.proxy.url);
    const req = http.get({
      host: u.hostname,
      port: u.port,
      path: '/crm/rest/v1/__held',
      agent: false,
      headers: { 'x-request-id': 'gone-early' },
    });
    req.on('error', () => undefined);
    // Gone once the request is at Keap, however long it took to get there.
    await atUpstream;
    req.destroy();
    const line = (): Record<string, unknown> | undefined => h.logs.entries.find((e) => e.reqId === 'gone-early');
    await expect.poll(() => upstreamClosed && line() !== undefined, { timeout: 10_000, interval: 20 }).toBe(true);
    h.sim.unroute('GET', '/crm/rest/v1/__held');
    expect(line()).toMatchObject({ event: 'request', outcome: 'client_closed' });
  });

  it('closing with a grace period lets a request in flight finish and refuses new ones', async () => {
    const g = await startHarness({ mode: 'key' });
    try {
      // Keap holds its answer until the test lets it go: the request is in flight for as long as it takes.
      let arrived!: () => void;
      const atUpstream = new Promise<void>((r) => (arrived = r));
      let answer: (() => void) | undefined;
      g.sim.route('GET', '/crm/rest/v1/__graceful', (_req, res) => {
        answer = () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        arrived();
      });
      const inFlight = send(g.proxy.url, 'GET', '/crm/rest/v1/__graceful');
      await atUpstream;
      // Far longer than the rest of the test takes, busy machine or not: the answer, not the grace timer, ends the wait.
      const closing = g.proxy.close(15_000);
      await expect(send(g.proxy.url, 'GET', '/crm/rest/v1/contacts')).rejects.toThrow(/ECONNREFUSED/);
      answer?.();
      expect((await inFlight).status).toBe(200);
      await closing;
    } finally {
      await g.sim.close();
    }
  });
});
