// The accounts scenario (issue 12, point 8): what many accounts cost in memory, and whether a
// trickle keeps its turn beside a flood when two accounts share one OAuth client, measured
// through keap-proxy in a process of its own (server-process.ts, core 0), as the other
// scenarios measure it.
//
// (1) Memory. keap-proxy's RSS, read inside its process after a full GC (--expose-gc; what is
//     retained, not the garbage of the last requests), in key mode with pacing at its default:
//     (a) one account from the plain settings (KEAP_API_KEY), idle after start, and after one
//         request;
//     (b) ACCOUNTS_FILE of BENCH_ACCOUNTS (10,000) accounts and no top-level credentials, idle
//         after start (configured, none active);
//     (c) the same process after BENCH_ACCOUNTS_ACTIVE (100) accounts each served one request
//         through /accounts/<id>/ (their state made on first use: src/accounts/registry.ts);
//     (d) after BENCH_ACCOUNTS_MORE (1,000; 0 leaves it out) accounts, up to ACCOUNTS_ACTIVE_MAX.
//     Every account has a key of its own; the simulator accepts the first max(c, d) of them,
//     the ones used (all 10,000 would not fit the environment variable that carries its options).
//     Target: (c) - (a) <= MEMORY_TARGET_BYTES. The V8 heap in use is reported beside each RSS:
//     100 accounts' state is a few MiB, within what RSS moves by as V8 keeps or gives back pages,
//     so the per-account figures from RSS at (c) are rough; the heap's and (d)'s are steadier.
//
// (2) Fairness. Two accounts, `flood` and `trickle`, with one OAuth client (the simulator's),
//     RATE_LIMIT_PER_SECOND BENCH_FAIR_RATE (25) and the default margin, each with a grant of its
//     own written into its store beforehand (the simulator's access tokens, as
//     test/accounts-fairness.test.ts does), in front of a simulator answering 429 above 25 calls
//     a second. A load generator keeps BENCH_FAIR_FLOOD (100) connections busy on `flood` for
//     BENCH_FAIR_SECONDS (10) s; from 1 s on this process sends `trickle` one request every
//     BENCH_FAIR_TRICKLE_MS (300) ms. The trickle's queue wait: its latency at the client minus
//     its unqueued latency (the median of 10 calls alone just before the flood: the simulator's
//     answer and the proxy's own time), because keap-proxy's keap_proxy_queue_wait_seconds is a
//     histogram whose buckets (25, 50, 100 ms) are coarser than the target; that histogram, read
//     for the trickle's tenant label (each grant names its own app in its scope, so the labels
//     differ), is reported beside it as a check (its mean is exact). PASS when the trickle's p99
//     wait is at most one spacing (1000 / (rate x margin) ms) plus BENCH_FAIR_SLACK_MS (20) ms.
//     The run fails (exit 1) on any upstream 429 or an answer other than 2xx.
//
// The pacer alone, in one process and without HTTP, stays a command of its own:
// `node dist/bench/fair-share.js` (fair-share.ts).
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { SETTINGS } from '../src/config/config.js';
import { FileTokenStore } from '../src/tokens/token-store.js';
import { SIM_API_KEY, SIM_CLIENT_ID, SIM_CLIENT_SECRET } from '../test/simulator/keap-simulator.js';
import { startServer, type ServerChild } from './head-to-head.js';
import type { LoadSample, SteadyRate } from './load.js';
import { runLoadChild, startSimulator } from './processes.js';

export const ACCOUNTS = 'accounts';

/**
 * (c) - (a) at most 64 MiB: 10,000 accounts configured and 100 active must still fit the
 * 512 MiB pod of README's Memory section (and deploy/kubernetes), which plans about 380 MiB
 * for one account under back-to-back upload bursts (baseline + the 192 MiB body budget + 125
 * MiB): 64 MiB is half of the 132 MiB left, the other half kept as headroom. More would also
 * mean idle configured accounts cost real memory, which issue 12 (point 6) says they must not.
 */
export const MEMORY_TARGET_BYTES = 64 * 2 ** 20;
const REQUEST_PATH = '/crm/rest/v1/contacts';
/** Requests in flight at once while accounts are made active. */
const ACTIVATE_CONCURRENCY = 8;
/** The flood's first second (its backlog forming) is left out of its rate; the trickle starts then. */
const STEADY_AFTER_SECONDS = 1;
/** Unqueued trickle calls before the flood, for the answer time to take off its latency. */
const BASELINE_CALLS = 10;
/** The last trickle call leaves this long before the flood's end, so it is not caught in the teardown. */
const TRICKLE_TAIL_MS = 500;
/** The grants' apps: they name the tenant label of keap_proxy_queue_wait_seconds. */
const appOf = (id: string): string => `${id}.infusionsoft.com`;

export interface AccountsSettings {
  configured: number;
  active: number;
  /** 0: no (d). */
  more: number;
  fair: { limitPerSecond: number; seconds: number; flood: number; trickleMs: number; slackMs: number };
}

export function readAccountsSettings(num: (name: string, dflt: number, min: number) => number): AccountsSettings {
  const configured = Math.round(num('BENCH_ACCOUNTS', 10_000, 1));
  const active = Math.min(configured, Math.round(num('BENCH_ACCOUNTS_ACTIVE', 100, 1)));
  const more = Math.min(configured, Math.round(num('BENCH_ACCOUNTS_MORE', 1000, 0)));
  return {
    configured,
    active,
    more: more > active ? more : 0,
    fair: {
      limitPerSecond: Math.round(num('BENCH_FAIR_RATE', 25, 1)),
      seconds: num('BENCH_FAIR_SECONDS', 10, STEADY_AFTER_SECONDS + 2),
      flood: Math.round(num('BENCH_FAIR_FLOOD', 100, 1)),
      trickleMs: Math.round(num('BENCH_FAIR_TRICKLE_MS', 300, 10)),
      slackMs: num('BENCH_FAIR_SLACK_MS', 20, 0),
    },
  };
}

/** keap-proxy's memory at one point: bytes, after a full GC. */
export interface MemoryPoint {
  rss: number;
  heapUsed: number;
}

export interface AccountsMemory {
  configured: number;
  active: number;
  more: number;
  /** Which keys the accounts use and which the simulator accepts. */
  keys: string;
  one: { idle: MemoryPoint; afterRequest: MemoryPoint };
  configuredIdle: MemoryPoint;
  activeN: MemoryPoint;
  moreN: MemoryPoint | undefined;
  /** ((b) - (a)) / configured, bytes, of RSS and of heap used. */
  perConfigured: MemoryPoint;
  /** ((c) - (b)) / active, bytes. */
  perActive: MemoryPoint;
  /** ((d) - (c)) / (more - active), bytes. */
  perActiveMore: MemoryPoint | undefined;
  /** (c) - (a), bytes, against the target. */
  growth: number;
  target: number;
  met: boolean;
  /** Answers other than 200 while accounts were made active. */
  bad: number;
}

export interface Quantiles {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export interface AccountsFairness {
  limitPerSecond: number;
  margin: number;
  allowedPerSecond: number;
  spacingMs: number;
  seconds: number;
  floodConnections: number;
  trickleMs: number;
  /** The trickle alone before the flood: median latency, ms (taken off each latency below). */
  baselineMs: number;
  /** The trickle's latency at the client beside the flood, ms. */
  trickleLatency: Quantiles;
  /** The same less baselineMs (at least 0): its queue wait. */
  trickleWait: Quantiles;
  /** keap_proxy_queue_wait_seconds for the trickle's tenant over the same calls: mean (exact) and the bucket bound holding 99% and all. */
  metric: { count: number; meanMs: number; p99AtMostMs: number; maxAtMostMs: number };
  trickleBad: number;
  flood: { sample: LoadSample; steady: SteadyRate };
  /** Calls the simulator saw while the trickle ran, per second. */
  total: { calls: number; seconds: number; perSecond: number };
  upstream: { calls: number; throttled: number };
  targetMs: number;
  met: boolean;
}

export interface AccountsSummary {
  memory: AccountsMemory;
  fairness: AccountsFairness;
}

export async function runAccounts(settings: AccountsSettings, dir: string): Promise<AccountsSummary> {
  console.error(
    `accounts: keap-proxy's RSS with one account, with ${settings.configured} configured (key mode), then ${settings.active}${settings.more > 0 ? ` and ${settings.more}` : ''} active`,
  );
  const memory = await runMemory(settings, dir);
  logMemory(memory);
  const f = settings.fair;
  console.error(
    `accounts: a flood of ${f.flood} connections and a trickle of 1 per ${f.trickleMs} ms on two accounts of one OAuth client (RATE_LIMIT_PER_SECOND ${f.limitPerSecond}) for ${f.seconds} s`,
  );
  const fairness = await runFairness(settings, dir);
  logFairness(fairness);
  return { memory, fairness };
}

// ---------------------------------------------------------------------------------------------
// (1) Memory

async function runMemory(settings: AccountsSettings, dir: string): Promise<AccountsMemory> {
  const { configured, active, more } = settings;
  const used = Math.max(active, more);
  const keyOf = (i: number): string => `KeapAK-bench-${String(i).padStart(6, '0')}`;
  const ids = Array.from({ length: configured }, (_, i) => `acct-${String(i).padStart(6, '0')}`);
  const sim = await startSimulator({ apiKeys: [SIM_API_KEY, ...ids.slice(0, used).map((_, i) => keyOf(i))] });
  const memDir = mkdtempSync(path.join(dir, 'accounts-memory-'));
  let bad = 0;
  try {
    const base = {
      scenario: 'keap-proxy' as const,
      simUrl: sim.url,
      tokenUrl: sim.tokenUrl,
      token: '',
      exposeGc: true,
    };
    // No OAuth client at the top (keapProxyConfig sets one): '' is a setting's default, here none.
    const noOAuth = { KEAP_CLIENT_ID: '', KEAP_CLIENT_SECRET: '', KEAP_REFRESH_TOKEN: '', RATE_LIMIT_PER_SECOND: '' };

    // (a) One account from the plain settings.
    let one: AccountsMemory['one'];
    {
      const server = await startServer({
        ...base,
        dir: memDir,
        name: 'accounts-one',
        env: { ...noOAuth, KEAP_API_KEY: keyOf(0) },
      });
      try {
        const idle = await settled(server);
        bad += await activate(server.url, [''], 1);
        one = { idle, afterRequest: await settled(server) };
      } finally {
        await server.close();
      }
    }

    // (b), (c), (d): one process with ACCOUNTS_FILE.
    const file = path.join(memDir, 'accounts.json');
    writeFileSync(
      file,
      JSON.stringify({ accounts: Object.fromEntries(ids.map((id, i) => [id, { KEAP_API_KEY: keyOf(i) }])) }),
    );
    const server = await startServer({
      ...base,
      dir: memDir,
      name: 'accounts-many',
      env: { ...noOAuth, ACCOUNTS_FILE: file },
    });
    try {
      const configuredIdle = await settled(server);
      const prefixes = ids.map((id) => `/accounts/${id}`);
      bad += await activate(server.url, prefixes.slice(0, active), ACTIVATE_CONCURRENCY);
      const activeN = await settled(server);
      let moreN: MemoryPoint | undefined;
      if (more > 0) {
        bad += await activate(server.url, prefixes.slice(active, more), ACTIVATE_CONCURRENCY);
        moreN = await settled(server);
      }
      const growth = activeN.rss - one.idle.rss;
      return {
        configured,
        active,
        more,
        keys: `a key of its own for each of the ${configured} accounts; the simulator accepts the first ${used} (the ones used)`,
        one,
        configuredIdle,
        activeN,
        moreN,
        perConfigured: per(configuredIdle, one.idle, configured),
        perActive: per(activeN, configuredIdle, active),
        perActiveMore: moreN !== undefined ? per(moreN, activeN, more - active) : undefined,
        growth,
        target: MEMORY_TARGET_BYTES,
        met: growth <= MEMORY_TARGET_BYTES,
        bad,
      };
    } finally {
      await server.close();
    }
  } finally {
    await sim.close();
  }
}

/** (to - from) / n, of RSS and of heap used. */
function per(to: MemoryPoint, from: MemoryPoint, n: number): MemoryPoint {
  return { rss: (to.rss - from.rss) / n, heapUsed: (to.heapUsed - from.heapUsed) / n };
}

/** The server's memory once its last requests' sockets and timers are done with. */
async function settled(server: ServerChild): Promise<MemoryPoint> {
  await sleep(300);
  return server.memory();
}

/** One GET through each prefix, `concurrency` at a time; answers how many were not 200. */
async function activate(url: string, prefixes: string[], concurrency: number): Promise<number> {
  let next = 0;
  let bad = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const worker = async (): Promise<void> => {
    while (next < prefixes.length) {
      const prefix = prefixes[next++] as string;
      const { status } = await get(`${url}${prefix}${REQUEST_PATH}`, agent);
      if (status !== 200) bad += 1;
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    agent.destroy();
  }
  return bad;
}

// ---------------------------------------------------------------------------------------------
// (2) Fairness

async function runFairness(settings: AccountsSettings, dir: string): Promise<AccountsFairness> {
  const { limitPerSecond, seconds, flood, trickleMs, slackMs } = settings.fair;
  const margin = Number(SETTINGS.find((s) => s.name === 'RATE_LIMIT_MARGIN')?.default);
  const allowedPerSecond = limitPerSecond * margin;
  const spacingMs = 1000 / allowedPerSecond;
  const sim = await startSimulator({ ratePerSecond: limitPerSecond });
  let server: ServerChild | undefined;
  const agent = new http.Agent({ keepAlive: true });
  try {
    const fairDir = mkdtempSync(path.join(dir, 'accounts-fair-'));
    // Each account's grant, in the store the proxy gives it (accounts/<id>.json beside TOKEN_STORE).
    const now = Date.now();
    for (const id of ['flood', 'trickle'])
      await new FileTokenStore(path.join(fairDir, 'data', 'accounts', `${id}.json`)).save({
        accessToken: await sim.issueAccessToken(),
        refreshToken: `rt-${id}`,
        tokenType: 'bearer',
        scope: `full|${appOf(id)}`,
        accessExpiresAt: now + 86_400_000,
        issuedAt: now,
        refreshIssuedAt: now,
      });
    const file = path.join(fairDir, 'accounts.json');
    const client = { KEAP_CLIENT_ID: SIM_CLIENT_ID, KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET };
    writeFileSync(file, JSON.stringify({ accounts: { flood: client, trickle: client } }));
    server = await startServer({
      scenario: 'keap-proxy',
      simUrl: sim.url,
      tokenUrl: sim.tokenUrl,
      token: '',
      dir: fairDir,
      name: 'accounts-fair',
      env: {
        KEAP_CLIENT_ID: '',
        KEAP_CLIENT_SECRET: '',
        KEAP_REFRESH_TOKEN: '',
        ACCOUNTS_FILE: file,
        TOKEN_STORE: path.join(fairDir, 'data', 'tokens.json'),
        RATE_LIMIT_PER_SECOND: String(limitPerSecond),
      },
    });
    const url = server.url;
    const trickleUrl = `${url}/accounts/trickle${REQUEST_PATH}`;
    // Both accounts made (grants loaded, connections open) before anything is timed.
    for (const id of ['flood', 'trickle']) {
      const { status } = await get(`${url}/accounts/${id}${REQUEST_PATH}?warm=1`, agent);
      if (status !== 200) throw new Error(`accounts fairness: warming account ${id} was answered ${status}`);
    }
    const baseline: number[] = [];
    for (let i = 0; i < BASELINE_CALLS; i++) {
      await sleep(100);
      const r = await timedGet(`${trickleUrl}?alone=${i}`, agent);
      if (r.status !== 200) throw new Error(`accounts fairness: a trickle call alone was answered ${r.status}`);
      baseline.push(r.ms);
    }
    const baselineMs = quantiles(baseline).p50;
    const metricBefore = await readQueueWait(url, appOf('trickle'));

    const latencies: number[] = [];
    let trickleBad = 0;
    let trickleWindow: { calls: number; seconds: number } | undefined;
    let trickleDone: Promise<void> = Promise.resolve();
    const runTrickle = async (): Promise<void> => {
      await sleep(STEADY_AFTER_SECONDS * 1000);
      const startCounters = await sim.counters();
      const started = performance.now();
      const end = started + (seconds - STEADY_AFTER_SECONDS) * 1000 - TRICKLE_TAIL_MS;
      const calls: Promise<void>[] = [];
      let i = 0;
      // On a fixed schedule, not after the last answer: a late answer does not delay the next call.
      for (let at = started; at < end; at += trickleMs) {
        const wait = at - performance.now();
        if (wait > 0) await sleep(wait);
        const n = i++;
        calls.push(
          timedGet(`${trickleUrl}?t=${n}`, agent).then(
            (r) => {
              if (r.status === 200) latencies.push(r.ms);
              else trickleBad += 1;
            },
            () => {
              trickleBad += 1;
            },
          ),
        );
      }
      await Promise.all(calls);
      const endCounters = await sim.counters();
      trickleWindow = {
        calls: endCounters.apiCalls - startCounters.apiCalls,
        seconds: (performance.now() - started) / 1000,
      };
    };
    const done = await runLoadChild(
      {
        url: `${url}/accounts/flood${REQUEST_PATH}`,
        headers: {},
        connections: flood,
        seconds,
        warmupSeconds: 0,
        timeoutSeconds: 60,
        steadyAfterSeconds: STEADY_AFTER_SECONDS,
      },
      {
        onTimedStart: () => {
          trickleDone = runTrickle();
        },
      },
    );
    await trickleDone;
    const metricAfter = await readQueueWait(url, appOf('trickle'));
    await server.close();
    server = undefined;
    const counters = await sim.counters();
    if (done.steady === undefined || trickleWindow === undefined)
      throw new Error('accounts fairness: the run measured nothing');
    const latency = quantiles(latencies);
    const wait = quantiles(latencies.map((ms) => Math.max(0, ms - baselineMs)));
    const targetMs = spacingMs + slackMs;
    const w: { calls: number; seconds: number } = trickleWindow;
    return {
      limitPerSecond,
      margin,
      allowedPerSecond,
      spacingMs,
      seconds,
      floodConnections: flood,
      trickleMs,
      baselineMs,
      trickleLatency: latency,
      trickleWait: wait,
      metric: metricSince(metricBefore, metricAfter),
      trickleBad,
      flood: { sample: done.sample, steady: done.steady },
      total: { calls: w.calls, seconds: w.seconds, perSecond: w.calls / w.seconds },
      upstream: { calls: counters.apiCalls, throttled: counters.throttled },
      targetMs,
      met: wait.count > 0 && wait.p99 <= targetMs,
    };
  } finally {
    agent.destroy();
    await server?.close();
    await sim.close();
  }
}

/** One keap_proxy_queue_wait_seconds series: cumulative counts by upper bound (s), sum (s), count. */
interface HistogramReading {
  buckets: Map<number, number>;
  sum: number;
  count: number;
}

async function readQueueWait(url: string, tenant: string): Promise<HistogramReading> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const reading: HistogramReading = { buckets: new Map(), sum: 0, count: 0 };
  for (const m of text.matchAll(/^keap_proxy_queue_wait_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)$/gm)) {
    const labels = new Map([...(m[2] as string).matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (labels.get('tenant') !== tenant) continue;
    const value = Number(m[3]);
    if (m[1] === 'sum') reading.sum = value;
    else if (m[1] === 'count') reading.count = value;
    else reading.buckets.set(labels.get('le') === '+Inf' ? Infinity : Number(labels.get('le')), value);
  }
  return reading;
}

function metricSince(before: HistogramReading, after: HistogramReading): AccountsFairness['metric'] {
  const count = after.count - before.count;
  const bounds = [...after.buckets.keys()].sort((x, y) => x - y);
  const within = (share: number): number =>
    (bounds.find((b) => (after.buckets.get(b) ?? 0) - (before.buckets.get(b) ?? 0) >= share * count) ?? NaN) * 1000;
  return {
    count,
    meanMs: count > 0 ? ((after.sum - before.sum) / count) * 1000 : NaN,
    p99AtMostMs: within(0.99),
    maxAtMostMs: within(1),
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers and the report

function get(url: string, agent: http.Agent): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** A GET timed from the call to the end of the answer's body. */
async function timedGet(url: string, agent: http.Agent): Promise<{ status: number; ms: number }> {
  const t = performance.now();
  const { status } = await get(url, agent);
  return { status, ms: performance.now() - t };
}

function quantiles(values: number[]): Quantiles {
  const sorted = [...values].sort((x, y) => x - y);
  const q = (p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN;
  return { count: sorted.length, p50: q(0.5), p99: q(0.99), max: sorted.at(-1) ?? NaN };
}

export function accountsFailures(a: AccountsSummary): string[] {
  const f = a.fairness;
  return [
    ...(a.memory.bad > 0 ? [`accounts memory: ${a.memory.bad} requests answered other than 200`] : []),
    ...(f.upstream.throttled > 0
      ? [`accounts fairness: the simulator answered 429 ${f.upstream.throttled} times`]
      : []),
    ...(f.trickleBad > 0 ? [`accounts fairness: ${f.trickleBad} trickle calls answered other than 200`] : []),
    ...(f.flood.sample.non2xx + f.flood.sample.errors + f.flood.sample.timeouts > 0
      ? [
          `accounts fairness: the flood got ${f.flood.sample.non2xx} non-2xx, ${f.flood.sample.errors} errors, ${f.flood.sample.timeouts} timeouts`,
        ]
      : []),
  ];
}

const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
const kib = (bytes: number): string => (bytes / 1024).toFixed(2);
const ms = (n: number): string => n.toFixed(1);

function logMemory(m: AccountsMemory): void {
  console.error(
    `  accounts memory: (a) ${mib(m.one.idle.rss)} MiB, (b) ${mib(m.configuredIdle.rss)} MiB, (c) ${mib(m.activeN.rss)} MiB${m.moreN !== undefined ? `, (d) ${mib(m.moreN.rss)} MiB` : ''}${m.bad > 0 ? `  (${m.bad} bad answers)` : ''}`,
  );
}

function logFairness(f: AccountsFairness): void {
  console.error(
    `  accounts fairness: trickle wait p50 ${ms(f.trickleWait.p50)} ms p99 ${ms(f.trickleWait.p99)} ms; flood ${f.flood.steady.requestsPerSecond.toFixed(2)}/s; total ${f.total.perSecond.toFixed(2)}/s of ${f.allowedPerSecond.toFixed(2)}; ${f.upstream.throttled} upstream 429s`,
  );
}

export function formatAccounts(a: AccountsSummary): string {
  const m = a.memory;
  const f = a.fairness;
  const both = (p: MemoryPoint): string => `${mib(p.rss)} MiB  (heap used ${mib(p.heapUsed)} MiB)`;
  const perKib = (p: MemoryPoint): string => `${kib(p.rss)} KiB  (heap used ${kib(p.heapUsed)} KiB)`;
  const rows: [string, string][] = [
    ['(a) one account (KEAP_API_KEY)', `${both(m.one.idle)}; after one request ${mib(m.one.afterRequest.rss)} MiB`],
    [`(b) ${m.configured} configured, none active`, both(m.configuredIdle)],
    [`(c) ${m.active} active`, both(m.activeN)],
    ...(m.moreN !== undefined ? [[`(d) ${m.more} active`, both(m.moreN)] as [string, string]] : []),
    ['per configured account', `${perKib(m.perConfigured)}  ((b) - (a)) / ${m.configured}`],
    ['per active account', `${perKib(m.perActive)}  ((c) - (b)) / ${m.active}`],
    ...(m.perActiveMore !== undefined
      ? [['    from (c) to (d)', `${perKib(m.perActiveMore)}  ((d) - (c)) / ${m.more - m.active}`] as [string, string]]
      : []),
    [
      '(c) - (a)',
      `${mib(m.growth)} MiB  ${m.met ? 'PASS' : 'FAIL'} (target <= ${mib(m.target)} MiB)${m.bad > 0 ? `; ${m.bad} answers not 200` : ''}`,
    ],
  ];
  const fairRows: [string, string][] = [
    [
      'trickle queue wait',
      `p50 ${ms(f.trickleWait.p50)} ms  p99 ${ms(f.trickleWait.p99)} ms  max ${ms(f.trickleWait.max)} ms  (${f.trickleWait.count} calls; latency at the client less ${ms(f.baselineMs)} ms, its median alone)`,
    ],
    [
      'trickle latency',
      `p50 ${ms(f.trickleLatency.p50)} ms  p99 ${ms(f.trickleLatency.p99)} ms  max ${ms(f.trickleLatency.max)} ms${f.trickleBad > 0 ? `; ${f.trickleBad} not 200` : ''}`,
    ],
    [
      'proxy metric (trickle)',
      `keap_proxy_queue_wait_seconds{tenant="${appOf('trickle')}"}: ${f.metric.count} calls, mean ${ms(f.metric.meanMs)} ms, p99 <= ${f.metric.p99AtMostMs} ms, all <= ${f.metric.maxAtMostMs} ms (its buckets)`,
    ],
    [
      'flood achieved',
      `${f.flood.steady.requestsPerSecond.toFixed(2)} req/s  (2xx from ${f.flood.steady.afterSeconds} s on; ${f.flood.sample.non2xx} non-2xx, p50 ${f.flood.sample.p50Ms} ms queued)`,
    ],
    [
      'total upstream',
      `${f.total.perSecond.toFixed(2)} calls/s  (${f.total.calls} over ${f.total.seconds.toFixed(2)} s while the trickle ran) of ${f.allowedPerSecond.toFixed(2)} allowed (${f.limitPerSecond} x margin ${f.margin})`,
    ],
    ['upstream 429s', `${f.upstream.throttled}  (of ${f.upstream.calls} calls the simulator saw)`],
    [
      'trickle p99 wait',
      `${ms(f.trickleWait.p99)} ms  ${f.met ? 'PASS' : 'FAIL'} (target <= one spacing ${ms(f.spacingMs)} ms + ${ms(f.targetMs - f.spacingMs)} ms = ${ms(f.targetMs)} ms)`,
    ],
  ];
  const table = (list: [string, string][]): string[] => {
    const width = Math.max(...list.map(([k]) => k.length));
    return list.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
  };
  return [
    `accounts, memory: keap-proxy's RSS in its own process after a full GC, key-mode accounts with pacing at its default, one GET each through /accounts/<id>/ (${m.keys})`,
    ...table(rows),
    `accounts, fairness: two accounts of one OAuth client (RATE_LIMIT_PER_SECOND ${f.limitPerSecond}, margin ${f.margin}) to a simulator answering 429 above ${f.limitPerSecond} calls/s; flood: ${f.floodConnections} connections kept busy for ${f.seconds} s; trickle: 1 call per ${f.trickleMs} ms from ${STEADY_AFTER_SECONDS} s on`,
    ...table(fairRows),
  ].join('\n');
}
