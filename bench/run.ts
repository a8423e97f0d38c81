// `npm run build && npm run bench`: how much throughput keap-proxy gives up against a bare
// http-proxy-3 forwarder and against no proxy at all, on loopback, against the simulator;
// then ("pacing") how close keap-proxy with pacing on gets to the rate it allows itself
// under a burst far beyond it, and whether Keap (a simulator enforcing the spike limit)
// ever has to answer 429.
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
// keap-proxy, pacing). Pacing: BENCH_PACING_LIMIT (the spike limit, default 25 = Keap's for
// OAuth), BENCH_PACING_SECONDS (burst length, default 10), BENCH_PACING_CONNECTIONS (default 50).
//
// Output: the table on stdout (progress on stderr), the same figures in bench/results/latest.json.
// Exit status 1 when any answer was not 2xx (the figures would be meaningless), when the
// simulator had to answer 429 during the pacing run, or the run broke; a missed throughput or
// pacing target is reported as FAIL in the verdict but does not change the status.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { forkScript, pinServerProcess, startSimulator } from './processes.js';
import { formatHeadToHead, runHeadToHead, type HeadToHeadSummary } from './head-to-head.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EventLoopUtilization } from 'node:perf_hooks';
import type { LoadMessage, LoadRequest, LoadSample, SteadyRate } from './load.js';
import { bareForwarder, direct, keapProxy, pacedKeapProxy, type BenchContext, type Scenario } from './scenarios.js';
import {
  compare,
  failures,
  formatPacing,
  formatTable,
  pacingClientFailures,
  pacingUpstreamFailures,
  summarize,
  summarizePacing,
  type Comparison,
  type ComparisonResult,
  type Measurement,
  type PacingSummary,
  type PacingTarget,
  type ScenarioResult,
  type ScenarioSummary,
} from './report.js';

const REQUEST_PATH = '/crm/rest/v1/contacts';

/** The pacing run's name in BENCH_SCENARIOS and the JSON. */
const PACING = 'pacing';
const HEAD_TO_HEAD = 'head-to-head';
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
  const only = env.BENCH_SCENARIOS?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return {
    seconds: num('BENCH_SECONDS', 2, 1),
    warmupSeconds: num('BENCH_WARMUP_SECONDS', 3, 0),
    rounds: Math.round(num('BENCH_ROUNDS', 10, 1)),
    connections: Math.round(num('BENCH_CONNECTIONS', 50, 1)),
    only: only !== undefined && only.length > 0 ? only : undefined,
    pacing: {
      limitPerSecond: Math.round(num('BENCH_PACING_LIMIT', 25, 1)),
      // At least a steady second after the start-up one, and more to be worth measuring.
      seconds: num('BENCH_PACING_SECONDS', 10, PACING_STEADY_AFTER_SECONDS + 2),
      connections: Math.round(num('BENCH_PACING_CONNECTIONS', 50, 1)),
    },
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
function runLoad(request: LoadRequest): Promise<LoadOutcome> {
  return new Promise((resolve, reject) => {
    const child = forkScript('load.js');
    let timed: { cpu: NodeJS.CpuUsage; wall: number; loop: EventLoopUtilization } | undefined;
    let result: LoadOutcome | undefined;
    let failure: string | undefined;
    child.on('message', (msg: LoadMessage) => {
      if (msg.type === 'timed-start') {
        timed = { cpu: process.cpuUsage(), wall: performance.now(), loop: performance.eventLoopUtilization() };
      } else if (msg.type === 'done' && timed !== undefined) {
        const cpu = process.cpuUsage(timed.cpu);
        const serverCpu = (cpu.user + cpu.system) / 1000 / (performance.now() - timed.wall);
        const serverLoopBusy = performance.eventLoopUtilization(timed.loop).utilization;
        result = { measurement: { sample: msg.sample, serverCpu, serverLoopBusy, clientCpu: msg.clientCpu }, warmup: msg.warmup, steady: msg.steady };
      } else if (msg.type === 'failed') {
        failure = msg.error;
      }
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (result !== undefined) resolve(result);
      else reject(new Error(`load generator ${failure !== undefined ? `failed: ${failure}` : `exited with code ${code} without a result`}`));
    });
    child.send(request);
  });
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
function logProgress(round: number, rounds: number, name: string, m: Measurement, warmup: LoadSample | undefined): void {
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
function checkPacingLoad(connections: number, setUp: { allowedPerSecond: number; queueLimit: number; deadlineMs: number }): void {
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
    if (list.length === 0 && !pacingOn && !headToHeadOn) throw new Error(`BENCH_SCENARIOS matches none of: ${[...all.map((s) => s.name), HEAD_TO_HEAD, PACING].join(', ')}`);
    const perMeasurement = settings.warmupSeconds + settings.seconds;
    console.error(pinned ? 'servers pinned to core 0; simulator and load generator to core 1' : 'not pinned to cores (one core, or no taskset): expect noisier figures');
    if (list.length > 0) {
      console.error(`keap-proxy bench: GET ${REQUEST_PATH}, ${settings.connections} connections, ${settings.rounds} rounds x ${list.length} scenarios x (${settings.warmupSeconds}s warm-up + ${settings.seconds}s), about ${Math.ceil(settings.rounds * list.length * (perMeasurement + 0.6))}s`);
    }
    const results = await runRounds(list, settings);
    const summaries = results.map(summarize);
    const comparisons = compare(summaries, COMPARISONS);

    let headToHead: HeadToHeadSummary | undefined;
    if (headToHeadOn) {
      console.error(`head-to-head: bare forwarder and keap-proxy side by side on core 0, ${settings.rounds} rounds of ${settings.warmupSeconds}s + ${settings.seconds}s`);
      headToHead = await runHeadToHead({ sim, dir, path: REQUEST_PATH, rounds: settings.rounds, seconds: settings.seconds, warmupSeconds: settings.warmupSeconds, connections: settings.connections, target: 0.9 });
    }

    let pacing: PacingSummary | undefined;
    if (pacingOn) {
      const p = settings.pacing;
      console.error(`pacing: GET ${REQUEST_PATH}, ${p.connections} connections for ${p.seconds}s through keap-proxy at RATE_LIMIT_PER_SECOND ${p.limitPerSecond}, simulator answering 429 above ${p.limitPerSecond}/s`);
      pacing = await runPacing(settings, dir);
      logPacingProgress(pacing);
    }

    const headToHeadBad = headToHead?.rounds.some((r) => r.bare.bad + r.keap.bad > 0) === true ? ['head-to-head: answers other than 2xx'] : [];
    const clientBad = [...failures(summaries), ...headToHeadBad, ...(pacing !== undefined ? pacingClientFailures(pacing) : [])];
    const bad = [...clientBad, ...(pacing !== undefined ? pacingUpstreamFailures(pacing) : [])];

    if (summaries.length > 0) console.log('\n' + formatTable(summaries, comparisons));
    if (headToHead !== undefined) console.log('\n' + formatHeadToHead(headToHead));
    if (pacing !== undefined) console.log('\n' + formatPacing(pacing));
    if (bad.length > 0) {
      console.log(`\nFAILED: responses other than 2xx (figures not valid) or 429s from the simulator:\n  ${bad.join('\n  ')}`);
      exitCode = 1;
    } else {
      console.log(`\nall responses 2xx (no errors, timeouts or non-2xx)${pacing !== undefined ? '; the simulator never answered 429' : ''}`);
    }

    const file = writeResults({ settings, summaries, comparisons, headToHead, pacing, bad, allResponses2xx: clientBad.length === 0 });
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
  bad: string[];
  allResponses2xx: boolean;
}): string {
  // Next to the sources (bench/results/), not in dist/, which a clean build wipes.
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'latest.json');
  const json = {
    generatedAt: new Date().toISOString(),
    machine: { node: process.version, platform: process.platform, arch: process.arch, cpus: cpus().length, cpuModel: cpus()[0]?.model },
    settings: { path: REQUEST_PATH, method: 'GET', pipelining: 1, ...data.settings },
    scenarios: data.summaries,
    comparisons: data.comparisons,
    headToHead: data.headToHead ?? null,
    pacing: data.pacing ?? null,
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
