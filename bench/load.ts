// The load generator, forked as a child process by run.ts (which imports only its types).
// On a 2-core box the client must not share an event loop with the servers it measures, or
// every scenario would be throttled by the thread that is supposed to be serving.
//
// Protocol: the parent sends one LoadRequest over IPC; the child runs the warm-up, says
// 'timed-start', runs the timed part, answers 'done' (or 'failed') and exits.
import autocannon, { type Result } from 'autocannon';

export interface LoadRequest {
  url: string;
  headers: Record<string, string>;
  connections: number;
  seconds: number;
  warmupSeconds: number;
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

/** Sent when the timed part starts (so the parent can time its own CPU over the same span), then the result. */
export type LoadMessage =
  | { type: 'timed-start' }
  | { type: 'done'; sample: LoadSample; warmup: LoadSample | undefined; clientCpu: number }
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

function load(req: LoadRequest, seconds: number): Promise<Result> {
  return Promise.resolve(
    autocannon({ url: req.url, method: 'GET', headers: req.headers, connections: req.connections, pipelining: 1, duration: seconds }),
  );
}

async function measure(req: LoadRequest, send: (msg: LoadMessage) => void): Promise<LoadMessage> {
  // Warm-up as a run of its own (fresh connections, JIT-warm server), so the timed part,
  // and the CPU accounting around it, covers the steady state only.
  const warmup = req.warmupSeconds > 0 ? toSample(await load(req, req.warmupSeconds)) : undefined;
  send({ type: 'timed-start' });
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  const result = await load(req, req.seconds);
  const cpu = process.cpuUsage(cpuBefore);
  const clientCpu = (cpu.user + cpu.system) / 1000 / (performance.now() - wallBefore);
  return { type: 'done', sample: toSample(result), warmup, clientCpu };
}

// Only act as the child when started with an IPC channel (fork), so importing this module
// for its types and helpers has no side effect.
if (process.send !== undefined) {
  const send = (msg: LoadMessage, then: () => void = () => {}): void => {
    process.send?.(msg, undefined, undefined, then);
  };
  process.once('message', (msg: LoadRequest) => {
    measure(msg, send)
      .catch((err: unknown): LoadMessage => ({ type: 'failed', error: err instanceof Error ? err.message : String(err) }))
      .then((reply) => send(reply, () => process.exit(0)));
  });
}
