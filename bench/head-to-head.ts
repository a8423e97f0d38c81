// The bare forwarder and keap-proxy, each in its own process on the same core, loaded at
// the same time by two load generators. The scheduler shares the core between the two
// servers, so each one's throughput (and CPU per request) is measured under the very same
// conditions; the sequential rounds of run.ts cannot promise that on a shared VM whose
// speed drifts within seconds.
//
// Every round starts both servers afresh, in alternating order: one process keeps what its
// JIT decided and where its memory landed for its whole life, and two runs of the same
// server side by side differed by up to 5% for the life of the pair. New processes each
// round turn that into noise the median over rounds absorbs.
import type { ChildProcess } from 'node:child_process';
import { forkScript, runLoadChild, SERVER_CORE_ID, type RemoteSimulator } from './processes.js';
import type { ServerMessage, ServerOptions, ServerRequest } from './server-process.js';
import type { LoadRequest, LoadSample } from './load.js';
import { median } from './report.js';

export interface HeadToHeadFigures {
  requestsPerSecond: number;
  cpuUsPerRequest: number;
  p50Ms: number;
  p99Ms: number;
  bad: number;
  /** The server process's highest RSS sampled (every RSS_SAMPLE_MS) while loaded, warm-up included; bytes. */
  rssPeak: number;
}

export interface HeadToHeadRound {
  bare: HeadToHeadFigures;
  keap: HeadToHeadFigures;
}

export interface HeadToHeadSummary {
  rounds: HeadToHeadRound[];
  /** Median over rounds of keap-proxy's req/s over the bare forwarder's, measured side by side. */
  throughputRatio: number;
  /** Median over rounds of the bare forwarder's CPU per request over keap-proxy's. */
  costRatio: number;
  target: number;
  met: boolean;
}

export interface ServerChild {
  url: string;
  headers: Record<string, string>;
  /** The child's process id (the uploads scenario reads its kernel RSS high-water mark by it). */
  pid: number;
  cpu(): Promise<NodeJS.CpuUsage>;
  /** Starts the child's RSS sampling afresh (peak = now). */
  watchRss(): Promise<{ now: number; peak: number }>;
  /** The child's RSS now and the highest sampled since watchRss. */
  rss(): Promise<{ now: number; peak: number }>;
  /** The child's RSS and V8 heap in use, after a full GC when started with exposeGc. */
  memory(): Promise<{ rss: number; heapUsed: number }>;
  close(): Promise<void>;
}

/** Starts one server (bare forwarder or keap-proxy) in a child process on the servers' core. */
export function startServer(options: ServerOptions): Promise<ServerChild> {
  const child: ChildProcess = forkScript(
    'server-process.js',
    { BENCH_SERVER: JSON.stringify(options) },
    SERVER_CORE_ID,
    options.exposeGc === true ? ['--expose-gc'] : [],
  );
  const send = (msg: ServerRequest): void => {
    child.send(msg);
  };
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${options.scenario} server exited with code ${code}`)));
    const cpuWaiters: ((u: NodeJS.CpuUsage) => void)[] = [];
    const rssWaiters: ((r: { now: number; peak: number }) => void)[] = [];
    const memoryWaiters: ((m: { rss: number; heapUsed: number }) => void)[] = [];
    const askRss = (type: 'rss-watch' | 'rss'): Promise<{ now: number; peak: number }> =>
      new Promise((done) => {
        rssWaiters.push(done);
        send({ type });
      });
    child.on('message', (msg: ServerMessage) => {
      if (msg.type === 'cpu') {
        cpuWaiters.shift()?.(msg.usage);
        return;
      }
      if (msg.type === 'rss') {
        rssWaiters.shift()?.({ now: msg.now, peak: msg.peak });
        return;
      }
      if (msg.type === 'memory') {
        memoryWaiters.shift()?.({ rss: msg.rss, heapUsed: msg.heapUsed });
        return;
      }
      resolve({
        url: msg.url,
        headers: msg.headers,
        pid: child.pid ?? 0,
        cpu: () =>
          new Promise((done) => {
            cpuWaiters.push(done);
            send({ type: 'cpu' });
          }),
        watchRss: () => askRss('rss-watch'),
        rss: () => askRss('rss'),
        memory: () =>
          new Promise((done) => {
            memoryWaiters.push(done);
            send({ type: 'memory' });
          }),
        close: () =>
          new Promise((done) => {
            child.removeAllListeners('exit');
            child.once('exit', () => done());
            send({ type: 'close' });
          }),
      });
    });
  });
}

/** Loads one server; the server's CPU is read when the timed part starts and when it ends. */
async function loadOne(server: ServerChild, request: LoadRequest): Promise<{ sample: LoadSample; cpuUs: number }> {
  let cpuAtStart: Promise<NodeJS.CpuUsage> | undefined;
  let cpuAtEnd: Promise<NodeJS.CpuUsage> | undefined;
  const done = await runLoadChild(request, {
    onTimedStart: () => {
      cpuAtStart = server.cpu();
    },
    onDone: () => {
      cpuAtEnd = server.cpu();
    },
  });
  const [a, b] = await Promise.all([cpuAtStart ?? server.cpu(), cpuAtEnd ?? server.cpu()]);
  return { sample: done.sample, cpuUs: b.user + b.system - (a.user + a.system) };
}

export async function runHeadToHead(opts: {
  sim: RemoteSimulator;
  dir: string;
  path: string;
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  connections: number;
  target: number;
}): Promise<HeadToHeadSummary> {
  const token = await opts.sim.issueAccessToken();
  const base = { simUrl: opts.sim.url, tokenUrl: opts.sim.tokenUrl, token, dir: opts.dir };
  const rounds: HeadToHeadRound[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    // keap-proxy's token store lives in opts.dir, so each start loads the grant the last one stored.
    const start = (scenario: ServerOptions['scenario']): Promise<ServerChild> => startServer({ ...base, scenario });
    let bare: ServerChild;
    let keap: ServerChild;
    if (round % 2 === 1) {
      bare = await start('bare-forwarder');
      keap = await start('keap-proxy');
    } else {
      keap = await start('keap-proxy');
      bare = await start('bare-forwarder');
    }
    try {
      const request = (s: ServerChild): LoadRequest => ({
        url: s.url + opts.path,
        headers: s.headers,
        connections: opts.connections,
        seconds: opts.seconds,
        warmupSeconds: opts.warmupSeconds,
      });
      await Promise.all([bare.watchRss(), keap.watchRss()]);
      const [b, k] = await Promise.all([loadOne(bare, request(bare)), loadOne(keap, request(keap))]);
      const [bareRss, keapRss] = await Promise.all([bare.rss(), keap.rss()]);
      const figures = (r: { sample: LoadSample; cpuUs: number }, rss: { peak: number }): HeadToHeadFigures => ({
        requestsPerSecond: r.sample.requestsPerSecond,
        cpuUsPerRequest: r.sample.completed > 0 ? r.cpuUs / r.sample.completed : NaN,
        p50Ms: r.sample.p50Ms,
        p99Ms: r.sample.p99Ms,
        bad: r.sample.errors + r.sample.timeouts + r.sample.non2xx,
        rssPeak: rss.peak,
      });
      rounds.push({ bare: figures(b, bareRss), keap: figures(k, keapRss) });
      const last = rounds[rounds.length - 1] as HeadToHeadRound;
      console.error(
        `  head-to-head ${round}/${opts.rounds}  bare ${last.bare.requestsPerSecond.toFixed(0)} req/s ${last.bare.cpuUsPerRequest.toFixed(0)} µs/req, keap-proxy ${last.keap.requestsPerSecond.toFixed(0)} req/s ${last.keap.cpuUsPerRequest.toFixed(0)} µs/req, RSS peak ${(last.keap.rssPeak / 2 ** 20).toFixed(1)} MiB`,
      );
    } finally {
      await Promise.all([bare.close(), keap.close()]);
    }
  }
  const throughputRatio = median(rounds.map((r) => r.keap.requestsPerSecond / r.bare.requestsPerSecond));
  const costRatio = median(rounds.map((r) => r.bare.cpuUsPerRequest / r.keap.cpuUsPerRequest));
  return { rounds, throughputRatio, costRatio, target: opts.target, met: throughputRatio >= opts.target };
}

export function formatHeadToHead(h: HeadToHeadSummary): string {
  const med = (pick: (r: HeadToHeadRound) => number): string => median(h.rounds.map(pick)).toFixed(0);
  const mib = (pick: (r: HeadToHeadRound) => number): string => (median(h.rounds.map(pick)) / 2 ** 20).toFixed(1);
  const max = (pick: (r: HeadToHeadRound) => number): string => (Math.max(...h.rounds.map(pick)) / 2 ** 20).toFixed(1);
  return [
    `head-to-head: bare forwarder and keap-proxy in two processes sharing core 0, loaded at the same time (${h.rounds.length} rounds)`,
    `  bare forwarder  ${med((r) => r.bare.requestsPerSecond)} req/s  ${med((r) => r.bare.cpuUsPerRequest)} µs CPU/req  p50 ${med((r) => r.bare.p50Ms)} ms  p99 ${med((r) => r.bare.p99Ms)} ms  RSS peak ${mib((r) => r.bare.rssPeak)} MiB (highest ${max((r) => r.bare.rssPeak)})`,
    `  keap-proxy      ${med((r) => r.keap.requestsPerSecond)} req/s  ${med((r) => r.keap.cpuUsPerRequest)} µs CPU/req  p50 ${med((r) => r.keap.p50Ms)} ms  p99 ${med((r) => r.keap.p99Ms)} ms  RSS peak ${mib((r) => r.keap.rssPeak)} MiB (highest ${max((r) => r.keap.rssPeak)})`,
    `  keap-proxy / bare forwarder, throughput  ${h.throughputRatio.toFixed(3)}x  (per round ${h.rounds.map((r) => (r.keap.requestsPerSecond / r.bare.requestsPerSecond).toFixed(2)).join(' / ')})  ${h.met ? 'PASS' : 'FAIL'} (target >= ${h.target}x)`,
    `  bare forwarder / keap-proxy, CPU per request  ${h.costRatio.toFixed(3)}x`,
  ].join('\n');
}
