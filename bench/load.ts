// The load generator, forked as a child process by run.ts (which imports only its types).
// On a 2-core box the client must not share an event loop with the servers it measures, or
// every scenario would be throttled by the thread that is supposed to be serving.
//
// Protocol: the parent sends one LoadRequest over IPC; the child runs the warm-up, says
// 'timed-start', runs the timed part, answers 'done' (or 'failed') and exits.
import autocannon, { type Instance, type Result } from 'autocannon';

export interface LoadRequest {
  /** Several: the connections are dealt out among them in turn (connection i to url[i % n]). */
  url: string | string[];
  headers: Record<string, string>;
  connections: number;
  seconds: number;
  warmupSeconds: number;
  /** Seconds a request may take before autocannon counts a timeout (autocannon's default: 10). */
  timeoutSeconds?: number;
  /**
   * When set, the timed part also measures the steady rate of 2xx answers from this many
   * seconds on (see SteadyRate); for paced runs, whose first second is a start-up transient.
   */
  steadyAfterSeconds?: number;
}

/** The figures run.ts needs, measured over the timed part only (the warm-up is reported apart). */
export interface LoadSample {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  completed: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodes: Record<string, number>;
}

/**
 * 2xx answers per second once the run is steady: (answers - 1) over the time from the first
 * to the last of them, i.e. one over their mean spacing. Unlike a count over a fixed window
 * this has no ±1-answer rounding (±5% at 20 answers a second over 9 s would hide what it measures).
 */
export interface SteadyRate {
  requestsPerSecond: number;
  /** 2xx answers completed from `afterSeconds` on. */
  responses: number;
  /** From the first to the last of them. */
  seconds: number;
  afterSeconds: number;
}

/** Sent when the timed part starts (so the parent can time its own CPU over the same span), then the result. */
export type LoadMessage =
  | { type: 'timed-start' }
  | {
      type: 'done';
      sample: LoadSample;
      warmup: LoadSample | undefined;
      clientCpu: number;
      steady: SteadyRate | undefined;
    }
  | { type: 'failed'; error: string };

export function toSample(r: Result): LoadSample {
  const statusCodes: Record<string, number> = {};
  for (const [code, { count }] of Object.entries(r.statusCodeStats)) statusCodes[code] = count;
  return {
    // Completed requests over the wall time actually run: unlike the mean of per-second
    // samples, this is not skewed by a partial last second.
    requestsPerSecond: r.duration > 0 ? r.requests.total / r.duration : 0,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    completed: r.requests.total,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    statusCodes,
  };
}

function start(req: LoadRequest, seconds: number): Instance {
  return autocannon({
    url: req.url,
    method: 'GET',
    headers: req.headers,
    connections: req.connections,
    pipelining: 1,
    duration: seconds,
    ...(req.timeoutSeconds !== undefined ? { timeout: req.timeoutSeconds } : {}),
  });
}

function load(req: LoadRequest, seconds: number): Promise<Result> {
  return Promise.resolve(start(req, seconds));
}

/** Runs the timed part, noting when each 2xx answer completed (ms since the start) for steadyRate. */
async function loadRecording(req: LoadRequest, seconds: number): Promise<{ result: Result; doneAt: number[] }> {
  const doneAt: number[] = [];
  const startedAt = performance.now();
  const instance = start(req, seconds);
  instance.on('response', (_client, statusCode) => {
    if (statusCode >= 200 && statusCode < 300) doneAt.push(performance.now() - startedAt);
  });
  return { result: await instance, doneAt };
}

export function steadyRate(doneAt: number[], afterSeconds: number): SteadyRate {
  const times = doneAt.filter((t) => t >= afterSeconds * 1000);
  const first = times[0];
  const last = times[times.length - 1];
  const seconds = first !== undefined && last !== undefined ? (last - first) / 1000 : 0;
  return {
    requestsPerSecond: seconds > 0 ? (times.length - 1) / seconds : NaN,
    responses: times.length,
    seconds,
    afterSeconds,
  };
}

async function measure(req: LoadRequest, send: (msg: LoadMessage) => void): Promise<LoadMessage> {
  // Warm-up as a run of its own (fresh connections, JIT-warm server), so the timed part,
  // and the CPU accounting around it, covers the steady state only.
  const warmup = req.warmupSeconds > 0 ? toSample(await load(req, req.warmupSeconds)) : undefined;
  send({ type: 'timed-start' });
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  // Only paced runs note each answer: the throughput runs' client stays as lean as before.
  const after = req.steadyAfterSeconds;
  const { result, doneAt } =
    after !== undefined ? await loadRecording(req, req.seconds) : { result: await load(req, req.seconds), doneAt: [] };
  const cpu = process.cpuUsage(cpuBefore);
  const clientCpu = (cpu.user + cpu.system) / 1000 / (performance.now() - wallBefore);
  const steady = after !== undefined ? steadyRate(doneAt, after) : undefined;
  return { type: 'done', sample: toSample(result), warmup, clientCpu, steady };
}

// Only act as the child when started with an IPC channel (fork), so importing this module
// for its types and helpers has no side effect.
if (process.send !== undefined) {
  const send = (msg: LoadMessage, then: () => void = () => {}): void => {
    process.send?.(msg, undefined, undefined, then);
  };
  process.once('message', (msg: LoadRequest) => {
    void measure(msg, send)
      .catch((err: unknown): LoadMessage => ({
        type: 'failed',
        error: err instanceof Error ? err.message : String(err),
      }))
      .then((reply) => send(reply, () => process.exit(0)));
  });
}
