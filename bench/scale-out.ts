// The scale-out scenario: keap-proxy replicas sharing Keap's quota through one Redis, on a
// redis-server of the bench's own (redis-server.ts), in two parts.
//
// (1) Global limit. Three keap-proxy replicas, each a process of its own on core 0, with one
//     OAuth client, the grant in Redis (TOKEN_STORE=redis://…) and pacing through Redis
//     (REDIS_URL, the Lua gate of src/pacing/redis-gate.ts), RATE_LIMIT_PER_SECOND L each, in
//     front of one simulator that answers 429 above L calls in any second. One load generator
//     deals its connections out among the three (8×L of them by default, so 8× the limit is
//     waiting at any moment and arrives at once at the start), each sending its next request
//     when the last is answered. Judged as the pacing scenario is: the 2xx rate from 1 s on
//     against the allowed L × RATE_LIMIT_MARGIN for all three together, and the simulator's
//     429s, which keap-proxy hides from clients.
//
// (2) The cost of shared pacing. Pacing caps throughput, so with a limit that binds there is
//     nothing to compare: here RATE_LIMIT_PER_SECOND is 100,000 and the minute and day limits,
//     configured and reported (the simulator's quota headers), are 10^9, so neither pacer ever
//     holds a call back. One keap-proxy paces locally, one through Redis (REDIS_URL; its grant
//     stays in a file, so pacing is the only difference); both run side by side on core 0 and
//     are loaded at the same time, as head-to-head runs them, fresh processes each round in
//     alternating order, Redis emptied before each round. What shared pacing adds per request:
//     one Lua call (one round trip) per booking, and one more per quota report read (at most
//     every 100 ms). Bookings are made one at a time per process (the pacer's queue, bottleneck
//     with maxConcurrent 1, which itself passes a few hundred calls a second at most), so what
//     is measured is that queue's rate with and without a Redis round trip in each turn; on
//     this box Redis runs on the helpers' core with the simulator and the load generators.
import { mkdtempSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../src/config/config.js';
import { SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_SEED } from '../test/simulator/keap-simulator.js';
import { startServer, type HeadToHeadFigures, type ServerChild } from './head-to-head.js';
import type { LoadRequest, LoadSample, SteadyRate } from './load.js';
import { runLoadChild, startSimulator, type LoadDone } from './processes.js';
import { startBenchRedis, type BenchRedis } from './redis-server.js';
import { median } from './report.js';
import type { ServerOptions } from './server-process.js';

export const SCALE_OUT = 'scale-out';
const REPLICAS = 3;
/** As the pacing scenario: the first second (the queue filling, the first call leaving at once) is left out. */
const STEADY_AFTER_SECONDS = 1;
/** Near the allowed rate, and never measurably above it. Three replicas wake for one slot: a little lower than one proxy's 0.95. */
export const SCALE_OUT_TARGET = { min: 0.85, max: 1.01 };
/** "At most a few" upstream 429s. */
export const SCALE_OUT_MAX_UPSTREAM_429 = 3;
/** Part (2): limits that never bind (the settings' maximum for the minute and day limits is 10^9). */
const COST_RATE_PER_SECOND = 100_000;
const UNBOUND = 1_000_000_000;

export interface ScaleOutSettings {
  /** Keap's spike limit L in part (1): RATE_LIMIT_PER_SECOND of each replica and the simulator's limit. */
  limitPerSecond: number;
  /** Burst length in part (1). */
  seconds: number;
  /** Part (1)'s connections in all, a multiple of the replicas (each gets a third). */
  connections: number;
  /** Part (2), as head-to-head: rounds, timed and warm-up seconds, connections per server. */
  cost: { rounds: number; seconds: number; warmupSeconds: number; connections: number };
}

export interface ReplicaFigures {
  name: string;
  /** 2xx answers this replica gave during the burst (its /metrics, keap_proxy_requests_total). */
  answered2xx: number;
  /** Other statuses it answered during the burst. */
  answeredOther: Record<string, number>;
  /** The process's RSS in bytes: before the burst, the highest sampled during it, at its end. */
  rss: { before: number; peak: number; after: number };
  /** /readyz's pacing mode after the burst ('shared' = through Redis). */
  modeAfter: string;
  /** pacing_fallback lines in its log: Redis was away for it, and it paced to its share. */
  fallbacks: number;
}

export interface GlobalLimitSummary {
  replicas: number;
  limitPerSecond: number;
  margin: number;
  /** For all replicas together: limitPerSecond × margin. */
  allowedPerSecond: number;
  connections: number;
  connectionsPerReplica: number;
  seconds: number;
  sample: LoadSample;
  steady: SteadyRate;
  /** steady rate ÷ allowed. */
  ratio: number;
  target: { min: number; max: number };
  maxUpstream429: number;
  upstream: { calls: number; throttled: number };
  perReplica: ReplicaFigures[];
  met: boolean;
}

/** The same figures head-to-head reports, for keap-proxy with local or shared pacing. */
export type CostFigures = HeadToHeadFigures;

export interface PacingCostRound {
  local: CostFigures;
  shared: CostFigures & {
    /** redis-server's CPU over the shared proxy's timed part, per request it completed. */
    redisCpuUsPerRequest: number;
    /**
     * PING round trips from the bench's process (core 0, with the proxies) to Redis during the
     * timed part, one every 100 ms: median and 90th percentile, ms. What a booking's round trip
     * waits for on this box, Redis's core being busy with the simulator and the load generators.
     */
    redisPingMs: { p50: number; p90: number; count: number };
    modeAfter: string;
    fallbacks: number;
  };
}

export interface PacingCostSummary {
  ratePerSecond: number;
  connections: number;
  seconds: number;
  warmupSeconds: number;
  rounds: PacingCostRound[];
  /** Median over rounds of shared ÷ local req/s, measured side by side. */
  throughputRatio: number;
  /** Median over rounds of shared ÷ local keap-proxy CPU per request. */
  cpuRatio: number;
}

export interface ScaleOutSummary {
  redisVersion: string;
  globalLimit: GlobalLimitSummary;
  pacingCost: PacingCostSummary;
}

/** Starts the scenario's Redis, runs both parts, and stops Redis whatever happened. */
export async function runScaleOut(
  settings: ScaleOutSettings,
  dir: string,
  requestPath: string,
): Promise<ScaleOutSummary> {
  const redis = await startBenchRedis();
  try {
    const globalLimit = await runGlobalLimit(settings, redis, mkdtempSync(path.join(dir, 'scale-out-')), requestPath);
    logGlobalLimit(globalLimit);
    console.error(
      `${SCALE_OUT}: pacing cost, keap-proxy with local and with shared pacing side by side on core 0, RATE_LIMIT_PER_SECOND ${COST_RATE_PER_SECOND} (not binding), ${settings.cost.rounds} rounds of ${settings.cost.warmupSeconds}s + ${settings.cost.seconds}s`,
    );
    const pacingCost = await runPacingCost(settings, redis, mkdtempSync(path.join(dir, 'pacing-cost-')), requestPath);
    return { redisVersion: await redis.version(), globalLimit, pacingCost };
  } finally {
    await redis.stop();
  }
}

/** Part (1): three replicas, one Redis, one simulator enforcing the spike limit, one burst. */
async function runGlobalLimit(
  settings: ScaleOutSettings,
  redis: BenchRedis,
  dir: string,
  requestPath: string,
): Promise<GlobalLimitSummary> {
  const limit = settings.limitPerSecond;
  const env = {
    TOKEN_STORE: redis.url,
    REDIS_URL: redis.url,
    REPLICAS: String(REPLICAS),
    RATE_LIMIT_PER_SECOND: String(limit),
  };
  const config = benchConfig(dir, env);
  const allowedPerSecond = config.accounts[0]!.pacing.perSecond * config.accounts[0]!.pacing.margin;
  const perReplica = settings.connections / REPLICAS;
  checkLoad(
    settings.connections,
    perReplica,
    allowedPerSecond,
    config.accounts[0]!.pacing.queueLimit,
    config.requestDeadlineMs,
  );
  await redis.flush();
  const sim = await startSimulator({ ratePerSecond: limit });
  const replicas: { name: string; server: ServerChild }[] = [];
  let closed = false;
  const closeReplicas = async (): Promise<void> => {
    closed = true;
    await Promise.all(replicas.map((r) => r.server.close()));
  };
  try {
    const base: ServerOptions = {
      scenario: 'keap-proxy',
      simUrl: sim.url,
      tokenUrl: sim.tokenUrl,
      token: '',
      dir,
      env,
    };
    for (let i = 1; i <= REPLICAS; i++) {
      const name = `replica-${i}`;
      replicas.push({ name, server: await startServer({ ...base, name }) });
    }
    // Each holds the grant (the first to start refreshed the seed, under the lock in Redis) and paces through Redis.
    for (const r of replicas) await waitReady(r.server.url, 'shared');
    const before = await Promise.all(replicas.map((r) => answeredByStatus(r.server.url)));
    const rssBefore = await Promise.all(replicas.map((r) => r.server.watchRss()));
    console.error(
      `${SCALE_OUT}: ${REPLICAS} keap-proxy replicas on one Redis, RATE_LIMIT_PER_SECOND ${limit} each, a burst of ${settings.connections} connections (${perReplica} per replica) for ${settings.seconds}s, simulator answering 429 above ${limit}/s`,
    );
    const done = await runLoadChild({
      url: replicas.map((r) => r.server.url + requestPath),
      headers: {},
      connections: settings.connections,
      seconds: settings.seconds,
      // No warm-up: its last requests would stay queued and take the timed run's first departures.
      warmupSeconds: 0,
      // Longer than keap-proxy would make a client wait: one over its deadline shows as keap-proxy's 429.
      timeoutSeconds: Math.ceil(config.requestDeadlineMs / 1000) + 5,
      steadyAfterSeconds: STEADY_AFTER_SECONDS,
    });
    const rssAfter = await Promise.all(replicas.map((r) => r.server.rss()));
    const after = await Promise.all(replicas.map((r) => answeredByStatus(r.server.url)));
    const modes = await Promise.all(replicas.map((r) => pacingMode(r.server.url)));
    // Closed before the simulator's counters are read: nothing queued reaches it afterwards.
    await closeReplicas();
    const counters = await sim.counters();
    if (done.steady === undefined) throw new Error('the load generator did not measure the steady rate');
    const perReplicaFigures = replicas.map((r, i): ReplicaFigures => {
      const answered = countsSince(before[i] ?? {}, after[i] ?? {});
      const answered2xx = Object.entries(answered)
        .filter(([status]) => status.startsWith('2'))
        .reduce((n, [, count]) => n + count, 0);
      const answeredOther = Object.fromEntries(Object.entries(answered).filter(([status]) => !status.startsWith('2')));
      return {
        name: r.name,
        answered2xx,
        answeredOther,
        rss: { before: rssBefore[i]?.now ?? NaN, peak: rssAfter[i]?.peak ?? NaN, after: rssAfter[i]?.now ?? NaN },
        modeAfter: modes[i] ?? 'unknown',
        fallbacks: countFallbacks(dir, r.name),
      };
    });
    const ratio = done.steady.requestsPerSecond / allowedPerSecond;
    return {
      replicas: REPLICAS,
      limitPerSecond: limit,
      margin: config.accounts[0]!.pacing.margin,
      allowedPerSecond,
      connections: settings.connections,
      connectionsPerReplica: perReplica,
      seconds: settings.seconds,
      sample: done.sample,
      steady: done.steady,
      ratio,
      target: SCALE_OUT_TARGET,
      maxUpstream429: SCALE_OUT_MAX_UPSTREAM_429,
      upstream: { calls: counters.apiCalls, throttled: counters.throttled },
      perReplica: perReplicaFigures,
      met: ratio >= SCALE_OUT_TARGET.min && ratio <= SCALE_OUT_TARGET.max,
    };
  } finally {
    if (!closed) await closeReplicas();
    await sim.close();
  }
}

/**
 * Each connection keeps one request waiting in a replica's queue: past QUEUE_LIMIT the surplus
 * would get 503 queue_full, and a wait near the deadline 429 rate_limited; the run would then
 * measure refusals, not pacing. Half the deadline leaves room for an uneven share between replicas.
 */
function checkLoad(connections: number, perReplica: number, allowed: number, queueLimit: number, deadlineMs: number) {
  const waitSeconds = connections / allowed;
  if (perReplica >= queueLimit || waitSeconds > deadlineMs / 1000 / 2) {
    throw new Error(
      `BENCH_SCALE_CONNECTIONS ${connections} would keep requests waiting ${waitSeconds.toFixed(1)} s at ${allowed} req/s ` +
        `(QUEUE_LIMIT ${queueLimit}, deadline ${deadlineMs} ms): use fewer connections or a higher BENCH_SCALE_LIMIT`,
    );
  }
}

/** Part (2): local against shared pacing, with limits that never bind, side by side, round by round. */
async function runPacingCost(
  settings: ScaleOutSettings,
  redis: BenchRedis,
  dir: string,
  requestPath: string,
): Promise<PacingCostSummary> {
  const { rounds: roundCount, seconds, warmupSeconds, connections } = settings.cost;
  const unbound = {
    RATE_LIMIT_PER_SECOND: String(COST_RATE_PER_SECOND),
    RATE_LIMIT_PER_MINUTE: String(UNBOUND),
    RATE_LIMIT_PER_DAY: String(UNBOUND),
    TENANT_LIMIT_PER_MINUTE: String(UNBOUND),
    TENANT_LIMIT_PER_DAY: String(UNBOUND),
  };
  // Keap's quota headers report limits too, and the pacers keep to the lower: these report 10^9.
  const sim = await startSimulator({
    dailyQuota: UNBOUND,
    minuteQuota: UNBOUND,
    tenantLimits: { minute: UNBOUND, day: UNBOUND },
  });
  const rounds: PacingCostRound[] = [];
  try {
    // Both keep the grant in one file (the second to start loads what the first stored).
    const base: ServerOptions = { scenario: 'keap-proxy', simUrl: sim.url, tokenUrl: sim.tokenUrl, token: '', dir };
    for (let round = 1; round <= roundCount; round++) {
      await redis.flush();
      const start = (kind: 'local' | 'shared'): Promise<ServerChild> =>
        startServer({
          ...base,
          name: `paced-${kind}-${round}`,
          env: kind === 'shared' ? { ...unbound, REDIS_URL: redis.url } : unbound,
        });
      let local: ServerChild | undefined;
      let shared: ServerChild | undefined;
      let measured:
        { l: ServerLoad; s: ServerLoad; localPeak: number; sharedPeak: number; modeAfter: string } | undefined;
      try {
        if (round % 2 === 1) {
          local = await start('local');
          shared = await start('shared');
        } else {
          shared = await start('shared');
          local = await start('local');
        }
        await waitReady(local.url);
        await waitReady(shared.url, 'shared');
        const request = (s: ServerChild): LoadRequest => ({
          url: s.url + requestPath,
          headers: {},
          connections,
          seconds,
          warmupSeconds,
        });
        await Promise.all([local.watchRss(), shared.watchRss()]);
        const [l, s] = await Promise.all([
          loadServer(local, request(local)),
          loadServer(shared, request(shared), redis),
        ]);
        const [localRss, sharedRss] = await Promise.all([local.rss(), shared.rss()]);
        measured = {
          l,
          s,
          localPeak: localRss.peak,
          sharedPeak: sharedRss.peak,
          modeAfter: await pacingMode(shared.url),
        };
      } finally {
        // Closing drains each log, which the fallback count below reads.
        await Promise.all([local?.close(), shared?.close()]);
      }
      const { l, s, localPeak, sharedPeak, modeAfter } = measured;
      const figures: PacingCostRound = {
        local: costFigures(l, localPeak),
        shared: {
          ...costFigures(s, sharedPeak),
          redisCpuUsPerRequest: s.sample.completed > 0 ? (s.redisCpuUs ?? NaN) / s.sample.completed : NaN,
          redisPingMs: {
            p50: percentile(s.redisPings, 0.5),
            p90: percentile(s.redisPings, 0.9),
            count: s.redisPings.length,
          },
          modeAfter,
          fallbacks: countFallbacks(dir, `paced-shared-${round}`),
        },
      };
      rounds.push(figures);
      logCostRound(round, roundCount, figures);
      await sleep(300);
    }
  } finally {
    await sim.close();
  }
  return {
    ratePerSecond: COST_RATE_PER_SECOND,
    connections,
    seconds,
    warmupSeconds,
    rounds,
    throughputRatio: median(rounds.map((r) => r.shared.requestsPerSecond / r.local.requestsPerSecond)),
    cpuRatio: median(rounds.map((r) => r.shared.cpuUsPerRequest / r.local.cpuUsPerRequest)),
  };
}

interface ServerLoad {
  sample: LoadSample;
  cpuUs: number;
  /** redis-server's CPU over the same timed part, when asked for. */
  redisCpuUs: number | undefined;
  /** PING round trips to Redis over the timed part (ms), when asked for. */
  redisPings: number[];
}

/** PINGs Redis every 100 ms (one at a time) until stopped; answers the round trips. */
function samplePings(redis: BenchRedis): { stop(): number[] } {
  const pings: number[] = [];
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void redis
      .pingMs()
      .then((ms) => pings.push(ms))
      .catch(() => undefined)
      .finally(() => (busy = false));
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return pings;
    },
  };
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

/**
 * Loads one server; its CPU (and Redis's, when given) is read when the timed part starts and
 * when it ends, and Redis's round trip sampled in between.
 */
async function loadServer(server: ServerChild, request: LoadRequest, redis?: BenchRedis): Promise<ServerLoad> {
  let atStart: Promise<[NodeJS.CpuUsage, number | undefined]> | undefined;
  let pings: { stop(): number[] } | undefined;
  const read = (): Promise<[NodeJS.CpuUsage, number | undefined]> => Promise.all([server.cpu(), redis?.cpuUs()]);
  let done: LoadDone;
  try {
    done = await runLoadChild(request, {
      onTimedStart: () => {
        atStart = read();
        if (redis !== undefined) pings = samplePings(redis);
      },
    });
  } finally {
    pings?.stop();
  }
  const redisPings = pings?.stop() ?? [];
  const [[cpuA, redisA], [cpuB, redisB]] = await Promise.all([atStart ?? read(), read()]);
  return {
    sample: done.sample,
    cpuUs: cpuB.user + cpuB.system - (cpuA.user + cpuA.system),
    redisCpuUs: redisA !== undefined && redisB !== undefined ? redisB - redisA : undefined,
    redisPings,
  };
}

function costFigures(r: ServerLoad, rssPeak: number): CostFigures {
  return {
    requestsPerSecond: r.sample.requestsPerSecond,
    cpuUsPerRequest: r.sample.completed > 0 ? r.cpuUs / r.sample.completed : NaN,
    p50Ms: r.sample.p50Ms,
    p99Ms: r.sample.p99Ms,
    bad: r.sample.errors + r.sample.timeouts + r.sample.non2xx,
    rssPeak,
  };
}

/** The bench's keap-proxy settings with `env` (what the server processes load), for the figures they imply. */
function benchConfig(dir: string, env: Record<string, string>) {
  return loadConfig({
    cwd: dir,
    env: {
      KEAP_CLIENT_ID: SIM_CLIENT_ID,
      KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
      KEAP_REFRESH_TOKEN: SIM_SEED,
      KEAP_API_URL: 'http://127.0.0.1:1',
      KEAP_TOKEN_URL: 'http://127.0.0.1:1/token',
      PORT: '0',
      ...env,
    },
  });
}

/** Waits until /readyz answers 200 (and, when `pacing` is given, names that pacing mode). */
async function waitReady(url: string, pacing?: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  let last = '';
  for (;;) {
    try {
      const res = await fetch(`${url}/readyz`);
      last = `${res.status} ${await res.text()}`;
      if (res.status === 200 && (pacing === undefined || last.includes(`"pacing":"${pacing}"`))) return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready within 10 s: ${last}`);
    await sleep(50);
  }
}

/** /readyz's pacing mode: 'shared', 'local_share' (Redis away), or 'none' when it names none. */
async function pacingMode(url: string): Promise<string> {
  const body = (await (await fetch(`${url}/readyz`)).json()) as { pacing?: unknown };
  return typeof body.pacing === 'string' ? body.pacing : 'none';
}

/** keap_proxy_requests_total by status, all routes summed. */
async function answeredByStatus(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const answered: Record<string, number> = {};
  for (const m of text.matchAll(/^keap_proxy_requests_total\{[^}]*status="(\d+)"[^}]*\} (\S+)$/gm)) {
    answered[m[1] as string] = (answered[m[1] as string] ?? 0) + Number(m[2]);
  }
  return answered;
}

function countsSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [status, n] of Object.entries(after))
    if (n - (before[status] ?? 0) > 0) out[status] = n - (before[status] ?? 0);
  return out;
}

/** pacing_fallback lines in the log of the keap-proxy named `name` (scenarios.ts writes `<name>-1.log`). */
function countFallbacks(dir: string, name: string): number {
  try {
    return readFileSync(path.join(dir, `${name}-1.log`), 'utf8')
      .split('\n')
      .filter((line) => line.includes('"event":"pacing_fallback"')).length;
  } catch {
    return NaN;
  }
}

function logGlobalLimit(g: GlobalLimitSummary): void {
  console.error(
    `  ${SCALE_OUT.padEnd(16)} ${g.steady.requestsPerSecond.toFixed(2)} req/s of ${g.allowedPerSecond.toFixed(2)} allowed, ` +
      `${g.upstream.throttled} upstream 429s, ${g.sample.non2xx} non-2xx, per replica ${g.perReplica.map((r) => r.answered2xx).join(' / ')} 2xx`,
  );
}

function logCostRound(round: number, rounds: number, r: PacingCostRound): void {
  console.error(
    `  pacing cost ${round}/${rounds}  local ${r.local.requestsPerSecond.toFixed(0)} req/s ${r.local.cpuUsPerRequest.toFixed(0)} µs/req, ` +
      `shared ${r.shared.requestsPerSecond.toFixed(0)} req/s ${r.shared.cpuUsPerRequest.toFixed(0)} µs/req (+ Redis ${r.shared.redisCpuUsPerRequest.toFixed(0)} µs/req; PING p50 ${r.shared.redisPingMs.p50.toFixed(2)} ms p90 ${r.shared.redisPingMs.p90.toFixed(2)} ms)` +
      `${r.local.bad + r.shared.bad > 0 ? `  (${r.local.bad + r.shared.bad} bad answers)` : ''}`,
  );
}

/** The clients got something other than 2xx: the figures would count refusals (the run's exit status 1). */
export function scaleOutClientFailures(s: ScaleOutSummary): string[] {
  const out: string[] = [];
  const c = s.globalLimit.sample;
  if (c.errors + c.timeouts + c.non2xx > 0)
    out.push(
      `${SCALE_OUT}: ${c.errors} errors, ${c.timeouts} timeouts, ${c.non2xx} non-2xx at the client (status counts ${JSON.stringify(c.statusCodes)})`,
    );
  s.pacingCost.rounds.forEach((r, i) => {
    if (r.local.bad + r.shared.bad > 0)
      out.push(`${SCALE_OUT}: pacing cost round ${i + 1}: ${r.local.bad} bad answers local, ${r.shared.bad} shared`);
  });
  return out;
}

/** More than a few 429s from Keap, or a replica that did not pace through Redis all along (exit status 1). */
export function scaleOutUpstreamFailures(s: ScaleOutSummary): string[] {
  const out: string[] = [];
  const g = s.globalLimit;
  if (g.upstream.throttled > g.maxUpstream429)
    out.push(
      `${SCALE_OUT}: the simulator answered ${g.upstream.throttled} of ${g.upstream.calls} calls with 429 (spike limit ${g.limitPerSecond}/s; at most ${g.maxUpstream429} allowed)`,
    );
  for (const r of g.perReplica)
    if (r.modeAfter !== 'shared' || r.fallbacks !== 0)
      out.push(
        `${SCALE_OUT}: ${r.name} did not pace through Redis throughout (mode ${r.modeAfter}, ${r.fallbacks} fallbacks)`,
      );
  s.pacingCost.rounds.forEach((r, i) => {
    if (r.shared.modeAfter !== 'shared' || r.shared.fallbacks !== 0)
      out.push(
        `${SCALE_OUT}: pacing cost round ${i + 1}: the shared proxy did not pace through Redis throughout (mode ${r.shared.modeAfter}, ${r.shared.fallbacks} fallbacks)`,
      );
  });
  return out;
}

export function formatScaleOut(s: ScaleOutSummary): string {
  const g = s.globalLimit;
  const c = s.pacingCost;
  const mib = (n: number): string => (n / 2 ** 20).toFixed(1);
  const med = (pick: (r: PacingCostRound) => number, digits = 0): string => median(c.rounds.map(pick)).toFixed(digits);
  const upstreamOk = g.upstream.throttled <= g.maxUpstream429;
  return [
    `scale-out: ${g.replicas} keap-proxy replicas (processes of their own, core 0) on one Redis (${s.redisVersion}, its own, helpers' core): grant in Redis (TOKEN_STORE=redis://), pacing through Redis (REDIS_URL), RATE_LIMIT_PER_SECOND ${g.limitPerSecond} each`,
    `  a burst of ${g.connections} connections (${(g.connections / g.limitPerSecond).toFixed(2)}x the limit, ${g.connectionsPerReplica} per replica), each sending its next request when answered, for ${g.seconds} s, to a simulator answering 429 above ${g.limitPerSecond} calls/s`,
    `  achieved ${g.steady.requestsPerSecond.toFixed(2)} req/s (2xx from ${g.steady.afterSeconds} s on, ${g.steady.responses} answers over ${g.steady.seconds.toFixed(2)} s, all replicas) of ${g.allowedPerSecond.toFixed(2)} allowed (${g.limitPerSecond} x margin ${g.margin}): ${g.ratio.toFixed(3)}  ${g.met ? 'PASS' : 'FAIL'} (target ${g.target.min}-${g.target.max})`,
    `  upstream 429s (simulator): ${g.upstream.throttled} of ${g.upstream.calls} calls  ${upstreamOk ? 'PASS' : 'FAIL'} (at most ${g.maxUpstream429})`,
    `  at the client: ${g.sample.non2xx} non-2xx, ${g.sample.errors} errors, ${g.sample.timeouts} timeouts; p50 ${g.sample.p50Ms} ms  p99 ${g.sample.p99Ms} ms`,
    `  per replica: 2xx ${g.perReplica.map((r) => r.answered2xx).join(' / ')}; pacing mode after ${g.perReplica.map((r) => r.modeAfter).join(' / ')}, pacing_fallback logged ${g.perReplica.map((r) => r.fallbacks).join(' / ')}; RSS peak ${g.perReplica.map((r) => mib(r.rss.peak)).join(' / ')} MiB`,
    `pacing cost: keap-proxy with local pacing and with shared pacing (REDIS_URL) in two processes sharing core 0, loaded at the same time by ${c.connections} connections each (${c.rounds.length} rounds of ${c.warmupSeconds}s + ${c.seconds}s)`,
    `  RATE_LIMIT_PER_SECOND ${c.ratePerSecond}, minute and day limits (configured and reported) 10^9: no limit holds a call back; what caps both is the pacing queue itself, one booking at a time`,
    `  local pacing   ${med((r) => r.local.requestsPerSecond)} req/s  ${med((r) => r.local.cpuUsPerRequest)} µs CPU/req  p50 ${med((r) => r.local.p50Ms)} ms  p99 ${med((r) => r.local.p99Ms)} ms  RSS peak ${mib(median(c.rounds.map((r) => r.local.rssPeak)))} MiB`,
    `  shared pacing  ${med((r) => r.shared.requestsPerSecond)} req/s  ${med((r) => r.shared.cpuUsPerRequest)} µs CPU/req (+ ${med((r) => r.shared.redisCpuUsPerRequest)} µs in redis-server)  p50 ${med((r) => r.shared.p50Ms)} ms  p99 ${med((r) => r.shared.p99Ms)} ms  RSS peak ${mib(median(c.rounds.map((r) => r.shared.rssPeak)))} MiB`,
    `  Redis PING round trip from core 0 while loaded (one every 100 ms): p50 ${med((r) => r.shared.redisPingMs.p50, 2)} ms, p90 ${med((r) => r.shared.redisPingMs.p90, 2)} ms (medians over rounds)`,
    `  shared / local, throughput  ${c.throughputRatio.toFixed(3)}x  (per round ${c.rounds.map((r) => (r.shared.requestsPerSecond / r.local.requestsPerSecond).toFixed(2)).join(' / ')})`,
    `  shared / local, keap-proxy CPU per request  ${c.cpuRatio.toFixed(3)}x  (per round ${c.rounds.map((r) => (r.shared.cpuUsPerRequest / r.local.cpuUsPerRequest).toFixed(2)).join(' / ')})`,
  ].join('\n');
}
