// `npm run build && node dist/bench/fair-share.js`: does a trickle keep its turn beside a
// flood when two accounts share one OAuth client's budget (issue 12, point 4;
// src/pacing/fair-share.ts)? The real SharedClient on real time, in this one process:
//
// - flood: one account keeps FLOOD waiters queued (each one that departs is replaced at once);
// - trickle: another account sends one call every TRICKLE_MS;
// - both share RATE/s (Keap's spike limit) at RATE_LIMIT_MARGIN MARGIN, for SECONDS s.
//
// Figures: the trickle's queue wait (acquire to departure) p50 / p99 / max, the flood's and
// the total rate achieved against the rate allowed, the smallest gap between two departures.
// Verdict: PASS when the trickle's p99 wait is at most one spacing (1 / (RATE x MARGIN)) plus
// SLACK_MS for timer lateness. Exit status 1 only when the run broke (a refusal, an error);
// a missed target is reported as FAIL, as bench/run.ts does.
//
// Settings (environment): BENCH_FAIR_RATE (default 25), BENCH_FAIR_MARGIN (0.9, the default
// RATE_LIMIT_MARGIN), BENCH_FAIR_SECONDS (10), BENCH_FAIR_FLOOD (100), BENCH_FAIR_TRICKLE_MS (300),
// BENCH_FAIR_SLACK_MS (20).
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../src/observability/log.js';
import { SharedClient } from '../src/pacing/fair-share.js';
import type { PaceLimits } from '../src/pacing/gate.js';

const env = process.env;
const RATE = Number(env.BENCH_FAIR_RATE ?? 25);
const MARGIN = Number(env.BENCH_FAIR_MARGIN ?? 0.9);
const SECONDS = Number(env.BENCH_FAIR_SECONDS ?? 10);
const FLOOD = Number(env.BENCH_FAIR_FLOOD ?? 100);
const TRICKLE_MS = Number(env.BENCH_FAIR_TRICKLE_MS ?? 300);
const SLACK_MS = Number(env.BENCH_FAIR_SLACK_MS ?? 20);

const limits: PaceLimits = {
  perSecond: RATE,
  perMinute: 1_000_000,
  perDay: 1_000_000_000,
  tenantPerMinute: 1_000_000,
  tenantPerDay: 1_000_000_000,
  margin: MARGIN,
  queueLimit: 10_000,
};
const spacing = 1000 / (RATE * MARGIN);
const client = new SharedClient(limits, createLogger('warn'));
const flood = client.pacerFor('flood');
const trickle = client.pacerFor('trickle');

const errors: string[] = [];
const floodDepartures: number[] = [];
const allDepartures: number[] = [];
const trickleWaits: number[] = [];
let running = true;

async function floodWaiter(): Promise<void> {
  while (running) {
    try {
      await flood.acquire(Date.now() + 60_000, 'new');
    } catch (err) {
      if (running) errors.push(`flood: ${String(err)}`);
      return;
    }
    const t = performance.now();
    floodDepartures.push(t);
    allDepartures.push(t);
  }
}

function trickleCall(): Promise<void> {
  const asked = performance.now();
  return trickle.acquire(Date.now() + 60_000, 'new').then(
    () => {
      const t = performance.now();
      trickleWaits.push(t - asked);
      allDepartures.push(t);
    },
    (err: unknown) => void errors.push(`trickle: ${String(err)}`),
  );
}

const started = performance.now();
const waiters = Array.from({ length: FLOOD }, () => floodWaiter());
const trickles: Promise<void>[] = [];
// The trickle starts once the flood's backlog is there.
await sleep(TRICKLE_MS);
while (performance.now() - started < SECONDS * 1000) {
  trickles.push(trickleCall());
  await sleep(TRICKLE_MS);
}
await Promise.all(trickles);
const ended = performance.now();
running = false;
await client.stop();
await Promise.all(waiters);

const seconds = (ended - started) / 1000;
const sorted = [...trickleWaits].sort((x, y) => x - y);
const quantile = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
const inRun = allDepartures.filter((t) => t <= ended).sort((x, y) => x - y);
const gaps = inRun.slice(1).map((t, i) => t - (inRun[i] as number));
const floodRate = floodDepartures.filter((t) => t <= ended).length / seconds;
const totalRate = inRun.length / seconds;
const target = spacing + SLACK_MS;
const p99 = quantile(0.99);
const met = p99 <= target;

const ms = (n: number): string => `${n.toFixed(1)} ms`;
console.log(
  [
    `fair share of one client: ${RATE}/s x margin ${MARGIN} (spacing ${ms(spacing)}), ${SECONDS} s, flood ${FLOOD} waiters, trickle 1 per ${TRICKLE_MS} ms`,
    `  trickle queue wait (${sorted.length} calls)  p50 ${ms(quantile(0.5))}  p99 ${ms(p99)}  max ${ms(sorted.at(-1) ?? NaN)}`,
    `  flood achieved          ${floodRate.toFixed(2)}/s`,
    `  total achieved          ${totalRate.toFixed(2)}/s of ${(RATE * MARGIN).toFixed(2)}/s allowed; smallest gap ${ms(Math.min(...gaps))} (Keap's interval ${ms(1000 / RATE)})`,
    `  trickle p99 wait <= 1 spacing + ${SLACK_MS} ms (${ms(target)})  ${met ? 'PASS' : 'FAIL'}`,
  ].join('\n'),
);
if (errors.length > 0 || sorted.length === 0) {
  console.log(`\nFAILED: the run broke:\n  ${errors.slice(0, 10).join('\n  ')}`);
  process.exitCode = 1;
}
