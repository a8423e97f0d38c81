import { describe, it, expect, afterEach, vi } from 'vitest';
import { QuotaPacer, type PaceLimits } from '../src/pacing/pacer.js';
import { createLogger } from '../src/observability/log.js';
import { SpikeArrest } from './simulator/quota.js';
import { harnessPerTest, LogCapture, send } from './harness.js';
import { sample } from './prometheus.js';
import { AdaptivePace } from '../src/pacing/adaptive-pace.js';

const LIMITS: PaceLimits = {
  perSecond: 25,
  perMinute: 100_000,
  perDay: 1_000_000,
  tenantPerMinute: 100_000,
  tenantPerDay: 1_000_000,
  margin: 0.9,
  queueLimit: 1000,
};
/** Keap's answer reaches the proxy this long after the call left. */
const TRIP_MS = 5;

afterEach(() => {
  vi.useRealTimers();
});
const harness = harnessPerTest(afterEach);

/**
 * `calls` requests at once through a pacer to a Keap whose spike arrest allows `keap()` per
 * second (a sliding second, as the simulator's): each 429 is told to the pacer, and the call
 * goes again as a replay. Answers when each call was accepted, and the 429s.
 */
async function burst(
  pacer: QuotaPacer,
  keap: () => SpikeArrest,
  calls: number,
): Promise<{ accepted: number[]; refused: number[] }> {
  const accepted: number[] = [];
  const refused: number[] = [];
  const one = async (): Promise<void> => {
    let priority: 'new' | 'replay' = 'new';
    for (;;) {
      await pacer.acquire(Date.now() + 120_000, priority);
      const left = Date.now();
      const ok = keap().allow(left);
      await new Promise((r) => setTimeout(r, TRIP_MS));
      if (ok) return void accepted.push(left);
      refused.push(left);
      pacer.spikeArrested(undefined, 1000);
      priority = 'replay';
    }
  };
  const all = Promise.all(Array.from({ length: calls }, one));
  while (accepted.length < calls) await vi.advanceTimersByTimeAsync(5);
  await all;
  return { accepted, refused };
}

function maxInAnySecond(times: number[]): number {
  let max = 0;
  for (let i = 0; i < times.length; i++) {
    let n = 0;
    for (let j = i; j < times.length && (times[j] as number) < (times[i] as number) + 1000; j++) n++;
    max = Math.max(max, n);
  }
  return max;
}

describe('adaptive pace after Keap spike arrests', () => {
  it('configured 25/s against a Keap allowing 10/s: 60 calls settle between 9 and 10/s with few 429s', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 30, 12) });
    const pacer = new QuotaPacer(LIMITS, createLogger('silent'));
    const keap = new SpikeArrest(10);
    try {
      const { accepted, refused } = await burst(pacer, () => keap, 60);
      expect(accepted).toHaveLength(60);
      expect(refused.length).toBeLessThanOrEqual(5);
      const steady = accepted.filter((t) => t >= (accepted[0] as number) + 1000);
      const rate = ((steady.length - 1) * 1000) / ((steady.at(-1) as number) - (steady[0] as number));
      expect(rate).toBeGreaterThanOrEqual(9);
      // (Keap's 10/s, to within the measurement's edge: n - 1 intervals between the first and last call counted.)
      expect(rate).toBeLessThanOrEqual(10.1);
      expect(pacer.pacePerSecond()).toBeLessThan(25 * 0.9);
    } finally {
      await pacer.stop();
    }
  });

  it('a longer run against 10/s keeps near 10/s; after the limit is lifted the pace climbs back to the configured one, never above', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 30, 12) });
    const pacer = new QuotaPacer(LIMITS, createLogger('silent'));
    let keap = new SpikeArrest(10);
    try {
      const first = await burst(pacer, () => keap, 200);
      const steady = first.accepted.filter((t) => t >= (first.accepted[0] as number) + 1000);
      const rate = ((steady.length - 1) * 1000) / ((steady.at(-1) as number) - (steady[0] as number));
      expect(rate).toBeGreaterThanOrEqual(9);
      expect(rate).toBeLessThanOrEqual(10.1);
      // About one 429 each few seconds while probing for more, beside the start's.
      expect(first.refused.length).toBeLessThanOrEqual(6);
      keap = new SpikeArrest(1000);
      const paces: number[] = [];
      for (let s = 0; s < 60; s++) {
        const second = await burst(pacer, () => keap, 22);
        paces.push(pacer.pacePerSecond() as number);
        expect(second.refused).toHaveLength(0);
        // The ceiling: never more than the configured 25/s x margin in any second.
        expect(maxInAnySecond(second.accepted)).toBeLessThanOrEqual(23);
      }
      for (const p of paces) expect(p).toBeLessThanOrEqual(25 * 0.9);
      // Climbing: slowly at first (probing above the pace Keap last refused), back to the ceiling within about 30 s.
      expect(paces[0]).toBeLessThan(12);
      expect(paces.findIndex((p) => p === 25 * 0.9)).toBeLessThan(30);
      expect(paces.at(-1)).toBe(25 * 0.9);
    } finally {
      await pacer.stop();
    }
  });
});

describe('adaptive pace: lowering and its log', () => {
  it('a spike arrest lowers the pace to what Keap accepted (or x0.75), once per overflow, logged at info at most every 10 s', () => {
    const capture = new LogCapture();
    const pace = new AdaptivePace(22.5, createLogger('info', capture), 0);
    for (let t = 0; t < 10 * 40; t += 40) pace.departed(t);
    // Keap accepted 10 in its second, refused the 11th: the pace comes down to 10 at once.
    pace.departed(400);
    expect(pace.spikeArrested(400)).toBe(true);
    expect(pace.perSecond(400)).toBe(10);
    // The calls already sent meet the same full second: no further lowering.
    expect(pace.spikeArrested(450)).toBe(false);
    expect(pace.perSecond(450)).toBeCloseTo(10, 0);
    // Not before the window frees: the 10 newest of the sliding second leave room only at the 2nd + 1020 ms.
    expect(pace.windowFreesAt(450)).toBe(40 + 1020);
    // A later overflow with Keap accepting as many as the pace: x0.75.
    const p2 = pace.perSecond(2000);
    for (let i = 0; i <= Math.ceil(p2); i++) pace.departed(1000 + i * 75);
    expect(pace.spikeArrested(2000)).toBe(true);
    expect(pace.perSecond(2000)).toBeCloseTo(p2 * 0.75, 5);
    const lines = capture.entries.filter((e) => e.event === 'pace_lowered');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'info', pacePerSecond: 10, acceptedLastSecond: 10, lowerings: 1 });
    // Ten seconds on, the next lowering is logged with the count of those it stands for.
    pace.spikeArrested(12_000);
    expect(capture.entries.filter((e) => e.event === 'pace_lowered').at(-1)).toMatchObject({ lowerings: 2 });
  });
});

describe('adaptive pace through the proxy', () => {
  it('RATE_LIMIT_PER_SECOND 25 against a simulator allowing 10/s: 60 concurrent requests all 200, few 429s absorbed, the pace in /metrics', async () => {
    const h = await harness({ mode: 'key', env: { RATE_LIMIT_PER_SECOND: '25' }, sim: { ratePerSecond: 10 } });
    const replies = await Promise.all(
      Array.from({ length: 60 }, () => send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')),
    );
    expect(replies.map((r) => r.status)).toEqual(Array.from({ length: 60 }, () => 200));
    expect(h.sim.counters.apiCalls).toBe(60 + h.sim.counters.throttled);
    expect(h.sim.counters.throttled).toBeGreaterThanOrEqual(1);
    expect(h.sim.counters.throttled).toBeLessThanOrEqual(5);
    const text = (await send(h.proxy.url, 'GET', '/metrics')).body.toString('utf8');
    const pace = sample(text, 'keap_proxy_pace_per_second', { account: 'default' });
    expect(pace).toBeGreaterThanOrEqual(9);
    expect(pace).toBeLessThan(25 * 0.9);
    expect(sample(text, 'keap_proxy_rate_limited_total', { account: 'default', outcome: 'absorbed' })).toBe(
      h.sim.counters.throttled,
    );
  }, 20_000);
});

describe('the ceiling Keap reports', () => {
  it("a pace at the ceiling follows a new one; a pace Keap's 429s brought lower stays under it", () => {
    const pace = new AdaptivePace(22.5, createLogger('info', new LogCapture()), 0);
    pace.setCeiling(45, 0);
    expect([pace.ceiling, pace.perSecond(0)]).toEqual([45, 45]);
    for (let t = 0; t < 20; t++) pace.departed(t);
    expect(pace.spikeArrested(20)).toBe(true);
    const lowered = pace.perSecond(20);
    expect(lowered).toBeLessThan(45);
    pace.setCeiling(90, 20);
    expect(pace.perSecond(20)).toBe(lowered);
    pace.setCeiling(5, 20);
    expect([pace.ceiling, pace.perSecond(20)]).toEqual([5, 5]);
  });
});
