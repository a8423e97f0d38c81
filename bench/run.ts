// `npm run build && npm run bench`: how much throughput keap-proxy gives up against a bare
// http-proxy-3 forwarder and against no proxy at all, on loopback, against the simulator.
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
// BENCH_WARMUP_SECONDS (default 1), BENCH_ROUNDS (default 10), BENCH_CONNECTIONS (default 50),
// BENCH_SCENARIOS (comma-separated names to run, default all).
//
// Output: the table on stdout (progress on stderr), the same figures in bench/results/latest.json.
// Exit status 1 when any answer was not 2xx (the figures would be meaningless) or the run broke;
// a missed throughput target is reported as FAIL in the verdict but does not change the status.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { forkScript, pinServerProcess, startSimulator } from './processes.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EventLoopUtilization } from 'node:perf_hooks';
import type { LoadMessage, LoadRequest, LoadSample } from './load.js';
import { bareForwarder, direct, keapProxy, type BenchContext, type Scenario } from './scenarios.js';
import {
  compare,
  failures,
  formatTable,
  summarize,
  type Comparison,
  type ComparisonResult,
  type Measurement,
  type ScenarioResult,
  type ScenarioSummary,
} from './report.js';

const REQUEST_PATH = '/crm/rest/v1/contacts';

interface Settings {
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  connections: number;
  only: string[] | undefined;
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
    warmupSeconds: num('BENCH_WARMUP_SECONDS', 1, 0),
    rounds: Math.round(num('BENCH_ROUNDS', 10, 1)),
    connections: Math.round(num('BENCH_CONNECTIONS', 50, 1)),
    only: only !== undefined && only.length > 0 ? only : undefined,
  };
}

/**
 * Runs autocannon in a child process against one target. The CPU this process uses while the
 * timed part runs is the servers' cost (nothing else runs here meanwhile); its event-loop
 * utilisation says whether the servers were the bottleneck (near 100%) or the client was.
 */
function runLoad(request: LoadRequest): Promise<Measurement & { warmup: LoadSample | undefined }> {
  return new Promise((resolve, reject) => {
    const child = forkScript('load.js');
    let timed: { cpu: NodeJS.CpuUsage; wall: number; loop: EventLoopUtilization } | undefined;
    let result: (Measurement & { warmup: LoadSample | undefined }) | undefined;
    let failure: string | undefined;
    child.on('message', (msg: LoadMessage) => {
      if (msg.type === 'timed-start') {
        timed = { cpu: process.cpuUsage(), wall: performance.now(), loop: performance.eventLoopUtilization() };
      } else if (msg.type === 'done' && timed !== undefined) {
        const cpu = process.cpuUsage(timed.cpu);
        const serverCpu = (cpu.user + cpu.system) / 1000 / (performance.now() - timed.wall);
        const serverLoopBusy = performance.eventLoopUtilization(timed.loop).utilization;
        result = { sample: msg.sample, warmup: msg.warmup, serverCpu, serverLoopBusy, clientCpu: msg.clientCpu };
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
async function measure(scenario: Scenario, settings: Settings): Promise<Measurement & { warmup: LoadSample | undefined }> {
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
      const { warmup, ...measurement } = await measure(scenario, settings);
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

async function main(): Promise<void> {
  const settings = readSettings(process.env);
  const dir = mkdtempSync(path.join(tmpdir(), 'keap-proxy-bench-'));
  const pinned = pinServerProcess();
  const sim = await startSimulator();
  let exitCode = 0;
  try {
    const all = scenarios({ sim, dir });
    const list = settings.only === undefined ? all : all.filter((s) => settings.only!.includes(s.name));
    if (list.length === 0) throw new Error(`BENCH_SCENARIOS matches none of: ${all.map((s) => s.name).join(', ')}`);
    const perMeasurement = settings.warmupSeconds + settings.seconds;
    console.error(pinned ? 'servers pinned to core 0; simulator and load generator to core 1' : 'not pinned to cores (one core, or no taskset): expect noisier figures');
    console.error(`keap-proxy bench: GET ${REQUEST_PATH}, ${settings.connections} connections, ${settings.rounds} rounds x ${list.length} scenarios x (${settings.warmupSeconds}s warm-up + ${settings.seconds}s), about ${Math.ceil(settings.rounds * list.length * (perMeasurement + 0.6))}s`);

    const results = await runRounds(list, settings);
    const summaries = results.map(summarize);
    const comparisons = compare(summaries, COMPARISONS);
    const bad = failures(summaries);

    console.log('');
    console.log(formatTable(summaries, comparisons));
    if (bad.length > 0) {
      console.log(`\nFAILED: responses other than 2xx, figures not valid:\n  ${bad.join('\n  ')}`);
      exitCode = 1;
    } else {
      console.log('\nall responses 2xx (no errors, timeouts or non-2xx)');
    }

    const file = writeResults({ settings, summaries, comparisons, bad });
    console.log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  }
  process.exitCode = exitCode;
}

function writeResults(data: { settings: Settings; summaries: ScenarioSummary[]; comparisons: ComparisonResult[]; bad: string[] }): string {
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
    allResponses2xx: data.bad.length === 0,
    problems: data.bad,
  };
  writeFileSync(file, JSON.stringify(json, null, 2) + '\n');
  return file;
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : err);
  process.exitCode = 1;
});
