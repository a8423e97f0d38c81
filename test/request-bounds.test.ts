// What one request may cost Keap and the proxy: nothing once its client has gone, a bounded
// number of 429 replays at a bounded pace, and a bounded share of memory for its body.
import { describe, it, expect, afterEach, vi } from 'vitest';
import type { Socket } from 'node:net';
import { loadConfig } from '../src/config/config.js';
import {
  rateLimitWait,
  RATE_LIMIT_REPLAYS,
  type RateLimitReplayPolicy,
} from '../src/upstream/back-off-on-rate-limit.js';
import type { Fault } from '../src/keap/apigee.js';
import { metric, tempDir, send, startRawRig, until, SIM_API_KEY, type RawRig, type Reply } from './harness.js';
import { MANUAL, ok, rawClient, rawExchange, type RecordedRequest } from './raw-upstream.js';

const open: RawRig[] = [];
afterEach(async () => {
  for (const r of open.splice(0)) await r.close();
});

async function rig(env: Record<string, string>, rateLimitReplays?: RateLimitReplayPolicy): Promise<RawRig> {
  const r = await startRawRig(env, { rateLimitReplays });
  open.push(r);
  return r;
}

function targets(reqs: readonly RecordedRequest[]): string[] {
  return reqs.map((r) => r.target);
}

/** A GET through the proxy while the test fakes the timers: fake time moves on in 50 ms steps until it is answered. */
async function sendOnFakeTime(baseUrl: string, path: string): Promise<Reply> {
  let answered = false;
  const reply = send(baseUrl, 'GET', path).finally(() => (answered = true));
  await until(`an answer to ${path}`, async () => {
    await vi.advanceTimersByTimeAsync(50);
    return answered;
  });
  return reply;
}

describe('a client that has gone', () => {
  it('a POST queued for the rate limit is dropped when its client disconnects, and logged as never sent', async () => {
    const { upstream, proxy, logs } = await rig({ RATE_LIMIT_PER_SECOND: '1', RATE_LIMIT_MARGIN: '1' });
    // The first call takes this second's slot; the next ones must queue for about a second.
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/first')).status).toBe(200);
    const clients = Array.from({ length: 10 }, (_, i) =>
      rawClient(
        proxy.url,
        `POST /crm/rest/v1/queued/${i} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: queued-${i}\r\nContent-Length: 2\r\n\r\n{}`,
      ),
    );
    await until('ten queued requests', async () => (await metric(proxy.url, 'keap_proxy_queue_depth')) === 10);
    for (const c of clients) c.socket.destroy();
    await until('the queue to empty', async () => (await metric(proxy.url, 'keap_proxy_queue_depth')) === 0);
    // A later request goes out: the dropped ones took no slot and never reached Keap.
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/after')).status).toBe(200);
    expect(targets(upstream.requests)).toEqual(['/crm/rest/v1/first', '/crm/rest/v1/after']);
    const lines = logs.entries.filter((e) => String(e.reqId).startsWith('queued-'));
    expect(lines).toHaveLength(10);
    for (const line of lines) expect(line).toMatchObject({ event: 'request', attempts: 0, outcome: 'client_closed' });
  });

  it('a request waiting to replay after a 429 is not replayed once its client has gone', async () => {
    const { upstream, proxy, logs } = await rig({});
    upstream.respond = () => 'HTTP/1.1 429 Too Many Requests\r\nretry-after: 5\r\ncontent-length: 0\r\n\r\n';
    // The wait for the replay runs on fake time (setTimeout only); sockets are real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const c = rawClient(
        proxy.url,
        'POST /crm/rest/v1/contacts HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: gone-429\r\nContent-Length: 2\r\n\r\n{}',
      );
      await until('the first send', () => upstream.requests.length === 1);
      c.socket.destroy();
      await until('the request line', () => logs.entries.some((e) => e.reqId === 'gone-429' && e.event === 'request'));
      // Past Keap's Retry-After: a replay's timer would fire now...
      await vi.advanceTimersByTimeAsync(10_000);
      // ...and its send would reach Keap before a request sent after it.
      upstream.respond = () => ok();
      expect((await send(proxy.url, 'GET', '/crm/rest/v1/after')).status).toBe(200);
      expect(targets(upstream.requests)).toEqual(['/crm/rest/v1/contacts', '/crm/rest/v1/after']);
      expect(logs.entries.find((e) => e.reqId === 'gone-429' && e.event === 'request')).toMatchObject({
        attempts: 1,
        outcome: 'client_closed',
      });
    } finally {
      vi.useRealTimers();
    }
  });
  it('requests pipelined behind a slow one are never sent once their connection has gone', async () => {
    const { upstream, proxy, logs } = await rig({});
    upstream.respond = (req) => (req.target.endsWith('/slow') ? MANUAL : ok());
    const c = rawClient(
      proxy.url,
      ['GET /crm/rest/v1/slow', 'POST /crm/rest/v1/second', 'DELETE /crm/rest/v1/third']
        .map(
          (line, i) => `${line} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: piped-${i}\r\nContent-Length: 0\r\n\r\n`,
        )
        .join(''),
    );
    await until('the first request to reach Keap', () => upstream.requests.length === 1);
    c.socket.destroy();
    await until(
      'three request lines',
      () => logs.entries.filter((e) => String(e.reqId).startsWith('piped-')).length === 3,
    );
    // Nothing is left to run them later: the queue was emptied when the connection went.
    await new Promise((r) => setTimeout(r, 100));
    expect(targets(upstream.requests)).toEqual(['/crm/rest/v1/slow']);
    const lines = logs.entries.filter((e) => String(e.reqId).startsWith('piped-'));
    expect(lines.map((e) => [e.reqId, e.attempts, e.outcome])).toEqual([
      ['piped-0', 1, 'client_closed'],
      ['piped-1', 0, 'client_closed'],
      ['piped-2', 0, 'client_closed'],
    ]);
  });
});

describe('429 replays', () => {
  const fast: RateLimitReplayPolicy = {
    maxAttempts: 12,
    minDelayMs: 2,
    spike: { baseMs: 2, maxMs: 8 },
    throttle: { baseMs: 2, maxMs: 8 },
    jitter: 0,
  };

  it('against Retry-After: 0, each request is sent exactly maxAttempts times, then the client gets 429, and no listener piles up', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      const { upstream, proxy } = await rig({}, fast);
      upstream.respond = () =>
        'HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}';
      const replies = await Promise.all(
        Array.from({ length: 5 }, (_, i) => send(proxy.url, 'POST', `/crm/rest/v1/storm/${i}`, { body: '{"n":1}' })),
      );
      for (const r of replies) {
        expect(r.status).toBe(429);
        expect(r.json()).toMatchObject({ error: 'rate_limited' });
        expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      }
      expect(upstream.requests).toHaveLength(5 * 12);
      for (let i = 0; i < 5; i++)
        expect(upstream.requests.filter((r) => r.target === `/crm/rest/v1/storm/${i}`)).toHaveLength(12);
      // Every replay carried the body the client sent.
      for (const r of upstream.requests) expect(r.body.toString()).toBe('{"n":1}');
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('RATE_LIMIT_MAX_ATTEMPTS bounds the sends with the default delays, which are at least 250 ms apart', async () => {
    const { upstream, proxy, logs } = await rig({ RATE_LIMIT_MAX_ATTEMPTS: '3' });
    // The delays run on fake time (setTimeout and Date only); sockets are real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    try {
      const arrivals: number[] = [];
      upstream.respond = () => {
        arrivals.push(Date.now());
        return 'HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 0\r\n\r\n';
      };
      expect((await sendOnFakeTime(proxy.url, '/crm/rest/v1/contacts')).status).toBe(429);
      expect(arrivals).toHaveLength(3);
      const limited = logs.entries.filter((e) => e.event === 'rate_limited');
      expect(limited.map((e) => [e.outcome, e.reason])).toEqual([
        ['absorbed', undefined],
        ['absorbed', undefined],
        ['passed_on', 'attempts'],
      ]);
      const waits = limited.map((e) => e.waitMs as number);
      for (const w of waits) expect(w).toBeGreaterThanOrEqual(RATE_LIMIT_REPLAYS.minDelayMs);
      // Each replay went no sooner than its wait (which the log rounds to the ms).
      expect((arrivals[1] as number) - (arrivals[0] as number)).toBeGreaterThanOrEqual((waits[0] as number) - 1);
      expect((arrivals[2] as number) - (arrivals[1] as number)).toBeGreaterThanOrEqual((waits[1] as number) - 1);
    } finally {
      vi.useRealTimers();
    }
  });

  it("the default policy: never under 250 ms, backing off from it, Keap's longer Retry-After wins", () => {
    const none: Fault = { errorcode: undefined, faultstring: undefined };
    const spike: Fault = { errorcode: 'policies.ratelimit.SpikeArrestViolation', faultstring: undefined };
    const mid = (): number => 0.5;
    const low = (): number => 0;
    const wait = (retryAfter: string | undefined, fault: Fault, attempt: number, random = mid): number =>
      rateLimitWait(retryAfter, fault, undefined, attempt, 0, RATE_LIMIT_REPLAYS, random).ms;
    expect([1, 2, 3, 4, 5, 6].map((n) => wait('0', spike, n))).toEqual([250, 500, 1000, 2000, 4000, 4000]);
    expect([1, 2, 3].map((n) => wait('0', none, n, low))).toEqual([250, 375, 750]);
    expect(wait('10', spike, 1)).toBe(10_000);
    expect(wait(undefined, spike, 1)).toBe(1000);
    expect(wait(undefined, none, 2)).toBe(4000);
    expect(wait(undefined, none, 12)).toBe(60_000);
    expect(wait('garbage', spike, 1, low)).toBe(750);
  });
});

describe('the memory budget for buffered bodies', () => {
  it('past the budget a request gets 503 with Retry-After at once, never reaching Keap; the budget frees when a body is done', async () => {
    const { upstream, proxy } = await rig({ REPLAY_BODY_BYTES: '100000', BODY_BUFFER_BUDGET_BYTES: '150000' });
    const held: Socket[] = [];
    upstream.respond = (req, socket) => {
      if (!req.target.startsWith('/crm/rest/v1/hold')) return ok();
      held.push(socket);
      return MANUAL;
    };
    const body = 'x'.repeat(100_000);
    const first = send(proxy.url, 'POST', '/crm/rest/v1/hold/1', { body });
    await until('the first upload to reach Keap', () => upstream.requests.length === 1);
    expect(await metric(proxy.url, 'keap_proxy_body_buffer_bytes', { kind: 'in_use' })).toBe(100_000);

    const refused = await send(proxy.url, 'POST', '/crm/rest/v1/hold/2', { body });
    expect(refused.status).toBe(503);
    expect(refused.json()).toMatchObject({ error: 'body_budget_exhausted' });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Refused before a byte was read: the body is dropped (not held), and the connection
    // carries the client's next request, which reaches Keap whole.
    const twoOnOneConnection = await rawExchange(
      proxy.url,
      `POST /crm/rest/v1/hold/2b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\n\r\n${body}GET /crm/rest/v1/next HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    );
    expect([...twoOnOneConnection.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1])).toEqual(['503', '200']);
    // A chunked body (no length declared up front) is refused as it outgrows the budget.
    const chunked = await send(proxy.url, 'POST', '/crm/rest/v1/hold/3', {
      body,
      headers: { 'transfer-encoding': 'chunked' },
    });
    expect(chunked.status).toBe(503);
    // Refused halfway through its body: the connection cannot carry another request.
    expect(chunked.headers.connection).toBe('close');
    expect(targets(upstream.requests)).toEqual(['/crm/rest/v1/hold/1', '/crm/rest/v1/next']);

    held[0]?.write(ok());
    expect((await first).status).toBe(200);
    await until(
      'the budget to be given back',
      async () => (await metric(proxy.url, 'keap_proxy_body_buffer_bytes', { kind: 'in_use' })) === 0,
    );
    upstream.respond = () => ok();
    expect((await send(proxy.url, 'POST', '/crm/rest/v1/hold/4', { body })).status).toBe(200);
    expect(await metric(proxy.url, 'keap_proxy_body_buffer_bytes', { kind: 'limit' })).toBe(150_000);
  });

  it('a declared length over MAX_BODY_BYTES is refused from the headers alone, before a byte is sent; a long one within it streams', async () => {
    const { upstream, proxy } = await rig({
      MAX_BODY_BYTES: '1000000',
      REPLAY_BODY_BYTES: '100000',
      BODY_BUFFER_BUDGET_BYTES: '100000',
    });
    for (const [length, status] of [[1_000_001, '413']] as const) {
      // Headers only: were the proxy waiting for the body, this would never be answered.
      const c = rawClient(
        proxy.url,
        `POST /crm/rest/v1/contacts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${length}\r\n\r\n`,
      );
      await until(`an answer to ${length} declared bytes`, () => c.text().includes('\r\n\r\n'));
      expect(c.text().split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      c.socket.destroy();
    }
    expect(upstream.requests).toEqual([]);
    // A budget of exactly one replayable body admits a body that streams past it.
    const long = await send(proxy.url, 'PUT', '/crm/rest/v1/long', { body: 'y'.repeat(300_000) });
    expect(long.status).toBe(200);
    expect(upstream.requests.map((r) => [r.target, r.body.length])).toEqual([['/crm/rest/v1/long', 300_000]]);
  });

  it('is refused at start when smaller than one replayable body', () => {
    expect(() =>
      loadConfig({
        env: { KEAP_API_KEY: SIM_API_KEY, REPLAY_BODY_BYTES: '2000', BODY_BUFFER_BUDGET_BYTES: '1000' },
        cwd: tempDir(),
      }),
    ).toThrow(/BODY_BUFFER_BUDGET_BYTES: must be at least REPLAY_BODY_BYTES/);
  });
});
