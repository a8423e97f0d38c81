// One throughput scenario's server in a child process of its own. Head-to-head runs start
// two of these on the same core and load both at once: whatever the shared machine's speed
// does during the run, it does to both, so their ratio is not at its mercy.
//
// The uploads scenario starts one at a time against a slow upstream, for its memory: the
// child samples its own RSS (process.memoryUsage.rss(), as the pacing scenario reads keap-proxy's)
// every RSS_SAMPLE_MS while watched, so the peak is seen from inside the process measured.
// Head-to-head and scale-out watch it too, for the RSS under their load (both servers alike).
//
// Protocol: options as JSON in BENCH_SERVER; the child says { type: 'ready', url, headers };
// { type: 'cpu' } is answered with { type: 'cpu', usage } (process.cpuUsage); { type: 'rss-watch' }
// starts sampling afresh and { type: 'rss' } reads it, both answered with { type: 'rss', now, peak }
// (peak: the highest sample since rss-watch); { type: 'memory' } runs a full GC first when the
// child was started with exposeGc (--expose-gc) and answers { type: 'memory', rss, heapUsed }
// (the accounts scenario's retained memory); { type: 'close' } ends it.
import { bareForwarder, keapProxy, type BenchContext } from './scenarios.js';
import { RSS_SAMPLE_MS } from './processes.js';

export interface ServerOptions {
  scenario: 'bare-forwarder' | 'keap-proxy';
  simUrl: string;
  tokenUrl: string;
  /** A live access token, for the bare forwarder's fixed header. */
  token: string;
  dir: string;
  /** keap-proxy only: names its log file (`<name>-1.log` in `dir`), so several in one directory keep theirs apart. */
  name?: string;
  /** keap-proxy only: settings added to or overriding the bench's (scenarios.ts, keapProxyConfig). */
  env?: Record<string, string>;
  /** Start the child with --expose-gc, so { type: 'memory' } reads its memory after a full GC. */
  exposeGc?: boolean;
}
export type ServerRequest =
  { type: 'cpu' } | { type: 'rss-watch' } | { type: 'rss' } | { type: 'memory' } | { type: 'close' };
export type ServerMessage =
  | { type: 'ready'; url: string; headers: Record<string, string> }
  | { type: 'cpu'; usage: NodeJS.CpuUsage }
  | { type: 'rss'; now: number; peak: number }
  | { type: 'memory'; rss: number; heapUsed: number };

const options = JSON.parse(process.env.BENCH_SERVER ?? '{}') as ServerOptions;
const ctx: BenchContext = {
  sim: {
    url: options.simUrl,
    tokenUrl: options.tokenUrl,
    issueAccessToken: () => Promise.resolve(options.token),
    counters: () => Promise.reject(new Error('not available in a server process')),
    close: () => Promise.resolve(),
  },
  dir: options.dir,
};
const scenario =
  options.scenario === 'bare-forwarder' ? bareForwarder(ctx) : keapProxy(ctx, { name: options.name, env: options.env });
const target = await scenario.start();
const reply = (msg: ServerMessage): void => {
  process.send?.(msg);
};
let peak = 0;
let sampler: NodeJS.Timeout | undefined;
const sample = (): number => {
  const now = process.memoryUsage.rss();
  peak = Math.max(peak, now);
  return now;
};
process.on('message', (msg: ServerRequest) => {
  if (msg.type === 'cpu') reply({ type: 'cpu', usage: process.cpuUsage() });
  else if (msg.type === 'rss-watch') {
    clearInterval(sampler);
    peak = 0;
    sampler = setInterval(sample, RSS_SAMPLE_MS);
    const now = sample();
    reply({ type: 'rss', now, peak });
  } else if (msg.type === 'rss') {
    const now = sample();
    reply({ type: 'rss', now, peak });
  } else if (msg.type === 'memory') {
    // Twice: the first full GC may leave finalizers' garbage for the second.
    globalThis.gc?.();
    globalThis.gc?.();
    const m = process.memoryUsage();
    reply({ type: 'memory', rss: m.rss, heapUsed: m.heapUsed });
  } else {
    clearInterval(sampler);
    void target.close().then(() => process.exit(0));
  }
});
reply({ type: 'ready', url: target.url, headers: target.headers ?? {} });
