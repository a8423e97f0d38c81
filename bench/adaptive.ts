// The adaptive scenario (BENCH_SCENARIOS=adaptive): keap-proxy configured for Keap's 25/s
// (RATE_LIMIT_PER_SECOND 25, margin 0.9: 22.5/s) in front of a simulator whose spike arrest
// allows only 10/s, as a key's limit or other apps on the same client would leave it. The
// pacer has to find Keap's real limit from its 429s (src/pacing/adaptive-pace.ts): what it
// achieves ÷ 10 is the figure, with the 429s Keap had to answer. Two parts, each with a fresh
// simulator and keap-proxy: a burst of 60 concurrent requests (one each; the time until the
// last is answered), and a steady run of 60 connections for 10 s (each sending its next request
// as soon as the last is answered; the first second, the adaptation, left out of the rate).
// Settings: BENCH_ADAPTIVE_KEAP (the simulator's limit, default 10), BENCH_ADAPTIVE_LIMIT
// (RATE_LIMIT_PER_SECOND, default 25), BENCH_ADAPTIVE_CALLS (default 60), BENCH_ADAPTIVE_SECONDS
// (default 10). Target: achieved ÷ Keap's limit >= 0.9 with at most 5 429s in each part.
import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import { startSimulator } from './processes.js';
import { keapProxyConfig, startKeapProxy } from './scenarios.js';

export const ADAPTIVE = 'adaptive';
const REQUEST_PATH = '/crm/rest/v1/contacts';
const TARGET = { ratio: 0.9, max429: 5 };
const STEADY_AFTER_MS = 1000;

export interface AdaptiveSettings {
  keapPerSecond: number;
  limitPerSecond: number;
  calls: number;
  seconds: number;
}

export function readAdaptiveSettings(env: NodeJS.ProcessEnv = process.env): AdaptiveSettings {
  const num = (name: string, fallback: number): number => {
    const v = env[name];
    return v === undefined || v === '' ? fallback : Number(v);
  };
  return {
    keapPerSecond: num('BENCH_ADAPTIVE_KEAP', 10),
    limitPerSecond: num('BENCH_ADAPTIVE_LIMIT', 25),
    calls: num('BENCH_ADAPTIVE_CALLS', 60),
    seconds: num('BENCH_ADAPTIVE_SECONDS', 10),
  };
}

interface Part {
  /** Requests answered 200, and those answered otherwise (status: count). */
  ok: number;
  other: Record<string, number>;
  /** The simulator's 429s (absorbed by keap-proxy). */
  upstream429: number;
  achievedPerSecond: number;
  ratio: number;
  seconds: number;
}

export interface AdaptiveSummary {
  settings: AdaptiveSettings;
  burst: Part;
  steady: Part;
}

function get(agent: http.Agent, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function withSetUp<T>(
  s: AdaptiveSettings,
  dir: string,
  name: string,
  run: (url: string, upstream429: () => Promise<number>) => Promise<T>,
): Promise<{ result: T; throttled: number }> {
  const sim = await startSimulator({ ratePerSecond: s.keapPerSecond });
  try {
    const ctx = { sim, dir: mkdtempSync(path.join(dir, `${name}-`)) };
    const proxy = await startKeapProxy(keapProxyConfig(ctx, s.limitPerSecond), path.join(ctx.dir, `${name}.log`));
    let result: T;
    try {
      result = await run(proxy.url + REQUEST_PATH, async () => (await sim.counters()).throttled);
    } finally {
      await proxy.close();
    }
    return { result, throttled: (await sim.counters()).throttled };
  } finally {
    await sim.close();
  }
}

function part(s: AdaptiveSettings, statuses: number[], upstream429: number, perSecond: number, seconds: number): Part {
  const other: Record<string, number> = {};
  for (const st of statuses) if (st !== 200) other[st] = (other[st] ?? 0) + 1;
  return {
    ok: statuses.filter((st) => st === 200).length,
    other,
    upstream429,
    achievedPerSecond: perSecond,
    ratio: perSecond / s.keapPerSecond,
    seconds,
  };
}

export async function runAdaptive(s: AdaptiveSettings, dir: string): Promise<AdaptiveSummary> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  try {
    // The burst: every request at once; the rate is the requests over the time to the last answer.
    const burst = await withSetUp(s, dir, 'adaptive-burst', async (url) => {
      await get(agent, url.replace(REQUEST_PATH, '/readyz')).catch(() => 0);
      const start = performance.now();
      const statuses = await Promise.all(Array.from({ length: s.calls }, () => get(agent, url)));
      return { statuses, ms: performance.now() - start };
    });
    const b = burst.result;
    // The steady run: each connection sends its next request when the last is answered.
    const steady = await withSetUp(s, dir, 'adaptive-steady', async (url, upstream429) => {
      const statuses: number[] = [];
      const done: number[] = [];
      const start = performance.now();
      const end = start + s.seconds * 1000;
      // The 429s of the timed seconds, not of the requests still queued when they end.
      const timed429 = new Promise<number>((resolve) => {
        setTimeout(() => void upstream429().then(resolve, () => resolve(NaN)), s.seconds * 1000);
      });
      await Promise.all(
        Array.from({ length: s.calls }, async () => {
          while (performance.now() < end) {
            const st = await get(agent, url);
            statuses.push(st);
            if (st === 200) done.push(performance.now() - start);
          }
        }),
      );
      const counted = done.filter((t) => t >= STEADY_AFTER_MS && t <= s.seconds * 1000).length;
      return {
        statuses,
        perSecond: (counted * 1000) / (s.seconds * 1000 - STEADY_AFTER_MS),
        upstream429: await timed429,
      };
    });
    return {
      settings: s,
      burst: part(s, b.statuses, burst.throttled, (s.calls * 1000) / b.ms, b.ms / 1000),
      steady: part(s, steady.result.statuses, steady.result.upstream429, steady.result.perSecond, s.seconds),
    };
  } finally {
    agent.destroy();
  }
}

function verdict(p: Part): string {
  return p.ratio >= TARGET.ratio && p.upstream429 <= TARGET.max429 ? 'PASS' : 'FAIL';
}

export function formatAdaptive(a: AdaptiveSummary): string {
  const s = a.settings;
  const line = (name: string, p: Part, how: string): string =>
    `  ${name.padEnd(7)} ${how.padEnd(38)} ${p.achievedPerSecond.toFixed(2).padStart(6)}/s  ${p.ratio.toFixed(2)} of ${s.keapPerSecond}/s  ` +
    `${String(p.upstream429).padStart(2)} 429s absorbed  ${p.ok} x 200${Object.keys(p.other).length > 0 ? ` ${JSON.stringify(p.other)}` : ''}  ${verdict(p)}`;
  return [
    `adaptive: keap-proxy at RATE_LIMIT_PER_SECOND ${s.limitPerSecond} (x margin), simulator allowing ${s.keapPerSecond}/s (target >= ${TARGET.ratio} of it, <= ${TARGET.max429} 429s)`,
    line('burst', a.burst, `${s.calls} concurrent, answered in ${a.burst.seconds.toFixed(2)} s`),
    line('steady', a.steady, `${s.calls} connections, ${s.seconds} s (rate after 1 s)`),
  ].join('\n');
}

/** Answers other than 200 make the figures meaningless. */
export function adaptiveFailures(a: AdaptiveSummary): string[] {
  return (['burst', 'steady'] as const)
    .filter((k) => Object.keys(a[k].other).length > 0)
    .map((k) => `adaptive ${k}: answers other than 200: ${JSON.stringify(a[k].other)}`);
}
