import { describe, it, expect, afterEach, vi } from 'vitest';
import { randomBytes } from 'node:crypto';
import { harnessPerTest, send, sha256 } from './harness.js';
import { QuotaPacer, type PaceLimits } from '../src/pacing/pacer.js';
import { createLogger } from '../src/observability/log.js';
import { DailyQuotaSpent, PacingError, QueueFull } from '../src/pacing/pacing-errors.js';

const harness = harnessPerTest(afterEach);

describe('pacing to Keap quotas', () => {
  it('a burst of 2L requests with limit L: all 200, no 429 upstream', async () => {
    // Twice the limit, so the burst runs past Keap's first one-second window and the
    // simulator's sliding window judges the pacer's spacing, not only the start. The rate
    // itself is measured on the pacer's own clock (below): real time here would measure the
    // machine's speed, and the pacer's ceiling is exactly margin x L.
    const L = 10;
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: String(L) }, sim: { ratePerSecond: L } });
    const replies = await Promise.all(
      Array.from({ length: 2 * L }, () => send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')),
    );
    for (const r of replies) expect(r.status).toBe(200);
    expect(h.sim.counters.throttled).toBe(0);
    expect(h.sim.counters.apiCalls).toBe(2 * L);
  });

  it('on fake time, a burst departs exactly margin x L per second: never faster, never idle', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 30, 12) });
    const L = 10;
    const margin = 0.9;
    const pacer = new QuotaPacer(
      {
        perSecond: L,
        perMinute: 100_000,
        perDay: 1_000_000,
        tenantPerMinute: 100_000,
        tenantPerDay: 1_000_000,
        margin,
        queueLimit: 1000,
      },
      createLogger('silent'),
    );
    try {
      const departures: number[] = [];
      const all = Promise.all(
        Array.from({ length: 8 * L }, () =>
          pacer.acquire(Date.now() + 60_000, 'new').then(() => void departures.push(Date.now())),
        ),
      );
      while (departures.length < 8 * L) await vi.advanceTimersByTimeAsync(10);
      await all;
      const spacing = 1000 / (L * margin);
      const gaps = departures.slice(1).map((t, i) => t - (departures[i] as number));
      // Never closer than Keap's own interval (a departure may follow a late one by up to half
      // the margin's slack, which keeps timer lateness from adding up)...
      for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(1000 / L);
      // ...and never idle: no gap longer than one interval plus the 10 ms the test advances by.
      for (const gap of gaps) expect(gap).toBeLessThanOrEqual(Math.ceil(spacing) + 10);
      const perSecond = ((8 * L - 1) * 1000) / ((departures.at(-1) as number) - (departures[0] as number));
      // Over the burst, margin x L to within the one late allowance (5.5 ms of 8.8 s) the first slot gets.
      expect(perSecond).toBeLessThanOrEqual(margin * L * 1.001);
      expect(perSecond).toBeGreaterThan(margin * L * 0.99);
    } finally {
      await pacer.stop();
      vi.useRealTimers();
    }
  });

  it('when Keap is tighter than configured, its spike-arrest 429s are absorbed: every client gets 200, POST bodies included', async () => {
    // Twice what Keap takes in a second: the pacer's first second overruns it, and the rest waits out the 429s.
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '20' }, sim: { ratePerSecond: 8 } });
    const bodies = Array.from({ length: 16 }, (_, i) => (i % 2 === 0 ? randomBytes(200 + i) : undefined));
    const replies = await Promise.all(
      bodies.map((body) => send(h.proxy.url, body ? 'POST' : 'GET', '/crm/rest/v1/__echo', { body })),
    );
    for (const [i, r] of replies.entries()) {
      expect(r.status, `request ${i}`).toBe(200);
      expect(r.json<{ bodySha256: string }>().bodySha256).toBe(sha256(bodies[i] ?? Buffer.alloc(0)));
    }
    expect(h.sim.counters.throttled).toBeGreaterThan(0);
    const absorbed = h.logs.entries.filter((e) => e.event === 'rate_limited' && e.outcome === 'absorbed');
    expect(absorbed.length).toBe(h.sim.counters.throttled);
  });

  it('Retry-After, when Keap sends one, is honoured', async () => {
    const h = await harness({
      mode: 'key',
      env: { RATE_LIMIT_PER_SECOND: '20' },
      sim: { ratePerSecond: 5, retryAfterOn429: true },
    });
    // More than Keap's 5 a second: the first 429 comes within the first second.
    const replies = await Promise.all(
      Array.from({ length: 8 }, () => send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')),
    );
    for (const r of replies) expect(r.status).toBe(200);
    const waits = h.logs.entries.filter((e) => e.event === 'rate_limited').map((e) => e.waitMs);
    expect(waits.length).toBeGreaterThan(0);
    expect(waits.length).toBe(h.sim.counters.throttled);
    for (const w of waits) expect(w).toBe(1000);
  });

  it('a quota-violation 429 (minute throttle) is absorbed and the request replayed', async () => {
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '20' } });
    let calls = 0;
    h.sim.route('POST', '/crm/rest/v1/__flaky', (_req, res, body) => {
      calls += 1;
      if (calls === 1) {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
        res.end(
          JSON.stringify({
            fault: {
              faultstring: 'Rate limit quota violation. Quota limit exceeded. Identifier : x',
              detail: { errorcode: 'policies.ratelimit.QuotaViolation' },
            },
          }),
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body);
    });
    const body = randomBytes(5000);
    const r = await send(h.proxy.url, 'POST', '/crm/rest/v1/__flaky', { body });
    expect(r.status).toBe(200);
    expect(r.body.equals(body)).toBe(true);
    expect(calls).toBe(2);
    expect(h.logs.entries.find((e) => e.event === 'rate_limited')).toMatchObject({
      outcome: 'absorbed',
      errorcode: 'policies.ratelimit.QuotaViolation',
      waitMs: 1000,
    });
    expect(h.logs.entries.find((e) => e.event === 'request' && e.path === '/crm/rest/v1/__flaky')).toMatchObject({
      attempts: 2,
      status: 200,
    });
  });

  it('a request that cannot wait long enough gets 429 with Retry-After, honouring the client deadline header', async () => {
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '20' } });
    let calls = 0;
    h.sim.route('GET', '/crm/rest/v1/__busy', (_req, res) => {
      calls += 1;
      res
        .writeHead(429, { 'content-type': 'application/json', 'retry-after': '5' })
        .end('{"code":"429","message":"Quota Exceeded","status":"Request Throttled"}');
    });
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/__busy', {
      headers: { 'x-keap-proxy-deadline-ms': '2000' },
    });
    expect(r.status).toBe(429);
    expect(r.json()).toMatchObject({ error: 'rate_limited' });
    expect(r.headers['retry-after']).toBe('5');
    // Not waited for: passed on at the first 429 because of the deadline, never replayed.
    expect(calls).toBe(1);
    expect(h.logs.entries.filter((e) => e.event === 'rate_limited')).toEqual([
      expect.objectContaining({ outcome: 'passed_on', reason: 'deadline', waitMs: 5000, attempts: 1 }),
    ]);
    expect(h.sim.lastRequests.at(-1)?.headers['x-keap-proxy-deadline-ms']).toBeUndefined();
  });

  it('a body too large to replay is not replayed after a 429: the client gets 429 JSON with Retry-After', async () => {
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '20', REPLAY_BODY_BYTES: '1000' } });
    let calls = 0;
    h.sim.route('POST', '/crm/rest/v1/__busy-upload', (_req, res) => {
      calls += 1;
      res.writeHead(429, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          fault: {
            faultstring: 'Spike arrest violation',
            detail: { errorcode: 'policies.ratelimit.SpikeArrestViolation' },
          },
        }),
      );
    });
    const r = await send(h.proxy.url, 'POST', '/crm/rest/v1/__busy-upload', { body: randomBytes(20_000) });
    expect(r.status).toBe(429);
    expect(r.json()).toMatchObject({ error: 'rate_limited' });
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(calls).toBe(1);
    expect(h.logs.entries.find((e) => e.event === 'rate_limited')).toMatchObject({
      outcome: 'passed_on',
      reason: 'body_streamed',
    });
  });

  // That the refusal comes at once, without waiting for a slot, is shown on fake time below.
  it('a spent daily quota gives a 429 with Retry-After, without calling Keap', async () => {
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '50', RATE_LIMIT_MARGIN: '1' } });
    h.sim.setDailyQuota(5);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status);
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
    expect(statuses.slice(5).every((s) => s === 429)).toBe(true);
    expect(h.logs.entries.filter((e) => e.event === 'request' && e.status === 429).length).toBe(3);
    const callsBefore = h.sim.counters.apiCalls;
    const r = await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(429);
    expect(r.json()).toMatchObject({ error: 'daily_quota_exhausted' });
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    expect(h.sim.counters.apiCalls).toBe(callsBefore);
  });

  // That the refusal comes at once, without waiting for a slot, is shown on fake time below.
  it('a full queue gives a 503 with Retry-After', async () => {
    // One departs, one waits its slot, one waits in the queue: the rest are refused, unless
    // they arrive so slowly (three slots, most of a second) that slots have come free.
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '4', QUEUE_LIMIT: '1' } });
    const replies = await Promise.all(
      Array.from({ length: 12 }, () => send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')),
    );
    const full = replies.filter((r) => r.status === 503);
    expect(full.length).toBeGreaterThanOrEqual(6);
    for (const r of full) {
      expect(r.json()).toMatchObject({ error: 'queue_full' });
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    expect(replies.filter((r) => r.status === 200).length).toBe(12 - full.length);
    expect(h.sim.counters.apiCalls).toBe(12 - full.length);
    expect(h.sim.counters.throttled).toBe(0);
  });

  it('quota headers that report less budget slow the pace: the proxy stops before Keap says 429', async () => {
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '20', RATE_LIMIT_MARGIN: '0.9' } });
    // Keap reports a minute throttle of 20 (other apps, or a smaller package): 90% of it is ours.
    h.sim.setMinuteQuota(20);
    const replies = await Promise.all(
      Array.from({ length: 30 }, () =>
        send(h.proxy.url, 'GET', '/crm/rest/v1/contacts', { headers: { 'x-keap-proxy-deadline-ms': '3000' } }),
      ),
    );
    const ok = replies.filter((r) => r.status === 200).length;
    const waited = replies.filter((r) => r.status === 429);
    // The first answer arrives before many have left; from then on the pacer keeps to 18 a minute.
    expect(ok).toBeGreaterThanOrEqual(15);
    expect(ok).toBeLessThanOrEqual(20);
    for (const r of waited) expect(r.json()).toMatchObject({ error: 'rate_limited' });
    expect(h.sim.counters.throttled).toBe(0);
    expect(h.logs.entries.find((e) => e.event === 'keap_quota_reported')).toMatchObject({
      keapMinuteLimit: 20,
      minuteBudget: expect.any(Number),
    });
  });
});

/** A pacer on fake time (the test installs the fake timers; the pacer reads the faked Date.now). */
function fakeTimePacer(limits: Partial<PaceLimits>): QuotaPacer {
  return new QuotaPacer(
    {
      perSecond: 1,
      perMinute: 1000,
      perDay: 1000,
      tenantPerMinute: 1000,
      tenantPerDay: 1000,
      margin: 1,
      queueLimit: 10,
      ...limits,
    },
    createLogger('silent'),
  );
}

interface Tracked {
  outcome: 'pending' | 'resolved' | PacingError;
  /** When it settled, on the fake clock. */
  at?: number;
}

/** Records how and when (on the fake clock) an acquire settles. */
function track(p: Promise<void>): Tracked {
  const t: Tracked = { outcome: 'pending' };
  p.then(
    () => Object.assign(t, { outcome: 'resolved', at: Date.now() }),
    (err: unknown) => Object.assign(t, { outcome: err as PacingError, at: Date.now() }),
  );
  return t;
}

describe('refusals on fake time come at once, not after a wait for a slot', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a full queue: 503 queue_full within moments, while the queued wait their slots a second apart', async () => {
    const start = Date.UTC(2026, 10, 30, 12);
    vi.useFakeTimers({ now: start });
    // One departure a second, room for 3 to wait.
    const pacer = fakeTimePacer({ perSecond: 1, queueLimit: 3 });
    try {
      const deadline = start + 60_000;
      const queued = Array.from({ length: 5 }, () => track(pacer.acquire(deadline, 'new')));
      const refused = track(pacer.acquire(deadline, 'new'));
      // 50 ms of fake time: far short of the next slot, a second away.
      await vi.advanceTimersByTimeAsync(50);
      expect(queued.map((t) => t.outcome)).toEqual(['resolved', 'pending', 'pending', 'pending', 'pending']);
      expect(refused.outcome).toBeInstanceOf(QueueFull);
      expect(refused.outcome).toMatchObject({ code: 'queue_full', queueLimit: 3 });
      expect((refused.outcome as QueueFull).retryAfterSeconds).toBeGreaterThanOrEqual(1);
      // The queued ones still go, a second apart.
      await vi.advanceTimersByTimeAsync(5000);
      expect(queued.map((t) => t.outcome)).toEqual(queued.map(() => 'resolved'));
      const at = queued.map((t) => t.at as number);
      expect(at.slice(1).map((t, i) => t - (at[i] as number))).toEqual([1000, 1000, 1000, 1000]);
      expect(refused.at as number).toBeLessThan(at[1] as number);
    } finally {
      await pacer.stop();
    }
  });

  it('a spent day: 429 daily_quota_exhausted within moments; the window resets at 00:00 UTC, not 24 hours after start', async () => {
    // Fake time from 23:55 UTC: minutes from midnight however slow the machine.
    const start = Date.UTC(2026, 10, 23, 23, 55);
    const midnight = Date.UTC(2026, 10, 24);
    vi.useFakeTimers({ now: start });
    const pacer = fakeTimePacer({ perSecond: 1, perDay: 2 });
    try {
      const deadline = (): number => Date.now() + 5000;
      const both = [track(pacer.acquire(deadline(), 'new')), track(pacer.acquire(deadline(), 'new'))];
      await vi.advanceTimersByTimeAsync(1100);
      expect(both.map((t) => t.outcome)).toEqual(['resolved', 'resolved']);
      const spent = track(pacer.acquire(deadline(), 'new'));
      // The next slot would be a second after the last departure: the refusal does not wait for it.
      await vi.advanceTimersByTimeAsync(50);
      expect(spent.outcome).toBeInstanceOf(DailyQuotaSpent);
      const err = spent.outcome as DailyQuotaSpent;
      expect(err.code).toBe('daily_quota_exhausted');
      expect(err.message).toContain('it resets at 2026-11-24T00:00:00.000Z');
      // Until midnight, not for a day: the 5 minutes left.
      expect(err.retryAfterSeconds).toBe(Math.ceil((midnight - (spent.at as number)) / 1000));
      // Still spent a second before midnight; a fresh day just after it.
      vi.setSystemTime(midnight - 1000);
      const late = track(pacer.acquire(deadline(), 'new'));
      await vi.advanceTimersByTimeAsync(50);
      expect(late.outcome).toMatchObject({ code: 'daily_quota_exhausted' });
      vi.setSystemTime(midnight + 50);
      const fresh = track(pacer.acquire(deadline(), 'new'));
      await vi.advanceTimersByTimeAsync(50);
      expect(fresh.outcome).toBe('resolved');
    } finally {
      await pacer.stop();
    }
  });
});
