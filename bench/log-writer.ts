// `npm run build && node --expose-gc dist/bench/log-writer.js`: our LogWriter against pino's own
// destination (sonic-boom, `pino.destination`), head to head in one process and one run.
//
// Each measurement writes BENCH_LOG_LINES lines through pino (createLogger, as the proxy
// does) into a fresh destination, BENCH_LOG_PER_TURN lines per event-loop turn (a busy
// proxy's lines arrive spread over turns, and the asynchronous writers' batches go out in
// between), then waits until the destination has written every line: the figure is lines
// per second from the first line to the last one written. Workloads: "request" is the
// per-request line (RequestLog: a template; through LogWriter, formatted when its batch is
// written), "info" is logger.info() with a few fields (pino's own serializer). Destinations:
//
//   logwriter       LogWriter as the proxy runs it (createLogDestination: 32 KiB batches, 250 ms)
//   pino-4k         pino.destination({ dest, minLength: 4096, sync: false })
//   pino-16k        pino.destination({ dest, minLength: 16000, sync: false }), near its 16 KiB maxWrite
//   pino-sync       pino.destination({ dest }): pino's default, one synchronous write per line
//
// Rounds interleave the destinations, starting each round one further along, so drift in
// the machine's speed is spread over all; the first BENCH_LOG_WARMUP rounds are not counted.
// Each pino figure is also given as a ratio to logwriter's in the same round, and the median
// of those per-round ratios is the verdict's figure; its quartiles show the noise.
//
// Settings (environment): BENCH_LOG_LINES (default 100000), BENCH_LOG_PER_TURN (default 20),
// BENCH_LOG_ROUNDS (default 12), BENCH_LOG_WARMUP (default 2), BENCH_LOG_DEST (default
// /dev/null; "file" writes a fresh file in the temp folder for every measurement).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { setImmediate as turn } from 'node:timers/promises';
import { pino, type DestinationStream } from 'pino';
import { createLogDestination, createLogger, RequestLog, type Logger } from '../src/observability/log.js';

interface Destination {
  stream: DestinationStream;
  /** Resolves once every line written so far has reached the file (or /dev/null), and closes it. */
  finish(): Promise<void>;
}

type SonicBoom = ReturnType<typeof pino.destination>;

/** Makes a destination writing to `dest`; `bytes` is what the measurement will hand it in all. */
type MakeDestination = (dest: string, bytes: number) => Promise<Destination>;

const DESTINATIONS: Record<string, MakeDestination> = {
  logwriter: (dest) => {
    const writer = createLogDestination(dest);
    return Promise.resolve({ stream: writer, finish: () => writer.close() });
  },
  'pino-4k': (dest, bytes) => sonic(pino.destination({ dest, minLength: 4096, sync: false }), bytes),
  'pino-16k': (dest, bytes) => sonic(pino.destination({ dest, minLength: 16_000, sync: false }), bytes),
  'pino-sync': (dest, bytes) => sonic(pino.destination({ dest }), bytes),
};

/**
 * sonic-boom's own ways to wait for its writes (flush(cb), end()) fsync the file first, which
 * LogWriter never does and a log line does not need; so the measurement counts the bytes its
 * 'write' events report until all `bytes` are out, asking it to write the rest whenever it
 * stops with less than minLength waiting.
 */
async function sonic(boom: SonicBoom, bytes: number): Promise<Destination> {
  // A file given by name is opened asynchronously; the clock starts once it is open.
  if ((boom as unknown as { fd: number }).fd < 0) await once(boom, 'ready');
  let written = 0;
  let done: (() => void) | undefined;
  boom.on('write', (n: number) => {
    written += n;
    if (written >= bytes) done?.();
  });
  boom.on('drain', () => {
    if (written < bytes) boom.flush();
  });
  return {
    stream: boom,
    async finish() {
      if (written < bytes) {
        const all = new Promise<void>((resolve) => (done = resolve));
        boom.flush();
        await all;
      }
      boom.destroy();
    },
  };
}

/** Bytes a workload's lines come to, written through pino to a stream that only counts them. */
function bytesOf(s: Settings, workload: Workload): number {
  let bytes = 0;
  const logger = createLogger('info', {
    write(line: string) {
      bytes += Buffer.byteLength(line);
    },
  });
  const requestLog = new RequestLog(logger);
  for (let i = 0; i < s.lines; i++) workload(logger, requestLog, i);
  return bytes;
}

type Workload = (logger: Logger, requestLog: RequestLog, i: number) => void;

const WORKLOADS: Record<string, Workload> = {
  request: (_logger, requestLog, i) =>
    requestLog.write({
      time: 1_764_000_000_000 + i,
      reqId: `b1f0c2d4-${i}`,
      method: 'GET',
      path: '/crm/rest/v1/contacts',
      status: 200,
      upstreamStatus: 200,
      attempts: 1,
      durationMs: 12.345,
      outcome: undefined,
      cache: i % 3 === 0 ? 'MISS' : undefined,
    }),
  info: (logger, _requestLog, i) =>
    logger.info({ event: 'token_refreshed', tenant: 'ab123', attempt: i, expiresInSeconds: 86_400 }, 'token refreshed'),
};

interface Settings {
  lines: number;
  perTurn: number;
  rounds: number;
  warmup: number;
  dest: 'null' | 'file';
}

function settings(env: NodeJS.ProcessEnv): Settings {
  const num = (name: string, dflt: number): number => {
    const v = env[name];
    const n = v === undefined || v === '' ? dflt : Number(v);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name}: "${v}" is not a whole number of at least 1`);
    return n;
  };
  const dest = env.BENCH_LOG_DEST ?? '/dev/null';
  if (dest !== '/dev/null' && dest !== 'file')
    throw new Error(`BENCH_LOG_DEST: "${dest}" is neither /dev/null nor file`);
  return {
    lines: num('BENCH_LOG_LINES', 100_000),
    perTurn: num('BENCH_LOG_PER_TURN', 20),
    rounds: num('BENCH_LOG_ROUNDS', 12),
    warmup: Number(env.BENCH_LOG_WARMUP ?? 2),
    dest: dest === 'file' ? 'file' : 'null',
  };
}

/** Lines per second for one destination and workload, from the first line to the last one written. */
async function measure(s: Settings, make: MakeDestination, workload: Workload, bytes: number): Promise<number> {
  const dir = s.dest === 'file' ? mkdtempSync(path.join(tmpdir(), 'bench-log-')) : undefined;
  try {
    const destination = await make(dir !== undefined ? path.join(dir, 'out.log') : '/dev/null', bytes);
    const logger = createLogger('info', destination.stream);
    const requestLog = new RequestLog(logger);
    const started = performance.now();
    for (let i = 0; i < s.lines;) {
      const end = Math.min(s.lines, i + s.perTurn);
      for (; i < end; i++) workload(logger, requestLog, i);
      await turn();
    }
    await destination.finish();
    return s.lines / ((performance.now() - started) / 1000);
  } finally {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }
}

function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return (sorted[lo] as number) + ((sorted[hi] as number) - (sorted[lo] as number)) * (at - lo);
}

const gc = (globalThis as { gc?: () => void }).gc;

async function main(): Promise<void> {
  const s = settings(process.env);
  const names = Object.keys(DESTINATIONS);
  console.log(
    `Log destinations head to head: ${s.lines} lines per measurement, ${s.perTurn} per event-loop turn, ` +
      `${s.rounds} rounds (+${s.warmup} warm-up), into ${s.dest === 'file' ? 'a fresh temp file' : '/dev/null'}; ` +
      `node ${process.version}, pino ${pino.version}${gc === undefined ? ' (no --expose-gc: GC not settled between measurements)' : ''}`,
  );
  let pinoBeats = false;
  for (const [workloadName, workload] of Object.entries(WORKLOADS)) {
    const bytes = bytesOf(s, workload);
    const rates = new Map<string, number[]>(names.map((n) => [n, []]));
    const ratios = new Map<string, number[]>(names.map((n) => [n, []]));
    for (let round = 0; round < s.warmup + s.rounds; round++) {
      const order = names.map((_, k) => names[(k + round) % names.length] as string);
      const thisRound = new Map<string, number>();
      for (const name of order) {
        gc?.();
        thisRound.set(name, await measure(s, DESTINATIONS[name] as MakeDestination, workload, bytes));
      }
      if (round < s.warmup) continue;
      const ours = thisRound.get('logwriter') as number;
      for (const name of names) {
        (rates.get(name) as number[]).push(thisRound.get(name) as number);
        (ratios.get(name) as number[]).push((thisRound.get(name) as number) / ours);
      }
      const figures = order.map((name) => `${name} ${Math.round((thisRound.get(name) as number) / 1000)}k`).join(', ');
      process.stderr.write(`  ${workloadName} round ${round - s.warmup + 1}/${s.rounds}: ${figures}\n`);
    }
    console.log(`\nworkload "${workloadName}"`);
    console.log(
      `  ${'destination'.padEnd(12)} ${'median lines/s'.padStart(15)} ${'p25..p75'.padStart(19)}   vs logwriter, median of per-round ratios (p25..p75)`,
    );
    for (const name of names) {
      const r = rates.get(name) as number[];
      const q = ratios.get(name) as number[];
      const ratio =
        name === 'logwriter'
          ? ''
          : `${quantile(q, 0.5).toFixed(3)}x (${quantile(q, 0.25).toFixed(3)}..${quantile(q, 0.75).toFixed(3)})`;
      console.log(
        `  ${name.padEnd(12)} ${Math.round(quantile(r, 0.5)).toString().padStart(15)} ${`${Math.round(quantile(r, 0.25))}..${Math.round(quantile(r, 0.75))}`.padStart(19)}   ${ratio}`,
      );
      if (name !== 'logwriter' && quantile(q, 0.5) >= 0.95) pinoBeats = true;
    }
  }
  console.log(
    pinoBeats
      ? '\nverdict: a pino.destination is within 5% of LogWriter, or faster, in some workload'
      : '\nverdict: LogWriter beats every pino.destination by more than 5% in every workload',
  );
}

await main();
