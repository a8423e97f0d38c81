// Global pacing: three QuotaPacers (three replicas) share one budget through a real
// redis-server of the test's own. The tests count departures and refusals; none measures
// how fast the machine is. Each test names its own budget (a fresh key), so none sees another's.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { randomUUID } from 'node:crypto';
import { startRedisServer, type RedisServer } from './redis-server.js';
import { LogCapture } from './harness.js';
import { createLogger } from '../src/observability/log.js';
import { QuotaPacer, type Pacer } from '../src/pacing/pacer.js';
import { RedisGate, pacingRedisOptions, type RedisGateOptions } from '../src/pacing/redis-gate.js';
import { createSharedPacer } from '../src/pacing/shared-pacer.js';
import { DailyQuotaSpent, DeadlineExceeded, PacingError } from '../src/pacing/pacing-errors.js';
import { DAY, type Booking, type PaceLimits } from '../src/pacing/gate.js';
import type { QuotaReport } from '../src/keap/keap-quota.js';

/** A RedisGate that notes each departure as Redis booked it (Redis's clock). */
class RecordingGate extends RedisGate {
  booked: number[] = [];
  override async book(now: number): Promise<Booking> {
    const b = await super.book(now);
    if (b.kind === 'go') this.booked.push(b.at);
    return b;
  }
}

interface Replica {
  pacer: QuotaPacer;
  gate: RecordingGate;
  logs: LogCapture;
}

const LIMITS: PaceLimits = {
  perSecond: 50,
  perMinute: 100_000,
  perDay: 1_000_000,
  tenantPerMinute: 100_000,
  tenantPerDay: 1_000_000,
  margin: 1,
  queueLimit: 1000,
};

let redis: RedisServer;
const pacers: Pacer[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
});

afterAll(async () => {
  await redis.stop();
});

afterEach(async () => {
  await Promise.all(pacers.splice(0).map((p) => p.stop()));
});

/** Three replicas of one Keap client and tenant, each with its own Redis connection. */
function replicas(
  limits: Partial<PaceLimits>,
  options: Partial<RedisGateOptions> = {},
  server: RedisServer = redis,
  now?: () => number,
): Replica[] {
  const key = randomUUID();
  const all = { ...LIMITS, ...limits };
  const booked: number[] = [];
  return Array.from({ length: 3 }, () => {
    const logs = new LogCapture();
    const logger = createLogger('info', logs);
    const client = server.client({ ...pacingRedisOptions(), retryStrategy: () => 50 });
    const gate = new RecordingGate(
      all,
      logger,
      { redis: client, prefix: 'test:', key, replicas: 3, probeMs: 50, ...options },
      now,
    );
    gate.booked = booked;
    const pacer = new QuotaPacer(all, logger, now, gate);
    pacers.push(pacer);
    return { pacer, gate, logs };
  });
}

type Outcome = 'go' | PacingError;

/** `n` calls on each replica at once, each willing to wait `waitMs`: what each got. */
async function burst(rs: Replica[], n: number, waitMs: number): Promise<Outcome[]> {
  return Promise.all(
    rs.flatMap((r) =>
      Array.from({ length: n }, () =>
        r.pacer.acquire(Date.now() + waitMs, 'new').then(
          (): Outcome => 'go',
          (err: unknown): Outcome => {
            if (err instanceof PacingError) return err;
            throw err;
          },
        ),
      ),
    ),
  );
}

const gone = (o: Outcome[]): number => o.filter((x) => x === 'go').length;
const refused = (o: Outcome[], type: new (...args: never[]) => PacingError): number =>
  o.filter((x) => x instanceof type).length;
const events = (r: Replica, event: string): Record<string, unknown>[] =>
  r.logs.entries.filter((e) => e.event === event);

function minuteReport(limit: number, used: number): QuotaReport {
  return { product: { minute: { limit, used, unit: 'minute' } }, tenant: {} };
}

async function until(condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('pacing shared through Redis', () => {
  it('three replicas depart at most the global rate together, and the minute cap holds across them', async () => {
    // 50/s with a margin of 0.9: one departure per 22.2 ms, never two closer than Keap's 20 ms; 21 a minute.
    const rs = replicas({ perSecond: 50, perMinute: 24, margin: 0.9 });
    const outcomes = await burst(rs, 10, 5000);
    expect(gone(outcomes)).toBe(21);
    // The other 9 cannot leave before a minute has passed: refused at once, past their deadline.
    expect(refused(outcomes, DeadlineExceeded)).toBe(9);
    const booked = (rs[0] as Replica).gate.booked.sort((a, b) => a - b);
    expect(booked).toHaveLength(21);
    const gaps = booked.slice(1).map((t, i) => t - (booked[i] as number));
    // %.3f in Redis: a thousandth of a millisecond either way.
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(1000 / 50 - 0.002);
    // None fell back: one budget, in Redis.
    for (const r of rs) expect(r.gate.mode()).toBe('shared');
  });

  it('a 429 one replica saw pauses all of them', async () => {
    const rs = replicas({});
    const [a, b, c] = rs as [Replica, Replica, Replica];
    await a.pacer.acquire(Date.now() + 1000, 'new');
    a.pacer.backOff(10_000);
    await a.gate.idle();
    for (const r of [b, c]) {
      const err = await r.pacer.acquire(Date.now() + 500, 'new').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DeadlineExceeded);
      expect((err as DeadlineExceeded).retryAfterSeconds).toBeGreaterThanOrEqual(9);
    }
    expect(a.gate.booked).toHaveLength(1);
  });

  it("Keap's report seen by one replica lowers the budget of all: a lower limit", async () => {
    const rs = replicas({ perMinute: 1000 });
    const [a, b, c] = rs as [Replica, Replica, Replica];
    a.pacer.observe(minuteReport(5, 0));
    await a.gate.idle();
    const outcomes = await burst([b, c], 5, 2000);
    expect(gone(outcomes)).toBe(5);
    expect(refused(outcomes, DeadlineExceeded)).toBe(5);
    expect(events(a, 'keap_quota_reported')).toEqual([
      expect.objectContaining({ keapMinuteLimit: 5, minuteBudget: 5, othersThisMinute: 0 }),
    ]);
  });

  it("Keap's report seen by one replica raises the budget of all above a default limit, not above a set one", async () => {
    const defaults = { perSecond: false, perMinute: false, perDay: false, tenantPerMinute: false, tenantPerDay: false };
    const left = replicas({ perMinute: 5, explicit: defaults });
    const [a, b, c] = left as [Replica, Replica, Replica];
    a.pacer.observe(minuteReport(8, 0));
    await a.gate.idle();
    const outcomes = await burst([b, c], 5, 2000);
    expect(gone(outcomes)).toBe(8);
    expect(refused(outcomes, DeadlineExceeded)).toBe(2);

    const set = replicas({ perMinute: 5, explicit: { ...defaults, perMinute: true } });
    const [d, e, f] = set as [Replica, Replica, Replica];
    d.pacer.observe(minuteReport(8, 0));
    await d.gate.idle();
    expect(gone(await burst([e, f], 5, 2000))).toBe(5);
  });

  it("Keap's report seen by one replica lowers the budget of all: other apps' calls", async () => {
    const rs = replicas({ perMinute: 1000 });
    const [a, b, c] = rs as [Replica, Replica, Replica];
    // Two calls of ours, then Keap counts 992 in its window: 990 were other apps'.
    await burst([a], 2, 2000);
    a.pacer.observe(minuteReport(1000, 992));
    await a.gate.idle();
    const outcomes = await burst([b, c], 10, 2000);
    // 1000 - 990 others - 2 ours = 8 left.
    expect(gone(outcomes)).toBe(8);
    expect(events(a, 'keap_quota_reported')).toEqual([
      expect.objectContaining({ minuteBudget: 10, othersThisMinute: 990 }),
    ]);
  });

  it('the daily cap holds across them, and a spent day reported by one stops all until 00:00 UTC', async () => {
    const rs = replicas({ perDay: 7 });
    const outcomes = await burst(rs, 4, 2000);
    expect(gone(outcomes)).toBe(7);
    expect(refused(outcomes, DailyQuotaSpent)).toBe(5);
    const midnight = new Date((Math.floor(Date.now() / DAY) + 1) * DAY).toISOString();
    const spent = outcomes.find((o) => o instanceof DailyQuotaSpent);
    expect(spent?.message).toContain(`it resets at ${midnight}`);

    const [a, b, c] = replicas({}) as [Replica, Replica, Replica];
    a.pacer.exhaustDay(undefined);
    await a.gate.idle();
    expect(events(a, 'daily_quota_spent')).toEqual([expect.objectContaining({ resetsAt: midnight })]);
    for (const r of [b, c])
      await expect(r.pacer.acquire(Date.now() + 1000, 'new')).rejects.toBeInstanceOf(DailyQuotaSpent);
    // Known at once afterwards: no round trip, no turn in the queue.
    await expect(b.pacer.acquire(Date.now() + 1000, 'new')).rejects.toBeInstanceOf(DailyQuotaSpent);
  });

  it("the shared day resets at 00:00 UTC (on a clock the test moves, booked by the callers' clock)", async () => {
    const start = Date.UTC(2026, 10, 23, 23, 55);
    const realStart = Date.now();
    let jumped = 0;
    const now = (): number => start + (Date.now() - realStart) + jumped;
    const rs = replicas({ perDay: 2 }, { clock: 'caller' }, redis, now);
    const [a, b, c] = rs as [Replica, Replica, Replica];
    await a.pacer.acquire(now() + 5000, 'new');
    await b.pacer.acquire(now() + 5000, 'new');
    const spent = await c.pacer.acquire(now() + 5000, 'new').catch((e: unknown) => e);
    expect(spent).toBeInstanceOf(DailyQuotaSpent);
    expect((spent as DailyQuotaSpent).message).toContain('it resets at 2026-11-24T00:00:00.000Z');
    expect((spent as DailyQuotaSpent).retryAfterSeconds).toBeLessThanOrEqual(300);
    jumped = Date.UTC(2026, 10, 24) + 50 - now();
    await expect(c.pacer.acquire(now() + 5000, 'new')).resolves.toBeUndefined();
    await expect(a.pacer.acquire(now() + 5000, 'new')).resolves.toBeUndefined();
  });

  it('keys deleted mid-run: bookings go on, from a fresh budget', async () => {
    const rs = replicas({});
    expect(gone(await burst(rs, 3, 2000))).toBe(9);
    const admin = redis.client({ enableOfflineQueue: true });
    const keys = await admin.keys('test:pace:*');
    expect(keys.length).toBeGreaterThan(0);
    await admin.del(...keys);
    expect(gone(await burst(rs, 3, 2000))).toBe(9);
    for (const r of rs) expect(events(r, 'pacing_fallback')).toEqual([]);
  });

  it('Redis killed: each replica keeps to limit ÷ replicas and says so; Redis back: shared again, with what they booked meanwhile', async () => {
    const own = await startRedisServer();
    try {
      // 30 a minute for all three: 10 each while Redis is away.
      const rs = replicas({ perMinute: 30 }, {}, own);
      for (const r of rs) await r.pacer.acquire(Date.now() + 1000, 'new');
      for (const r of rs) expect(r.pacer.mode()).toBe('shared');

      await own.kill();
      const away = await burst(rs, 15, 3000);
      expect(gone(away)).toBe(30);
      for (const r of rs) {
        expect(r.pacer.mode()).toBe('local_share');
        expect(r.gate.spacingMs()).toBeCloseTo(3 * 20);
        expect(events(r, 'pacing_fallback')).toEqual([expect.objectContaining({ level: 'warn', replicas: 3 })]);
      }

      await own.restart();
      await until(() => rs.every((r) => r.pacer.mode() === 'shared'));
      for (const r of rs) {
        expect(events(r, 'pacing_shared')).toEqual([expect.objectContaining({ level: 'info' })]);
        expect(events(r, 'pacing_fallback')).toHaveLength(1);
      }
      // The 30 booked while Redis was away count in the shared minute: none is left.
      const back = await burst(rs, 2, 1000);
      expect(gone(back)).toBe(0);
      expect(refused(back, DeadlineExceeded)).toBe(6);
    } finally {
      await Promise.all(pacers.splice(0).map((p) => p.stop()));
      await own.stop();
    }
  });

  it('a Redis that stops answering is as good as away: the pacer falls back after the command timeout, not later', async () => {
    const [a] = replicas({}) as [Replica];
    await a.pacer.acquire(Date.now() + 1000, 'new');
    // A script that keeps Redis busy for 1.5 s: every other command waits behind it.
    const admin = redis.client({ enableOfflineQueue: true });
    const busy = admin.eval(
      "local t = redis.call('TIME') local start = t[1] * 1000 + t[2] / 1000 local now = start " +
        "while now - start < 1500 do t = redis.call('TIME') now = t[1] * 1000 + t[2] / 1000 end return 1",
      0,
    );
    await new Promise((r) => setTimeout(r, 50));
    // Goes on this replica's share once the 300 ms command timeout has passed, well inside its deadline.
    await a.pacer.acquire(Date.now() + 1200, 'new');
    expect(a.pacer.mode()).toBe('local_share');
    expect(events(a, 'pacing_fallback')).toEqual([expect.objectContaining({ error: 'Command timed out' })]);
    await busy;
    await until(() => a.pacer.mode() === 'shared');
    expect(events(a, 'pacing_shared')).toHaveLength(1);
  });

  it('createSharedPacer: from a URL it makes and closes its own client; with Redis unreachable it starts on its share', async () => {
    const logs = new LogCapture();
    const logger = createLogger('info', logs);
    const key = randomUUID();
    const shared = createSharedPacer(LIMITS, logger, {
      redis: `redis://${redis.host}:${redis.port}`,
      prefix: 'test:',
      key,
      replicas: 2,
    });
    pacers.push(shared);
    await shared.acquire(Date.now() + 1000, 'new');
    expect(shared.mode()).toBe('shared');
    const admin = redis.client({ enableOfflineQueue: true });
    expect(await admin.zcard(`test:pace:{${key}}:minute`)).toBe(1);

    const closed = await startRedisServer();
    await closed.stop();
    const alone = createSharedPacer(LIMITS, logger, {
      redis: `redis://${closed.host}:${closed.port}`,
      prefix: 'test:',
      key,
      replicas: 2,
    });
    pacers.push(alone);
    await alone.acquire(Date.now() + 1000, 'new');
    expect(alone.mode()).toBe('local_share');
    expect(logs.entries.filter((e) => e.event === 'pacing_fallback')).toHaveLength(1);

    expect(
      createSharedPacer({ ...LIMITS, perSecond: 0 }, logger, {
        redis: 'redis://x',
        prefix: '',
        key,
        replicas: 1,
      }).mode(),
    ).toBe('off');
  });
});
