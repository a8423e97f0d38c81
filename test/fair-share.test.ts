// A fair share of one OAuth client's budget between its accounts (src/pacing/fair-share.ts).
// Everything runs on fake time: the tests count departures and read their times on the fake
// clock; none measures how fast the machine is. At 10/s with margin 1 one spacing is 100 ms.
import { describe, it, expect, afterEach, vi } from 'vitest';
import fc from 'fast-check';
import { createLogger } from '../src/observability/log.js';
import { SharedClient, type AccountShare, type FairSharePacer } from '../src/pacing/fair-share.js';
import type { Pacer, Priority } from '../src/pacing/pacer.js';
import type { PaceLimits } from '../src/pacing/gate.js';
import {
  DailyQuotaSpent,
  DeadlineExceeded,
  PacingError,
  QueueFull,
  WaitAbandoned,
} from '../src/pacing/pacing-errors.js';
import type { QuotaReport } from '../src/keap/keap-quota.js';

const START = Date.UTC(2026, 10, 30, 12);
const SPACING = 100;
const LIMITS: PaceLimits = {
  perSecond: 10,
  perMinute: 100_000,
  perDay: 1_000_000,
  tenantPerMinute: 100_000,
  tenantPerDay: 1_000_000,
  margin: 1,
  queueLimit: 1000,
};
/** Far enough that no deadline matters unless a test sets one. */
const LATER = START + 3_600_000;

const clients: SharedClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.stop()));
  vi.useRealTimers();
});

/** A shared client on fake time from START (the test installs nothing else). */
function sharedClient(limits: Partial<PaceLimits> = {}): SharedClient {
  vi.useFakeTimers({ now: START });
  const client = new SharedClient({ ...LIMITS, ...limits }, createLogger('silent'));
  clients.push(client);
  return client;
}

interface Tracked {
  account: string;
  arrived: number;
  outcome: 'pending' | 'resolved' | PacingError;
  /** When it settled, on the fake clock. */
  at?: number;
}

/** Departures in the order they happened, every account's. */
class Recorder {
  readonly all: Tracked[] = [];
  readonly departures: Tracked[] = [];

  request(
    account: string,
    pacer: Pacer,
    options: { deadline?: number; priority?: Priority; signal?: AbortSignal } = {},
  ): Tracked {
    const t: Tracked = { account, arrived: Date.now(), outcome: 'pending' };
    this.all.push(t);
    pacer.acquire(options.deadline ?? LATER, options.priority ?? 'new', options.signal).then(
      () => {
        Object.assign(t, { outcome: 'resolved', at: Date.now() });
        this.departures.push(t);
      },
      (err: unknown) => Object.assign(t, { outcome: err as PacingError, at: Date.now() }),
    );
    return t;
  }

  many(n: number, account: string, pacer: Pacer, options: { deadline?: number; priority?: Priority } = {}): Tracked[] {
    return Array.from({ length: n }, () => this.request(account, pacer, options));
  }

  of(account: string, from = -Infinity, to = Infinity): Tracked[] {
    return this.departures.filter((d) => d.account === account && (d.at as number) >= from && (d.at as number) < to);
  }

  gaps(): number[] {
    const at = this.departures.map((d) => d.at as number);
    return at.slice(1).map((t, i) => t - (at[i] as number));
  }
}

function pacers(client: SharedClient, shares: Record<string, AccountShare>): Record<string, FairSharePacer> {
  return Object.fromEntries(Object.entries(shares).map(([id, share]) => [id, client.pacerFor(id, share)]));
}

describe('a fair share of one OAuth client between its accounts', () => {
  it('a trickle beside a flood: each trickle call leaves within one spacing of arriving; the flood gets the rest', async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: {}, b: {} }) as { a: FairSharePacer; b: FairSharePacer };
    const rec = new Recorder();
    rec.many(200, 'a', a);
    const trickle: Tracked[] = [];
    // One every 500 ms, arriving between the shared budget's slots (37 ms past one).
    await vi.advanceTimersByTimeAsync(37);
    for (let i = 0; i < 20; i++) {
      trickle.push(rec.request('b', b));
      await vi.advanceTimersByTimeAsync(500);
    }
    expect(trickle.map((t) => t.outcome)).toEqual(trickle.map(() => 'resolved'));
    for (const t of trickle) expect((t.at as number) - t.arrived).toBeLessThanOrEqual(SPACING);
    // Arriving at a slot that has just gone to the flood: the next one, a full spacing on.
    await vi.advanceTimersByTimeAsync(63);
    const onSlot = rec.request('b', b);
    await vi.advanceTimersByTimeAsync(SPACING);
    expect(onSlot.outcome).toBe('resolved');
    expect((onSlot.at as number) - onSlot.arrived).toBe(SPACING);
    // Never faster than the shared budget, never an idle slot: the flood took every other one.
    for (const gap of rec.gaps()) expect(gap).toBe(SPACING);
    const tenSeconds = rec.departures.filter((d) => (d.at as number) < START + 10_000);
    expect(tenSeconds.length).toBe(100);
    expect(tenSeconds.filter((d) => d.account === 'a').length).toBe(80);
  });

  it('is work conserving: one account alone gets the full rate, shares it while another is backlogged, and gets it all back when that one stops', async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: {}, b: {} }) as { a: FairSharePacer; b: FairSharePacer };
    const rec = new Recorder();
    rec.many(100, 'a', a);
    await vi.advanceTimersByTimeAsync(1950);
    expect(rec.of('a').length).toBe(20);
    rec.many(10, 'b', b);
    await vi.advanceTimersByTimeAsync(2000);
    // Half each while both wait, until b's ten are gone.
    expect(rec.of('b').length).toBe(10);
    expect(rec.of('a', START + 2000, START + 4000).length).toBe(10);
    await vi.advanceTimersByTimeAsync(3000);
    expect(rec.of('a', START + 4000, START + 7000).length).toBe(30);
    for (const gap of rec.gaps()) expect(gap).toBe(SPACING);
    // b's turns alternated with a's: never two of b's in a row.
    const order = rec.departures.map((d) => d.account).join('');
    expect(order).not.toContain('bb');
  });

  it('weights 3:1 with both backlogged: departures 3:1 in every window', async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: { weight: 3 }, b: { weight: 1 } }) as { a: FairSharePacer; b: FairSharePacer };
    const rec = new Recorder();
    rec.many(200, 'a', a);
    rec.many(200, 'b', b);
    await vi.advanceTimersByTimeAsync(7950);
    expect(rec.departures.length).toBe(80);
    expect(rec.of('a').length).toBe(60);
    expect(rec.of('b').length).toBe(20);
    const order = rec.departures.map((d) => d.account);
    for (let i = 0; i + 8 <= order.length; i += 4) {
      const aInWindow = order.slice(i, i + 8).filter((x) => x === 'a').length;
      expect(Math.abs(aInWindow - 6), `window ${i}`).toBeLessThanOrEqual(1);
    }
  });

  it("a full queue on one account answers QueueFull at once; the other account's calls go on as before", async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: { queueLimit: 5 }, b: { queueLimit: 5 } }) as {
      a: FairSharePacer;
      b: FairSharePacer;
    };
    const rec = new Recorder();
    // queueLimit waiters plus the one at the head, as QuotaPacer holds.
    const held = rec.many(6, 'a', a);
    const refused = rec.many(3, 'a', a);
    const trickle = rec.request('b', b);
    await vi.advanceTimersByTimeAsync(1);
    for (const t of refused) {
      expect(t.outcome).toBeInstanceOf(QueueFull);
      expect(t.outcome).toMatchObject({ code: 'queue_full', queueLimit: 5 });
      expect(t.at).toBe(START);
    }
    expect(a.depth()).toBe(5);
    await vi.advanceTimersByTimeAsync(SPACING);
    expect(trickle.outcome).toBe('resolved');
    expect(trickle.at).toBe(START + SPACING);
    await vi.advanceTimersByTimeAsync(1000);
    expect(held.map((t) => t.outcome)).toEqual(held.map(() => 'resolved'));
  });

  it('a waiter past its deadline or whose client went away leaves at once and consumes no slot', async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: {}, b: {} }) as { a: FairSharePacer; b: FairSharePacer };
    const rec = new Recorder();
    const gone = new AbortController();
    const first = rec.request('a', a);
    const late = rec.request('a', a, { deadline: START + 50 });
    const abandoned = rec.request('a', a, { signal: gone.signal });
    const next = rec.request('a', a);
    const other = rec.request('b', b, { deadline: START + 50 });
    await vi.advanceTimersByTimeAsync(20);
    gone.abort();
    await vi.advanceTimersByTimeAsync(200);
    expect(first).toMatchObject({ outcome: 'resolved', at: START });
    expect(abandoned.outcome).toBeInstanceOf(WaitAbandoned);
    expect(abandoned.at).toBe(START + 20);
    expect(late.outcome).toBeInstanceOf(DeadlineExceeded);
    expect(late.at).toBe(START + 50);
    expect(other.outcome).toBeInstanceOf(DeadlineExceeded);
    // The slot after the first went to the next one still waiting, not to the ones that left.
    expect(next).toMatchObject({ outcome: 'resolved', at: START + SPACING });
    expect(rec.departures.length).toBe(2);
    // A signal already aborted never queues.
    const already = rec.request('b', b, { signal: AbortSignal.abort() });
    await vi.advanceTimersByTimeAsync(1);
    expect(already.outcome).toBeInstanceOf(WaitAbandoned);
    expect(a.depth() + b.depth()).toBe(0);
  });

  it('replays leave ahead of new calls within an account', async () => {
    const client = sharedClient();
    const { a } = pacers(client, { a: {} }) as { a: FairSharePacer };
    const rec = new Recorder();
    const fresh = rec.many(4, 'a', a);
    await vi.advanceTimersByTimeAsync(150);
    const replay = rec.request('a', a, { priority: 'replay' });
    await vi.advanceTimersByTimeAsync(1000);
    expect(rec.departures).toEqual([fresh[0], fresh[1], replay, fresh[2], fresh[3]]);
    expect(replay.at).toBe(START + 2 * SPACING);
  });

  it("a tenant limit (TENANT_LIMIT_PER_MINUTE 5) holds its account to 5 a minute while the other takes the client's rate", async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: { tenant: { perMinute: 5, perDay: undefined } }, b: {} }) as {
      a: FairSharePacer;
      b: FairSharePacer;
    };
    const rec = new Recorder();
    rec.many(20, 'a', a);
    rec.many(100, 'b', b);
    await vi.advanceTimersByTimeAsync(9950);
    expect(rec.of('a').length).toBe(5);
    expect(rec.of('b').length).toBe(95);
    for (const gap of rec.gaps()) expect(gap).toBe(SPACING);
    // A call of a's that cannot wait a minute is refused at once.
    const hurried = rec.request('a', a, { deadline: Date.now() + 5000 });
    await vi.advanceTimersByTimeAsync(1);
    expect(hurried.outcome).toBeInstanceOf(DeadlineExceeded);
    expect((hurried.outcome as DeadlineExceeded).retryAfterSeconds).toBeGreaterThan(40);
    await vi.advanceTimersByTimeAsync(50_000);
    expect(rec.of('a', -Infinity, START + 60_000).length).toBe(5);
    const firstA = rec.of('a')[0]?.at as number;
    await vi.advanceTimersByTimeAsync(1000);
    expect(rec.of('a', START + 60_000).length).toBe(5);
    expect(rec.of('a', START + 60_000)[0]?.at).toBe(firstA + 60_000);
  });

  it("Keap's tenant report limits only its account; the client's report limits every account together", async () => {
    const client = sharedClient();
    const { a, b, c } = pacers(client, { a: {}, b: {}, c: {} }) as {
      a: FairSharePacer;
      b: FairSharePacer;
      c: FairSharePacer;
    };
    a.observe(report({ tenant: { minute: { limit: 3, used: 0 } } }));
    const rec = new Recorder();
    rec.many(10, 'a', a);
    rec.many(10, 'b', b);
    await vi.advanceTimersByTimeAsync(5000);
    expect(rec.of('a').length).toBe(3);
    expect(rec.of('b').length).toBe(10);
    // The client's minute throttle, reported on c's response, holds b and c together.
    c.observe(report({ product: { minute: { limit: 16, used: 13 } } }));
    rec.many(10, 'b', b);
    rec.many(10, 'c', c);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(rec.of('b', START + 5000).length + rec.of('c', START + 5000).length).toBe(3);
  });

  it("an account's tenant limit left at the default follows a higher tenant report; one set stays its ceiling", async () => {
    const defaults = { perSecond: false, perMinute: false, perDay: false, tenantPerMinute: false, tenantPerDay: false };
    const client = sharedClient({ tenantPerMinute: 3 });
    const { a, b } = pacers(client, {
      a: { tenant: { perMinute: 3, perDay: undefined, explicit: defaults } },
      b: { tenant: { perMinute: 3, perDay: undefined, explicit: { ...defaults, tenantPerMinute: true } } },
    }) as { a: FairSharePacer; b: FairSharePacer };
    a.observe(report({ tenant: { minute: { limit: 6, used: 0 } } }));
    b.observe(report({ tenant: { minute: { limit: 6, used: 0 } } }));
    const rec = new Recorder();
    rec.many(10, 'a', a);
    rec.many(10, 'b', b);
    await vi.advanceTimersByTimeAsync(5000);
    expect(rec.of('a').length).toBe(6);
    expect(rec.of('b').length).toBe(3);
  });

  it('a client back-off (a spike-arrest 429 on any account) holds every account; a tenant 429 only its own', async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: {}, b: {} }) as { a: FairSharePacer; b: FairSharePacer };
    const rec = new Recorder();
    rec.many(50, 'a', a);
    rec.many(50, 'b', b);
    await vi.advanceTimersByTimeAsync(950);
    expect(rec.departures.length).toBe(10);
    const hurried = rec.request('b', b, { deadline: Date.now() + 1500 });
    b.backOff(3000);
    await vi.advanceTimersByTimeAsync(2950);
    expect(rec.departures.length).toBe(10);
    // Refused as soon as the back-off was seen (the next slot), not at its deadline.
    expect(hurried.outcome).toBeInstanceOf(DeadlineExceeded);
    expect(hurried.at).toBeLessThanOrEqual(START + 950 + SPACING);
    await vi.advanceTimersByTimeAsync(1000);
    expect(rec.of('a', START + 3950).length).toBe(5);
    expect(rec.of('b', START + 3950).length).toBe(5);
    // Keap's report on a's 429 says the tenant's minute is spent, the client's not: a waits alone.
    a.observe(
      report({
        product: { minute: { limit: 1500, available: 1400 } },
        tenant: { minute: { limit: 10, available: 0 } },
      }),
    );
    a.backOff(2000);
    const before = rec.departures.length;
    await vi.advanceTimersByTimeAsync(2000);
    expect(rec.departures.slice(before).every((d) => d.account === 'b')).toBe(true);
    expect(rec.departures.length - before).toBe(20);
    // The scope can be named: 'account' holds a alone whatever the report.
    a.backOff(1000, 'account');
    const again = rec.departures.length;
    await vi.advanceTimersByTimeAsync(1000);
    expect(rec.departures.slice(again).every((d) => d.account === 'b')).toBe(true);
  });

  it("the client's spent day stops every account at once; a tenant's spent day only its own", async () => {
    const client = sharedClient();
    const { a, b, c } = pacers(client, { a: {}, b: {}, c: { tenant: { perMinute: undefined, perDay: 3 } } }) as {
      a: FairSharePacer;
      b: FairSharePacer;
      c: FairSharePacer;
    };
    const rec = new Recorder();
    // A tenant's daily budget (TENANT_LIMIT_PER_DAY 3) spent: c alone is refused.
    const cs = rec.many(5, 'c', c);
    rec.many(20, 'a', a);
    await vi.advanceTimersByTimeAsync(950);
    expect(cs.map((t) => (t.outcome instanceof PacingError ? t.outcome.code : t.outcome))).toEqual([
      'resolved',
      'resolved',
      'resolved',
      'daily_quota_exhausted',
      'daily_quota_exhausted',
    ]);
    expect(rec.of('a').length).toBe(7);
    // Keap says a's tenant day is spent (its report on the 429), the client's not: a alone stops.
    a.observe(
      report({
        product: { day: { limit: 150_000, available: 100 } },
        tenant: { day: { limit: 250_000, available: 0 } },
      }),
    );
    a.exhaustDay(undefined);
    const bs = rec.many(5, 'b', b);
    await vi.advanceTimersByTimeAsync(1);
    expect(rec.all.filter((t) => t.account === 'a' && t.outcome instanceof DailyQuotaSpent).length).toBe(13);
    expect(rec.request('a', a).outcome).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(rec.all.at(-1)?.outcome).toBeInstanceOf(DailyQuotaSpent);
    await vi.advanceTimersByTimeAsync(1000);
    expect(bs.map((t) => t.outcome)).toEqual(bs.map(() => 'resolved'));
    // The client's day spent (no report naming the tenant): every account's waiters, and new calls, refused at once.
    const waitingB = rec.many(10, 'b', b);
    await vi.advanceTimersByTimeAsync(250);
    b.exhaustDay(undefined);
    const spentAt = Date.now();
    await vi.advanceTimersByTimeAsync(1);
    const refused = waitingB.filter((t) => t.outcome instanceof DailyQuotaSpent);
    expect(refused.length).toBe(7);
    for (const t of refused) expect(t.at).toBe(spentAt);
    const after = [rec.request('b', b), rec.request('c', c)];
    await vi.advanceTimersByTimeAsync(1);
    for (const t of after) {
      expect(t.outcome).toBeInstanceOf(DailyQuotaSpent);
      expect((t.outcome as DailyQuotaSpent).resetsAt).toBe(Date.UTC(2026, 11, 1));
    }
  });

  it('depth() counts each account’s waiters; a stopped account refuses its own and leaves the others', async () => {
    const client = sharedClient();
    const { a, b } = pacers(client, { a: {}, b: {} }) as { a: FairSharePacer; b: FairSharePacer };
    const rec = new Recorder();
    const as = rec.many(5, 'a', a);
    rec.many(2, 'b', b);
    expect([a.depth(), b.depth(), client.depth()]).toEqual([5, 2, 7]);
    await vi.advanceTimersByTimeAsync(250);
    // a, b, a left: 0, 100, 200 ms.
    expect([a.depth(), b.depth(), client.depth()]).toEqual([3, 1, 4]);
    expect(a.mode()).toBe('local');
    await a.stop();
    expect(as.slice(2).map((t) => t.outcome instanceof QueueFull)).toEqual([true, true, true]);
    expect([a.depth(), b.depth()]).toEqual([0, 1]);
    await vi.advanceTimersByTimeAsync(100);
    expect(b.depth()).toBe(0);
    // The id can be given a new pacer.
    const a2 = client.pacerFor('a');
    const t = rec.request('a', a2);
    await vi.advanceTimersByTimeAsync(100);
    expect(t.outcome).toBe('resolved');
  });

  it('pacing off (perSecond 0) gives every account a NoPacer; weights must be positive', () => {
    const off = new SharedClient({ ...LIMITS, perSecond: 0 }, createLogger('silent'));
    clients.push(off);
    expect(off.pacerFor('a').enabled).toBe(false);
    const client = new SharedClient(LIMITS, createLogger('silent'));
    clients.push(client);
    expect(() => client.pacerFor('a', { weight: 0 })).toThrow(/weight/);
    client.pacerFor('b');
    expect(() => client.pacerFor('b')).toThrow(/already/);
  });
});

describe('fair share under random arrivals (fast-check)', () => {
  it('the total never exceeds the shared limit, nothing is lost, and no backlogged account waits past its SFQ bound', async () => {
    const arrival = fc.record({
      account: fc.integer({ min: 0, max: 3 }),
      at: fc.integer({ min: 0, max: 4000 }),
      count: fc.integer({ min: 1, max: 15 }),
      priority: fc.constantFrom<Priority>('new', 'new', 'replay'),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 4, maxLength: 4 }),
        fc.array(arrival, { minLength: 1, maxLength: 25 }),
        async (weights, arrivals) => {
          const client = sharedClient();
          try {
            const ps = weights.map((w, i) => client.pacerFor(String(i), { weight: w }));
            const rec = new Recorder();
            const sorted = [...arrivals].sort((x, y) => x.at - y.at);
            for (const x of sorted) {
              await vi.advanceTimersByTimeAsync(START + x.at - Date.now());
              rec.many(x.count, String(x.account), ps[x.account] as Pacer, { priority: x.priority });
            }
            const total = arrivals.reduce((n, x) => n + x.count, 0);
            await vi.advanceTimersByTimeAsync(total * SPACING + 1000);
            // Every call departed, never two closer than one spacing.
            expect(rec.departures.length).toBe(total);
            for (const gap of rec.gaps()) expect(gap).toBeGreaterThanOrEqual(SPACING);
            // Work conserving: while anyone waits, a departure every spacing.
            for (let i = 1; i < rec.departures.length; i++) {
              const d = rec.departures[i] as Tracked;
              const prev = rec.departures[i - 1] as Tracked;
              const waitingSince = Math.max(prev.at as number, d.arrived);
              expect((d.at as number) - waitingSince).toBeLessThanOrEqual(SPACING);
            }
            // No starvation: between two turns of a backlogged account i, each other account j
            // gets at most floor(w_j / w_i) + 1 (start-time fair queueing's bound).
            for (const [i, wi] of weights.entries()) {
              const others = weights.reduce((n, wj, j) => (j === i ? n : n + Math.floor(wj / wi) + 1), 0);
              const mine = rec.of(String(i));
              for (const [k, d] of mine.entries()) {
                const since = Math.max(k === 0 ? -Infinity : (mine[k - 1]?.at as number), d.arrived);
                expect((d.at as number) - since).toBeLessThanOrEqual((others + 1) * SPACING);
              }
            }
          } finally {
            clients.splice(clients.indexOf(client), 1);
            await client.stop();
            vi.useRealTimers();
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});

function report(r: Partial<QuotaReport>): QuotaReport {
  return { product: {}, tenant: {}, ...r };
}
