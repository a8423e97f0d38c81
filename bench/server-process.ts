// One throughput scenario's server in a child process of its own. Head-to-head runs start
// two of these on the same core and load both at once: whatever the shared machine's speed
// does during the run, it does to both, so their ratio is not at its mercy.
//
// Protocol: options as JSON in BENCH_SERVER; the child says { type: 'ready', url, headers };
// { type: 'cpu' } is answered with { type: 'cpu', usage } (process.cpuUsage); { type: 'close' } ends it.
import { bareForwarder, keapProxy, type BenchContext } from './scenarios.js';

export interface ServerOptions {
  scenario: 'bare-forwarder' | 'keap-proxy';
  simUrl: string;
  tokenUrl: string;
  /** A live access token, for the bare forwarder's fixed header. */
  token: string;
  dir: string;
}
export type ServerRequest = { type: 'cpu' } | { type: 'close' };
export type ServerMessage = { type: 'ready'; url: string; headers: Record<string, string> } | { type: 'cpu'; usage: NodeJS.CpuUsage };

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
const scenario = options.scenario === 'bare-forwarder' ? bareForwarder(ctx) : keapProxy(ctx);
const target = await scenario.start();
const reply = (msg: ServerMessage): void => {
  process.send?.(msg);
};
process.on('message', (msg: ServerRequest) => {
  if (msg.type === 'cpu') reply({ type: 'cpu', usage: process.cpuUsage() });
  else void target.close().then(() => process.exit(0));
});
reply({ type: 'ready', url: target.url, headers: target.headers ?? {} });
