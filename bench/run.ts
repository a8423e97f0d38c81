// `npm run build && npm run bench`: how much throughput keap-proxy gives up against a bare
// http-proxy-3 forwarder and against no proxy at all, on loopback, against the simulator;
// then ("pacing") how close keap-proxy with pacing on gets to the rate it allows itself
// under a burst far beyond it, and whether Keap (a simulator enforcing the spike limit)
// ever has to answer 429; then ("uploads") the peak memory of keap-proxy and of the bare
// forwarder under a burst of large uploads to a slow Keap, and how many keap-proxy refused;
// then ("scale-out", scale-out.ts) three keap-proxy replicas sharing Keap's quota through one
// Redis against a global limit, and the cost of pacing through Redis against pacing locally;
// then ("accounts", accounts.ts) keap-proxy's RSS with 10,000 accounts configured and 100 active,
// and a trickle's queue wait beside a flood on two accounts sharing one OAuth client; then
// ("adaptive", adaptive.ts) how near keap-proxy configured for 25/s gets to a Keap allowing 10/s.
//
// Fairness on a small box:
// - the servers run here, the load generator (autocannon) in a child process, so client and
//   servers never share an event loop;
// - scenarios are interleaved round by round (a, b, c, a, b, c, ...) and each figure is the
//   median over rounds, so a noisy neighbour or a slow first round does not pick the winner;
// - each measurement starts its server set-up fresh and closes it after, so no leftover work
//   (log writes, idle sockets) is billed to the next scenario.
//
// Settings (environment): BENCH_SECONDS (timed seconds per measurement, default 2),
// BENCH_WARMUP_SECONDS (default 3: every measurement starts a fresh server, whose JIT needs that
// long to settle; with 1 s keap-proxy, having more code to optimize, was measured half-warm), BENCH_ROUNDS (default 10), BENCH_CONNECTIONS (default 50),
// BENCH_SCENARIOS (comma-separated names to run, default all: direct, bare-forwarder,
// keap-proxy, head-to-head, pacing, uploads, scale-out, accounts, adaptive; adaptive.ts has its settings). Pacing: BENCH_PACING_LIMIT (the spike limit, default 25 = Keap's for
// OAuth), BENCH_PACING_SECONDS (burst length, default 10), BENCH_PACING_CONNECTIONS (default 50).
// Uploads: BENCH_UPLOADS_CONNECTIONS (concurrent uploads, default 60), BENCH_UPLOADS_MIB (body
// size, default 8), BENCH_UPLOADS_HOLD_MS (how long the upstream holds each answer, default 2000),
// BENCH_UPLOADS_BURSTS (bursts through the same server process, one after the other, default 1).
// keap-proxy runs with its defaults (REPLAY_BODY_BYTES 10 MiB, BODY_BUFFER_BUDGET_BYTES 192 MiB).
// Scale-out (needs redis-server on the PATH): BENCH_SCALE_LIMIT (the spike limit, default 25),
// BENCH_SCALE_SECONDS (burst length, default 10), BENCH_SCALE_CONNECTIONS (in all, rounded up to a
// multiple of the 3 replicas; default 8 x the limit); its pacing-cost part uses BENCH_ROUNDS,
// BENCH_SECONDS, BENCH_WARMUP_SECONDS and BENCH_CONNECTIONS as head-to-head does.
// Accounts: BENCH_ACCOUNTS (configured, default 10000), BENCH_ACCOUNTS_ACTIVE (default 100),
// BENCH_ACCOUNTS_MORE (a further measurement with this many active, default 1000; 0: none);
// BENCH_FAIR_RATE (25), BENCH_FAIR_SECONDS (10), BENCH_FAIR_FLOOD (100 connections),
// BENCH_FAIR_TRICKLE_MS (300), BENCH_FAIR_SLACK_MS (20), as bench/fair-share.ts reads them.
//
// Output: the table on stdout (progress on stderr), the same figures in bench/results/latest.json.
// Exit status 1 when any answer was not 2xx (the figures would be meaningless), when the
// simulator had to answer 429 during the pacing run, when an upload got neither 200 nor
// (through keap-proxy) 503 body_budget_exhausted, when the scale-out replicas drew more than a
// few 429s from the simulator or did not pace through Redis all along, when the accounts run drew
// a 429 from the simulator or an answer other than 2xx, or the run broke; a missed
// throughput or pacing target is reported as FAIL in the verdict but does not change the status.
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  forkScript,
  pinServerProcess,
  RSS_SAMPLE_MS,
  startSimulator,
  startSlowUpstream,
  type RemoteSimulator,
  runLoadChild,
} from './processes.js';
import {
  formatHeadToHead,
  runHeadToHead,
  startServer,
  type HeadToHeadSummary,
  type ServerChild,
} from './head-to-head.js';
import type { UploadsMessage, UploadsRequest, UploadsSample } from './uploads-client.js';
import {
  formatScaleOut,
  runScaleOut,
  scaleOutClientFailures,
  scaleOutUpstreamFailures,
  SCALE_OUT,
  type ScaleOutSettings,
  type ScaleOutSummary,
} from './scale-out.js';
import {
  accountsFailures,
  ACCOUNTS,
  formatAccounts,
  readAccountsSettings,
  runAccounts,
  type AccountsSettings,
  type AccountsSummary,
} from './accounts.js';
import {
  ADAPTIVE,
  adaptiveFailures,
  formatAdaptive,
  readAdaptiveSettings,
  runAdaptive,
  type AdaptiveSummary,
} from './adaptive.js';
import { SETTINGS } from '../src/config/config.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EventLoopUtilization } from 'node:perf_hooks';
import type { LoadRequest, LoadSample, SteadyRate } from './load.js';
import { bareForwarder, direct, keapProxy, pacedKeapProxy, type BenchContext, type Scenario } from './scenarios.js';
import {
  compare,
  failures,
  formatPacing,
  formatTable,
  formatUploads,
  lostRefusals,
  pacingClientFailures,
  pacingUpstreamFailures,
  summarize,
  summarizePacing,
  uploadsFailures,
  type Comparison,
  type ComparisonResult,
  type Measurement,
  type PacingSummary,
  type PacingTarget,
  type ScenarioResult,
  type ScenarioSummary,
  type UploadsRun,
  type UploadsSummary,
} from './report.js';

const REQUEST_PATH = '/crm/rest/v1/contacts';

/** The pacing run's name in BENCH_SCENARIOS and the JSON. */
const PACING = 'pacing';
const HEAD_TO_HEAD = 'head-to-head';
const UPLOADS = 'uploads';
/** The uploads run: the path posted to (Keap's file upload), and the idle wait before its `after` RSS. */
const UPLOAD_PATH = '/crm/rest/v1/files';
const UPLOADS_SETTLE_MS = 2000;
/**
 * The pacing run's first second is left out of the achieved rate: the first call leaves at
 * once and the queue is still filling, which says nothing about the pace kept.
 */
const PACING_STEADY_AFTER_SECONDS = 1;
/** Near the allowed rate (timer lateness costs a little), and never measurably above it. */
const PACING_TARGET: PacingTarget = { min: 0.95, max: 1.01 };

interface Settings {
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  connections: number;
  only: string[] | undefined;
  pacing: { limitPerSecond: number; seconds: number; connections: number };
  uploads: { connections: number; bytes: number; holdMs: number; bursts: number };
  scaleOut: ScaleOutSettings;
  accounts: AccountsSettings;
}

function scenarios(ctx: BenchContext): Scenario[] {
  return [direct(ctx), bareForwarder(ctx), keapProxy(ctx)];
}

const COMPARISONS: Comparison[] = [
  { label: 'keap-proxy / bare forwarder (c/b)', numerator: 'keap-proxy', denominator: 'bare-forwarder', target: 0.9 },
  { label: 'keap-proxy / direct (c/a)', numerator: 'keap-proxy', denominator: 'direct' },
  { label: 'bare forwarder / direct (b/a)', numerator: 'bare-forwarder', denominator: 'direct' },
];

function readSettings(env: NodeJS.ProcessEnv): Settings {
  const num = (name: string, dflt: number, min: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min) throw new Error(`${name}: "${raw}" is not a number >= ${min}`);
    return n;
  };
  const only = env.BENCH_SCENARIOS?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const scaleLimit = Math.round(num('BENCH_SCALE_LIMIT', 25, 1));
  // As many connections on each of the three replicas.
  const scaleConnections = 3 * Math.ceil(num('BENCH_SCALE_CONNECTIONS', 8 * scaleLimit, 3) / 3);
  const seconds = num('BENCH_SECONDS', 2, 1);
  const warmupSeconds = num('BENCH_WARMUP_SECONDS', 3, 0);
  const rounds = Math.round(num('BENCH_ROUNDS', 10, 1));
  const connections = Math.round(num('BENCH_CONNECTIONS', 50, 1));
  return {
    seconds,
    warmupSeconds,
    rounds,
    connections,
    only: only !== undefined && only.length > 0 ? only : undefined,
    pacing: {
      limitPerSecond: Math.round(num('BENCH_PACING_LIMIT', 25, 1)),
      // At least a steady second after the start-up one, and more to be worth measuring.
      seconds: num('BENCH_PACING_SECONDS', 10, PACING_STEADY_AFTER_SECONDS + 2),
      connections: Math.round(num('BENCH_PACING_CONNECTIONS', 50, 1)),
    },
    uploads: {
      connections: Math.round(num('BENCH_UPLOADS_CONNECTIONS', 60, 1)),
      bytes: Math.round(num('BENCH_UPLOADS_MIB', 8, 0.001) * 2 ** 20),
      holdMs: Math.round(num('BENCH_UPLOADS_HOLD_MS', 2000, 0)),
      bursts: Math.round(num('BENCH_UPLOADS_BURSTS', 1, 1)),
    },
    scaleOut: {
      limitPerSecond: scaleLimit,
      // As the pacing run: a steady second after the start-up one, and more to be worth measuring.
      seconds: num('BENCH_SCALE_SECONDS', 10, PACING_STEADY_AFTER_SECONDS + 2),
      connections: scaleConnections,
      cost: { rounds, seconds, warmupSeconds, connections },
    },
    accounts: readAccountsSettings(num),
  };
}

function selected(settings: Settings, name: string): boolean {
  return settings.only === undefined || settings.only.includes(name);
}

/** What one load-generator run gives: the timed measurement, the warm-up's figures, the steady rate if asked for. */
interface LoadOutcome {
  measurement: Measurement;
  warmup: LoadSample | undefined;
  steady: SteadyRate | undefined;
}

/**
 * Runs autocannon in a child process against one target. The CPU this process uses while the
 * timed part runs is the servers' cost (nothing else runs here meanwhile); its event-loop
 * utilisation says whether the servers were the bottleneck (near 100%) or the client was.
 */
async function runLoad(request: LoadRequest): Promise<LoadOutcome> {
  let timed: { cpu: NodeJS.CpuUsage; wall: number; loop: EventLoopUtilization } | undefined;
  let measurement: Measurement | undefined;
  const done = await runLoadChild(request, {
    onTimedStart: () => {
      timed = { cpu: process.cpuUsage(), wall: performance.now(), loop: performance.eventLoopUtilization() };
    },
    // Read when the result arrives, not when the child has exited: the timed part ends here.
    onDone: (msg) => {
      if (timed === undefined) return;
      const cpu = process.cpuUsage(timed.cpu);
      const serverCpu = (cpu.user + cpu.system) / 1000 / (performance.now() - timed.wall);
      const serverLoopBusy = performance.eventLoopUtilization(timed.loop).utilization;
      measurement = { sample: msg.sample, serverCpu, serverLoopBusy, clientCpu: msg.clientCpu };
    },
  });
  if (measurement === undefined) throw new Error('load generator answered without a timed part');
  return { measurement, warmup: done.warmup, steady: done.steady };
}

/** One measurement: start the scenario, load it, close it (also when the load fails). */
async function measure(scenario: Scenario, settings: Settings): Promise<LoadOutcome> {
  const target = await scenario.start();
  try {
    return await runLoad({
      url: target.url + REQUEST_PATH,
      headers: target.headers ?? {},
      connections: settings.connections,
      seconds: settings.seconds,
      warmupSeconds: settings.warmupSeconds,
    });
  } finally {
    await target.close();
  }
}

async function runRounds(list: Scenario[], settings: Settings): Promise<ScenarioResult[]> {
  const results: ScenarioResult[] = list.map((s) => ({ name: s.name, label: s.label, rounds: [], warmups: [] }));
  for (let round = 1; round <= settings.rounds; round++) {
    // Every other round runs the scenarios in reverse, so none always follows another.
    const order = [...list.entries()];
    if (round % 2 === 0) order.reverse();
    for (const [i, scenario] of order) {
      const { warmup, measurement } = await measure(scenario, settings);
      results[i]!.rounds.push(measurement);
      if (warmup !== undefined) results[i]!.warmups.push(warmup);
      logProgress(round, settings.rounds, scenario.name, measurement, warmup);
      // Let sockets close and the GC settle before the next scenario is timed.
      await sleep(300);
    }
  }
  return results;
}

/** One line per measurement on stderr, so a long run shows progress and stdout stays the report. */
function logProgress(
  round: number,
  rounds: number,
  name: string,
  m: Measurement,
  warmup: LoadSample | undefined,
): void {
  const s = m.sample;
  const bad = s.errors + s.timeouts + s.non2xx + (warmup ? warmup.errors + warmup.timeouts + warmup.non2xx : 0);
  const pct = (x: number): string => `${(x * 100).toFixed(0)}%`;
  console.error(
    `  round ${round}/${rounds}  ${name.padEnd(16)} ${s.requestsPerSecond.toFixed(0).padStart(7)} req/s  p50 ${s.p50Ms} ms  p99 ${s.p99Ms} ms  ` +
      `server loop ${pct(m.serverLoopBusy)} cpu ${pct(m.serverCpu)}, client cpu ${pct(m.clientCpu)}${bad > 0 ? `  (${bad} bad answers)` : ''}`,
  );
}

/**
 * The pacing run: one burst of `connections` clients, each sending its next request as soon as
 * the last is answered, through keap-proxy to a simulator that answers 429 above the limit.
 * One run, not rounds: the pace is set by keap-proxy's clock, not by how fast the machine is.
 */
async function runPacing(settings: Settings, dir: string): Promise<PacingSummary> {
  const { limitPerSecond, seconds, connections } = settings.pacing;
  const setUp = await pacedKeapProxy(dir, limitPerSecond);
  let closed = false;
  try {
    checkPacingLoad(connections, setUp);
    // Idle between here and the burst, so this is keap-proxy started and holding its grant.
    const rssBefore = process.memoryUsage.rss();
    const peak = trackPeakRss();
    const { measurement, steady } = await runLoad({
      url: setUp.url + REQUEST_PATH,
      headers: {},
      connections,
      seconds,
      // No warm-up run: its clients would leave their last requests queued in keap-proxy,
      // and those would take the timed run's first departures.
      warmupSeconds: 0,
      // The client waits longer than keap-proxy would make it, so a request over its deadline
      // shows up as keap-proxy's 429, not as a client timeout.
      timeoutSeconds: Math.ceil(setUp.deadlineMs / 1000) + 5,
      steadyAfterSeconds: PACING_STEADY_AFTER_SECONDS,
    });
    const rss = { before: rssBefore, after: process.memoryUsage.rss(), peak: peak.stop() };
    closed = true;
    const counters = await setUp.close();
    if (steady === undefined) throw new Error('the load generator did not measure the steady rate');
    return summarizePacing(
      {
        limitPerSecond,
        margin: setUp.margin,
        allowedPerSecond: setUp.allowedPerSecond,
        connections,
        seconds,
        sample: measurement.sample,
        steady,
        upstream: { calls: counters.apiCalls, throttled: counters.throttled },
        rss,
      },
      PACING_TARGET,
    );
  } finally {
    if (!closed) await setUp.close();
  }
}

/**
 * Each connection keeps one request waiting in keap-proxy's queue. Past QUEUE_LIMIT the surplus
 * would get 503 queue_full, and a queue whose wait nears the deadline 429 rate_limited: the run
 * would then measure refusals, not pacing. Half the deadline leaves room for timer lateness.
 */
function checkPacingLoad(
  connections: number,
  setUp: { allowedPerSecond: number; queueLimit: number; deadlineMs: number },
): void {
  const waitSeconds = connections / setUp.allowedPerSecond;
  if (connections >= setUp.queueLimit || waitSeconds > setUp.deadlineMs / 1000 / 2) {
    throw new Error(
      `BENCH_PACING_CONNECTIONS ${connections} would keep requests waiting ${waitSeconds.toFixed(1)} s at ${setUp.allowedPerSecond} req/s ` +
        `(QUEUE_LIMIT ${setUp.queueLimit}, deadline ${setUp.deadlineMs} ms): use fewer connections or a higher BENCH_PACING_LIMIT`,
    );
  }
}

/** Samples this process's RSS while the burst runs; stop() answers the highest seen. */
function trackPeakRss(): { stop(): number } {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage.rss());
    },
  };
}

/** Runs the uploads client (uploads-client.ts) in a child process on the helpers' core. */
function runUploadsClient(request: UploadsRequest): Promise<UploadsSample> {
  return new Promise((resolve, reject) => {
    const child = forkScript('uploads-client.js');
    let reply: UploadsMessage | undefined;
    child.once('message', (msg: UploadsMessage) => {
      reply = msg;
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (reply?.type === 'done') resolve(reply.sample);
      else
        reject(
          new Error(
            `uploads client ${reply?.type === 'failed' ? `failed: ${reply.error}` : `exited with code ${code} without a result`}`,
          ),
        );
    });
    child.send(request);
  });
}

/**
 * Linux keeps each process's RSS high-water mark (VmHWM in /proc/<pid>/status); writing 5 to
 * /proc/<pid>/clear_refs resets it. Read after the burst, it is the true peak, also one that
 * came and went between two samples. Elsewhere (or without the right) there is none: undefined.
 */
function resetKernelPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

function readKernelPeak(pid: number): number | undefined {
  try {
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb !== undefined ? Number(kb) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** From keap-proxy's /metrics: keap_proxy_body_buffer_bytes{kind="limit"|"in_use"}, and keap_proxy_requests_total by status (all routes). */
async function readKeapMetrics(
  url: string,
): Promise<{ limit: number; inUse: number; answered: Record<string, number> }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const gauge = (kind: string): number => {
    const m = new RegExp(`^keap_proxy_body_buffer_bytes\\{kind="${kind}"\\} (\\S+)$`, 'm').exec(text);
    if (m === null) throw new Error(`keap-proxy's /metrics has no keap_proxy_body_buffer_bytes{kind="${kind}"}`);
    return Number(m[1]);
  };
  const answered: Record<string, number> = {};
  for (const m of text.matchAll(/^keap_proxy_requests_total\{[^}]*status="(\d+)"[^}]*\} (\S+)$/gm)) {
    answered[m[1] as string] = (answered[m[1] as string] ?? 0) + Number(m[2]);
  }
  return { limit: gauge('limit'), inUse: gauge('in_use'), answered };
}

/** Per status, what `after` counted beyond `before`; statuses without any left out. */
function countsSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [status, n] of Object.entries(after))
    if (n - (before[status] ?? 0) > 0) out[status] = n - (before[status] ?? 0);
  return out;
}

/**
 * The uploads run, for the bare forwarder and then keap-proxy, each started fresh in a child
 * process of its own (core 0) in front of a fresh slow upstream: one small upload first (keap-proxy
 * fetches its token, both load their code), then the burst of `connections` uploads at once,
 * while the server samples its RSS; with BENCH_UPLOADS_BURSTS above 1, more bursts through the
 * same process, each after the last one's settle.
 */
async function runUploads(settings: Settings, sim: RemoteSimulator, dir: string): Promise<UploadsSummary> {
  const { connections, bytes, holdMs, bursts } = settings.uploads;
  const token = await sim.issueAccessToken();
  const runs: UploadsRun[] = [];
  for (const scenario of ['bare-forwarder', 'keap-proxy'] as const) {
    const upstream = await startSlowUpstream(holdMs);
    let server: ServerChild | undefined;
    try {
      // The upstream is Keap's API; tokens still come from the simulator (keap-proxy's token store is the bench's).
      server = await startServer({ scenario, simUrl: upstream.url, tokenUrl: sim.tokenUrl, token, dir });
      const request = (n: number, size: number): UploadsRequest => ({
        url: server!.url + UPLOAD_PATH,
        headers: server!.headers,
        connections: n,
        bytes: size,
        timeoutSeconds: Math.ceil(holdMs / 1000) + 60,
      });
      const warm = await runUploadsClient(request(1, 1024));
      if (warm.statusCodes['200'] !== 1)
        throw new Error(
          `uploads ${scenario}: the warm-up upload was answered ${JSON.stringify({ ...warm.statusCodes, ...warm.failures })}`,
        );
      await sleep(500);
      // Later bursts start from where the last one's settle left the process: what a second wave meets.
      for (let burst = 1; burst <= bursts; burst++) {
        const before = await upstream.counters();
        const keapBefore = scenario === 'keap-proxy' ? await readKeapMetrics(server.url) : undefined;
        const watched = await server.watchRss();
        const kernel = resetKernelPeak(server.pid);
        const sample = await runUploadsClient(request(connections, bytes));
        const atEnd = await server.rss();
        const kernelPeak = kernel ? readKernelPeak(server.pid) : undefined;
        await sleep(UPLOADS_SETTLE_MS);
        const settled = await server.rss();
        const keapAfter = keapBefore !== undefined ? await readKeapMetrics(server.url) : undefined;
        const after = await upstream.counters();
        const run: UploadsRun = {
          server: scenario,
          label:
            scenario === 'keap-proxy'
              ? 'keap-proxy (OAuth, pacing off, info log, body limits at their defaults)'
              : 'bare http-proxy-3 forwarder',
          burst,
          rss: { before: watched.now, peak: atEnd.peak, after: settled.now, kernelPeak },
          sample,
          upstream: {
            requests: after.requests - before.requests,
            bytes: after.bytes - before.bytes,
            aborted: after.aborted - before.aborted,
          },
          ...(keapBefore !== undefined && keapAfter !== undefined
            ? {
                bodyBuffer: { limit: keapAfter.limit, inUseAfter: keapAfter.inUse },
                answeredByServer: countsSince(keapBefore.answered, keapAfter.answered),
              }
            : {}),
        };
        runs.push(run);
        logUploadsProgress(run);
      }
    } finally {
      await server?.close();
      await upstream.close();
    }
    await sleep(300);
  }
  const replay = SETTINGS.find((s) => s.name === 'REPLAY_BODY_BYTES')?.default;
  return {
    connections,
    bytes,
    holdMs,
    settleMs: UPLOADS_SETTLE_MS,
    sampleMs: RSS_SAMPLE_MS,
    replayBodyBytes: Number(replay),
    bursts,
    runs,
  };
}

function uploadsNote(u: UploadsSummary): string {
  const lost = u.runs.reduce((n, r) => n + (lostRefusals(r) ?? 0), 0);
  return `every upload answered 200 or, through keap-proxy, 503 body_budget_exhausted${lost > 0 ? ` (${lost} of those 503s lost to a closed connection, see above)` : ''}; the body budget given back`;
}

function logUploadsProgress(r: UploadsRun): void {
  const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
  console.error(
    `  ${UPLOADS} ${r.server.padEnd(16)} #${r.burst}  RSS ${mib(r.rss.before)} before, peak ${mib(r.rss.peak)}, ${mib(r.rss.after)} after; ` +
      `statuses ${JSON.stringify(r.sample.statusCodes)} errors ${JSON.stringify(r.sample.errorCodes)}${Object.keys(r.sample.failures).length > 0 ? ` no answer ${JSON.stringify(r.sample.failures)}` : ''}`,
  );
}

function logPacingProgress(p: PacingSummary): void {
  console.error(
    `  ${PACING.padEnd(16)} ${p.steady.requestsPerSecond.toFixed(2)} req/s of ${p.allowedPerSecond.toFixed(2)} allowed, ` +
      `${p.upstream.throttled} upstream 429s, ${p.sample.non2xx} non-2xx, p50 ${p.sample.p50Ms} ms  p99 ${p.sample.p99Ms} ms`,
  );
}

async function main(): Promise<void> {
  const settings = readSettings(process.env);
  const dir = mkdtempSync(path.join(tmpdir(), 'keap-proxy-bench-'));
  const pinned = pinServerProcess();
  const sim = await startSimulator();
  let exitCode = 0;
  try {
    const all = scenarios({ sim, dir });
    const list = all.filter((s) => selected(settings, s.name));
    const pacingOn = selected(settings, PACING);
    const headToHeadOn = selected(settings, HEAD_TO_HEAD);
    const uploadsOn = selected(settings, UPLOADS);
    const scaleOutOn = selected(settings, SCALE_OUT);
    const accountsOn = selected(settings, ACCOUNTS);
    const adaptiveOn = selected(settings, ADAPTIVE);
    if (list.length === 0 && !pacingOn && !headToHeadOn && !uploadsOn && !scaleOutOn && !accountsOn && !adaptiveOn)
      throw new Error(
        `BENCH_SCENARIOS matches none of: ${[...all.map((s) => s.name), HEAD_TO_HEAD, PACING, UPLOADS, SCALE_OUT, ACCOUNTS, ADAPTIVE].join(', ')}`,
      );
    const perMeasurement = settings.warmupSeconds + settings.seconds;
    console.error(
      pinned
        ? 'servers pinned to core 0; simulator and load generator to core 1'
        : 'not pinned to cores (one core, or no taskset): expect noisier figures',
    );
    if (list.length > 0) {
      console.error(
        `keap-proxy bench: GET ${REQUEST_PATH}, ${settings.connections} connections, ${settings.rounds} rounds x ${list.length} scenarios x (${settings.warmupSeconds}s warm-up + ${settings.seconds}s), about ${Math.ceil(settings.rounds * list.length * (perMeasurement + 0.6))}s`,
      );
    }
    const results = await runRounds(list, settings);
    const summaries = results.map(summarize);
    const comparisons = compare(summaries, COMPARISONS);

    let headToHead: HeadToHeadSummary | undefined;
    if (headToHeadOn) {
      console.error(
        `head-to-head: bare forwarder and keap-proxy side by side on core 0, ${settings.rounds} rounds of ${settings.warmupSeconds}s + ${settings.seconds}s`,
      );
      headToHead = await runHeadToHead({
        sim,
        dir,
        path: REQUEST_PATH,
        rounds: settings.rounds,
        seconds: settings.seconds,
        warmupSeconds: settings.warmupSeconds,
        connections: settings.connections,
        target: 0.9,
      });
    }

    let pacing: PacingSummary | undefined;
    if (pacingOn) {
      const p = settings.pacing;
      console.error(
        `pacing: GET ${REQUEST_PATH}, ${p.connections} connections for ${p.seconds}s through keap-proxy at RATE_LIMIT_PER_SECOND ${p.limitPerSecond}, simulator answering 429 above ${p.limitPerSecond}/s`,
      );
      pacing = await runPacing(settings, dir);
      logPacingProgress(pacing);
    }

    let uploads: UploadsSummary | undefined;
    if (uploadsOn) {
      const u = settings.uploads;
      console.error(
        `uploads: ${u.connections} concurrent POSTs of ${(u.bytes / 2 ** 20).toFixed(1)} MiB to an upstream holding each answer ${u.holdMs} ms, through the bare forwarder, then keap-proxy`,
      );
      uploads = await runUploads(settings, sim, dir);
    }

    let scaleOut: ScaleOutSummary | undefined;
    if (scaleOutOn) {
      // Its own simulators and Redis: nothing the runs above counted reaches it.
      scaleOut = await runScaleOut(settings.scaleOut, dir, REQUEST_PATH);
    }

    let accounts: AccountsSummary | undefined;
    if (accountsOn) {
      // Its own simulators: the throughput runs' calls are not counted against its client.
      accounts = await runAccounts(settings.accounts, dir);
    }

    let adaptive: AdaptiveSummary | undefined;
    if (adaptiveOn) {
      // Its own simulators, allowing less than keap-proxy is configured for.
      adaptive = await runAdaptive(readAdaptiveSettings(), dir);
    }

    const headToHeadBad =
      headToHead?.rounds.some((r) => r.bare.bad + r.keap.bad > 0) === true
        ? ['head-to-head: answers other than 2xx']
        : [];
    const clientBad = [
      ...failures(summaries),
      ...headToHeadBad,
      ...(pacing !== undefined ? pacingClientFailures(pacing) : []),
      ...(scaleOut !== undefined ? scaleOutClientFailures(scaleOut) : []),
    ];
    const uploadsBad = uploads !== undefined ? uploadsFailures(uploads) : [];
    const bad = [
      ...clientBad,
      ...(pacing !== undefined ? pacingUpstreamFailures(pacing) : []),
      ...uploadsBad,
      ...(scaleOut !== undefined ? scaleOutUpstreamFailures(scaleOut) : []),
      ...(accounts !== undefined ? accountsFailures(accounts) : []),
      ...(adaptive !== undefined ? adaptiveFailures(adaptive) : []),
    ];

    if (summaries.length > 0) console.log('\n' + formatTable(summaries, comparisons));
    if (headToHead !== undefined) console.log('\n' + formatHeadToHead(headToHead));
    if (pacing !== undefined) console.log('\n' + formatPacing(pacing));
    if (uploads !== undefined) console.log('\n' + formatUploads(uploads));
    if (scaleOut !== undefined) console.log('\n' + formatScaleOut(scaleOut));
    if (accounts !== undefined) console.log('\n' + formatAccounts(accounts));
    if (adaptive !== undefined) console.log('\n' + formatAdaptive(adaptive));
    if (bad.length > 0) {
      console.log(
        `\nFAILED: responses other than 2xx (figures not valid), 429s from the simulator, uploads answered otherwise than expected, replicas not pacing through Redis, or accounts answered otherwise than 2xx:\n  ${bad.join('\n  ')}`,
      );
      exitCode = 1;
    } else {
      const throughputRan =
        summaries.length > 0 || headToHead !== undefined || pacing !== undefined || scaleOut !== undefined;
      const notes = [
        ...(throughputRan ? ['all responses 2xx (no errors, timeouts or non-2xx)'] : []),
        ...(pacing !== undefined ? ['the simulator never answered 429 to the pacing run'] : []),
        ...(scaleOut !== undefined
          ? [
              `the scale-out replicas drew ${scaleOut.globalLimit.upstream.throttled} 429s from the simulator (at most ${scaleOut.globalLimit.maxUpstream429} allowed) and paced through Redis all along`,
            ]
          : []),
        ...(uploads !== undefined ? [uploadsNote(uploads)] : []),
        ...(accounts !== undefined
          ? ['every accounts request answered 2xx, and the simulator never answered 429 to the accounts run']
          : []),
      ];
      console.log(`\n${notes.join('; ')}`);
    }

    const file = writeResults({
      settings,
      summaries,
      comparisons,
      headToHead,
      pacing,
      uploads,
      scaleOut,
      accounts,
      adaptive,
      bad,
      allResponses2xx: clientBad.length === 0,
    });
    console.log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  }
  process.exitCode = exitCode;
}

function writeResults(data: {
  settings: Settings;
  summaries: ScenarioSummary[];
  comparisons: ComparisonResult[];
  headToHead: HeadToHeadSummary | undefined;
  pacing: PacingSummary | undefined;
  uploads: UploadsSummary | undefined;
  scaleOut: ScaleOutSummary | undefined;
  accounts: AccountsSummary | undefined;
  adaptive: AdaptiveSummary | undefined;
  bad: string[];
  allResponses2xx: boolean;
}): string {
  // Next to the sources (bench/results/), not in dist/, which a clean build wipes.
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'latest.json');
  const json = {
    generatedAt: new Date().toISOString(),
    machine: {
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
    },
    settings: { path: REQUEST_PATH, method: 'GET', pipelining: 1, ...data.settings },
    scenarios: data.summaries,
    comparisons: data.comparisons,
    headToHead: data.headToHead ?? null,
    pacing: data.pacing ?? null,
    uploads: data.uploads ?? null,
    scaleOut: data.scaleOut ?? null,
    accounts: data.accounts ?? null,
    adaptive: data.adaptive ?? null,
    allResponses2xx: data.allResponses2xx,
    problems: data.bad,
  };
  writeFileSync(file, JSON.stringify(json, null, 2) + '\n');
  return file;
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : err);
  process.exitCode = 1;
});
