// `npm run build && node dist/bench/pacing-cluster.js`: can bottleneck's Redis clustering
// hold Keap's windows across replicas, or does global pacing need a gate of its own (a Lua
// script, src/pacing/redis-gate.ts)? Three limiters in this process, each on its own Redis
// connections (as three replicas would be), against a redis-server started here on a spare
// loopback port, each with a backlog it never lets run dry:
//
// - spacing: RATE/s and MINUTE/min for SECONDS s: departures, the rate achieved against the
//   rate allowed, the most departures in any 1 s and the smallest gap between two departures.
// - minute: the same limits with the backlog arriving WAIT s after the limiters started (the
//   worst moment for a reservoir refilled every 60 s: it runs dry just before its refill), for
//   75 s: the most departures in any rolling 60 s, against MINUTE.
// - day: where each puts the end of its day (bottleneck: 24 h after its reservoir was made).
// - keys lost: the spacing run again for 6 s with every key of the limiters deleted after 2 s
//   (a Redis restarted without persistence, an eviction, an operator): departures before and
//   after, and errors.
//
// Settings (environment): BENCH_CLUSTER_RATE (default 20), BENCH_CLUSTER_MINUTE (300),
// BENCH_CLUSTER_MARGIN (the Lua gate's RATE_LIMIT_MARGIN, default 1: no late allowance, as bottleneck has none),
// BENCH_CLUSTER_SECONDS (10), BENCH_CLUSTER_SCENARIOS (comma-separated: spacing, minute, day,
// keys; default all). Figures on stdout, as a table; exit status 1 when the run broke.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import Bottleneck from 'bottleneck';
import { Redis } from 'ioredis';
import { createLogger } from '../src/observability/log.js';
import { QuotaPacer } from '../src/pacing/pacer.js';
import { RedisGate, pacingRedisOptions } from '../src/pacing/redis-gate.js';
import type { Booking, PaceLimits } from '../src/pacing/gate.js';

const RATE = Number(process.env.BENCH_CLUSTER_RATE ?? 20);
const MINUTE_CAP = Number(process.env.BENCH_CLUSTER_MINUTE ?? 300);
const SECONDS = Number(process.env.BENCH_CLUSTER_SECONDS ?? 10);
/** The Lua gate's margin: it paces to RATE all the same (perSecond RATE ÷ margin), with a late allowance of (1 - margin) ÷ 2 spacings. */
const MARGIN = Number(process.env.BENCH_CLUSTER_MARGIN ?? 1);
const SCENARIOS = (process.env.BENCH_CLUSTER_SCENARIOS ?? 'spacing,minute,day,keys').split(',');
const REPLICAS = 3;
/** Jobs each replica keeps waiting. */
const BACKLOG = 20;
const MINUTE = 60_000;

interface Replica {
  /** Resolves when one more call may leave (rejects when the limiter stops). */
  take(): Promise<void>;
  stop(): Promise<void>;
}

interface Contender {
  name: string;
  /** Three replicas sharing one budget named `id`; `booked`, when the limiter says, gets each departure as it booked it. */
  replicas(id: string, port: number, booked?: number[]): Promise<Replica[]>;
  /** Keys of budget `id`, for the keys-lost run. */
  keys(id: string): string;
}

const bottleneckCluster: Contender = {
  name: 'bottleneck cluster (minTime + reservoir refreshed every 60 s)',
  async replicas(id, port) {
    const made = Array.from({ length: REPLICAS }, () => {
      const limiter = new Bottleneck({
        id,
        datastore: 'ioredis',
        Redis,
        clientOptions: { host: '127.0.0.1', port },
        clearDatastore: false,
        maxConcurrent: null,
        minTime: 1000 / RATE,
        reservoir: MINUTE_CAP,
        reservoirRefreshAmount: MINUTE_CAP,
        reservoirRefreshInterval: MINUTE,
      });
      limiter.on('error', (err: unknown) => errors.push(`bottleneck: ${String(err)}`));
      return limiter;
    });
    await Promise.all(made.map((l) => l.ready()));
    return made.map((l) => ({
      take: () => l.schedule(() => Promise.resolve()),
      stop: () => l.stop({ dropWaitingJobs: true }).then(() => l.disconnect()),
    }));
  },
  keys: (id) => `b_${id}_*`,
};

const luaGate: Contender = {
  name: 'Lua gate (RedisGate: GCRA slot + rolling minute + UTC day)',
  async replicas(id, port, booked) {
    const limits: PaceLimits = {
      perSecond: RATE / MARGIN,
      perMinute: MINUTE_CAP / MARGIN,
      perDay: 1_000_000_000,
      tenantPerMinute: 1_000_000_000,
      tenantPerDay: 1_000_000_000,
      margin: MARGIN,
      queueLimit: 10_000,
    };
    const logger = createLogger('warn');
    const made = Array.from({ length: REPLICAS }, () => {
      const client = new Redis({ host: '127.0.0.1', port, ...pacingRedisOptions() });
      const gate = new RecordingGate(limits, logger, { redis: client, prefix: 'bench:', key: id, replicas: REPLICAS });
      gate.booked = booked;
      return { client, pacer: new QuotaPacer(limits, logger, Date.now, gate) };
    });
    await Promise.all(
      made.map(({ client }) => (client.status === 'ready' ? Promise.resolve() : once(client, 'ready'))),
    );
    return made.map(({ client, pacer }) => ({
      take: () => pacer.acquire(Date.now() + 10 * MINUTE, 'new'),
      stop: async () => {
        await pacer.stop();
        client.disconnect();
      },
    }));
  },
  keys: (id) => `bench:pace:{${id}}:*`,
};

/** A RedisGate that notes each departure as Redis booked it (Redis's clock). */
class RecordingGate extends RedisGate {
  booked: number[] | undefined;
  override async book(now: number): Promise<Booking> {
    const b = await super.book(now);
    if (b.kind === 'go') this.booked?.push(b.at);
    return b;
  }
}

const errors: string[] = [];

/** Departure times (ms, one clock for all three replicas) while each keeps a backlog, for `ms`. */
async function hammer(replicas: Replica[], ms: number, during?: () => Promise<void>): Promise<number[]> {
  const departures: number[] = [];
  let running = true;
  const feed = async (r: Replica): Promise<void> => {
    while (running) {
      try {
        await r.take();
      } catch (err) {
        // A limiter that failed once may recover: try again after a pause, as a client would.
        if (running) errors.push(String(err));
        await sleep(20);
        continue;
      }
      if (running) departures.push(performance.timeOrigin + performance.now());
    }
  };
  const feeders = replicas.flatMap((r) => Array.from({ length: BACKLOG }, () => feed(r)));
  await Promise.all([sleep(ms), during?.()]);
  running = false;
  await Promise.all(replicas.map((r) => r.stop()));
  await Promise.all(feeders);
  return departures.sort((a, b) => a - b);
}

/** The most departures in any window of `ms` (each window starting at a departure). */
function maxInWindow(t: number[], ms: number): number {
  let best = 0;
  let j = 0;
  for (let i = 0; i < t.length; i++) {
    while (j < t.length && (t[j] as number) < (t[i] as number) + ms) j++;
    best = Math.max(best, j - i);
  }
  return best;
}

function spacingFigures(t: number[]): Record<string, string> {
  const gaps = t.slice(1).map((x, i) => x - (t[i] as number));
  const span = (t.at(-1) ?? 0) - (t[0] ?? 0);
  return {
    departures: String(t.length),
    'rate achieved/s': span > 0 ? (((t.length - 1) * 1000) / span).toFixed(2) : '-',
    'allowed/s': String(RATE),
    'max in any 1 s': String(maxInWindow(t, 1000)),
    'min gap ms': gaps.length > 0 ? Math.min(...gaps).toFixed(1) : '-',
    'gaps < 1000/rate - 1 ms': String(gaps.filter((g) => g < 1000 / RATE - 1).length),
  };
}

async function spacing(c: Contender, port: number): Promise<Array<[string, Record<string, string>]>> {
  const booked: number[] = [];
  const t = await hammer(await c.replicas(`spacing-${Date.now()}`, port, booked), SECONDS * 1000);
  const rows: Array<[string, Record<string, string>]> = [[`${c.name}: as the calls left`, spacingFigures(t)]];
  if (booked.length > 0) rows.push([`${c.name}: as Redis booked them`, spacingFigures(booked.sort((a, b) => a - b))]);
  return rows;
}

async function minute(c: Contender, port: number): Promise<Array<[string, Record<string, string>]>> {
  const booked: number[] = [];
  const replicas = await c.replicas(`minute-${Date.now()}`, port, booked);
  // The backlog arrives when a reservoir made now would run dry just before its refill.
  const wait = MINUTE - (MINUTE_CAP / RATE) * 1000 - 500;
  await sleep(wait);
  const figures = (t: number[]): Record<string, string> => ({
    'backlog from': `${(wait / 1000).toFixed(1)} s`,
    departures: String(t.length),
    'max in any rolling 60 s': String(maxInWindow(t, MINUTE)),
    'cap per minute': String(MINUTE_CAP),
    'max in any 1 s': String(maxInWindow(t, 1000)),
  });
  const t = await hammer(replicas, 75_000);
  const rows: Array<[string, Record<string, string>]> = [[`${c.name}: as the calls left`, figures(t)]];
  if (booked.length > 0) rows.push([`${c.name}: as Redis booked them`, figures(booked.sort((a, b) => a - b))]);
  return rows;
}

async function day(port: number): Promise<Record<string, string>> {
  const client = new Redis({ host: '127.0.0.1', port });
  try {
    const id = `day-${Date.now()}`;
    const l = new Bottleneck({
      id,
      datastore: 'ioredis',
      Redis,
      clientOptions: { host: '127.0.0.1', port },
      reservoir: 1000,
      reservoirRefreshAmount: 1000,
      reservoirRefreshInterval: 24 * 60 * MINUTE,
    });
    await l.ready();
    const last = Number(await client.hget(`b_${id}_settings`, 'lastReservoirRefresh'));
    await l.disconnect();
    const next = new Date(last + 24 * 60 * MINUTE).toISOString();
    const midnight = new Date((Math.floor(Date.now() / (24 * 60 * MINUTE)) + 1) * 24 * 60 * MINUTE).toISOString();
    return { 'bottleneck day ends': next, 'Keap day ends': midnight };
  } finally {
    client.disconnect();
  }
}

async function keysLost(c: Contender, port: number): Promise<Record<string, string>> {
  const id = `keys-${Date.now()}`;
  const client = new Redis({ host: '127.0.0.1', port });
  const before = errors.length;
  let deletedAt = 0;
  try {
    const t = await hammer(await c.replicas(id, port), 6000, async () => {
      await sleep(2000);
      const keys = await client.keys(c.keys(id));
      if (keys.length > 0) await client.del(...keys);
      deletedAt = performance.timeOrigin + performance.now();
    });
    const found = errors.slice(before);
    errors.splice(before);
    return {
      'departures before delete': String(t.filter((x) => x < deletedAt).length),
      'departures after delete (4 s)': String(t.filter((x) => x >= deletedAt).length),
      'departures in the last 2 s': String(t.filter((x) => x >= deletedAt + 2000).length),
      errors: String(found.length),
      'first error': found[0]?.slice(0, 80) ?? '-',
      'max in any 1 s': String(maxInWindow(t, 1000)),
    };
  } finally {
    client.disconnect();
  }
}

function table(title: string, rows: Array<[string, Record<string, string>]>): string {
  const keys = [...new Set(rows.flatMap(([, r]) => Object.keys(r)))];
  const width = Math.max(...keys.map((k) => k.length));
  const lines = [`\n${title}`];
  for (const [name, r] of rows) {
    lines.push(`  ${name}`);
    for (const k of keys) if (r[k] !== undefined) lines.push(`    ${k.padEnd(width)}  ${r[k]}`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const server = await startRedis();
  const contenders = [bottleneckCluster, luaGate];
  try {
    const version = (await server.client.info('server')).match(/redis_version:(\S+)/)?.[1] ?? '?';
    process.stdout.write(
      `Redis ${version} on port ${server.port}; ${REPLICAS} replicas in one process, ${BACKLOG} waiting each; ` +
        `limits ${RATE}/s and ${MINUTE_CAP}/min (Lua gate margin ${MARGIN})\n`,
    );
    if (SCENARIOS.includes('spacing')) {
      const rows: Array<[string, Record<string, string>]> = [];
      for (const c of contenders) rows.push(...(await spacing(c, server.port)));
      process.stdout.write(table(`spacing: ${SECONDS} s with a backlog`, rows) + '\n');
    }
    if (SCENARIOS.includes('minute')) {
      // Both at once (different keys): 135 s instead of 270.
      const rows = await Promise.all(contenders.map((c) => minute(c, server.port)));
      process.stdout.write(
        table('minute: 75 s of backlog arriving when a reservoir would run dry just before its refill', rows.flat()) +
          '\n',
      );
    }
    if (SCENARIOS.includes('day')) {
      process.stdout.write(
        table('day: where the daily window ends', [
          ['bottleneck (reservoirRefreshInterval 24 h)', await day(server.port)],
        ]) + '\n  Lua gate: a day counter keyed by the UTC day number, reset at 00:00 UTC\n',
      );
    }
    if (SCENARIOS.includes('keys')) {
      const rows: Array<[string, Record<string, string>]> = [];
      for (const c of contenders) rows.push([c.name, await keysLost(c, server.port)]);
      process.stdout.write(table('keys lost: every key deleted 2 s into a 6 s run', rows) + '\n');
    }
    if (errors.length > 0) process.stdout.write(`\nerrors: ${errors.length}, first: ${errors[0]}\n`);
  } finally {
    await server.stop();
  }
}

interface RedisChild {
  port: number;
  client: Redis;
  stop(): Promise<void>;
}

async function startRedis(): Promise<RedisChild> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
    { stdio: 'ignore' },
  );
  const client = new Redis({ host: '127.0.0.1', port, retryStrategy: () => 50 });
  client.on('error', () => undefined);
  const ready = once(client, 'ready');
  const exited = once(child, 'exit').then(() => Promise.reject(new Error('redis-server exited')));
  const silent = sleep(10_000).then(() => Promise.reject(new Error('redis-server: no answer within 10 s')));
  try {
    await Promise.race([ready, exited, silent]);
  } catch (err) {
    // Nothing of this run is left behind.
    client.disconnect();
    child.kill('SIGKILL');
    throw err;
  }
  return {
    port,
    client,
    async stop() {
      client.disconnect();
      if (child.exitCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

function once(emitter: { once(event: string, cb: () => void): unknown }, event: string): Promise<void> {
  return new Promise((resolve) => emitter.once(event, () => resolve()));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => {
        if (port === 6379) freePort().then(resolve, reject);
        else resolve(port);
      });
    });
  });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`pacing-cluster: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
