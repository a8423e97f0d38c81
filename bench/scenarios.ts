// What the benchmark measures: each scenario starts one server set-up in this process and
// says where the load generator should send its requests. A new throughput scenario is one
// more factory here plus one line in run.ts. The pacing set-up (d) is not a Scenario: it is
// judged by what the simulator saw, not only by what the client got.
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createProxyServer } from 'http-proxy-3';
import { startSimulator, type RemoteSimulator } from './processes.js';
import {
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_SEED,
  type SimulatorCounters,
} from '../test/simulator/keap-simulator.js';
import { loadConfig, type Config } from '../src/config/config.js';
import { createLogDestination, createLogger } from '../src/observability/log.js';
import { startProxy } from '../src/http/server.js';

export interface Target {
  /** Base URL the load generator calls (the request path is added by run.ts). */
  url: string;
  /** Headers the client itself sends. */
  headers?: Record<string, string>;
  close(): Promise<void>;
}

export interface Scenario {
  /** Short stable key, used in the JSON and by the ratios. */
  name: string;
  /** One line for the table. */
  label: string;
  start(): Promise<Target>;
}

/** What every scenario shares: one simulator and one scratch directory. */
export interface BenchContext {
  sim: RemoteSimulator;
  dir: string;
}

/** (a) The simulator itself: the client carries a live access token, nothing in between. */
export function direct(ctx: BenchContext): Scenario {
  return {
    name: 'direct',
    label: 'simulator, no proxy',
    async start() {
      const token = await ctx.sim.issueAccessToken();
      return { url: ctx.sim.url, headers: { authorization: `Bearer ${token}` }, close: async () => {} };
    },
  };
}

/**
 * (b) The floor for any http-proxy-3 based proxy: a keep-alive agent and one fixed header,
 * no pipeline, no logging. keap-proxy is judged against this.
 */
export function bareForwarder(ctx: BenchContext): Scenario {
  return {
    name: 'bare-forwarder',
    label: 'bare http-proxy-3 forwarder',
    async start() {
      const agent = new http.Agent({ keepAlive: true });
      const proxy = createProxyServer({
        target: ctx.sim.url,
        agent,
        changeOrigin: true,
        headers: { authorization: `Bearer ${await ctx.sim.issueAccessToken()}` },
      });
      // Without a handler http-proxy-3 throws on upstream errors; answer 502 so the client sees a non-2xx.
      proxy.on('error', (_err, _req, res) => {
        if (res instanceof http.ServerResponse && !res.headersSent) res.writeHead(502).end();
        else res.destroy();
      });
      const server = http.createServer((req, res) => proxy.web(req, res));
      const url = await listen(server);
      return {
        url,
        async close() {
          await closeServer(server);
          proxy.close();
          agent.destroy();
        },
      };
    },
  };
}

/**
 * (c) keap-proxy as deployed (OAuth mode, `info` logging), pacing off so the figure is the
 * proxy's own cost. Log lines go to a file: writing them is part of what is measured.
 */
export function keapProxy(
  ctx: BenchContext,
  opts: { name?: string; label?: string; ratePerSecond?: number; env?: Record<string, string> } = {},
): Scenario {
  const name = opts.name ?? 'keap-proxy';
  let instance = 0;
  return {
    name,
    label: opts.label ?? 'keap-proxy (OAuth, pacing off, info log)',
    async start() {
      instance += 1;
      return startKeapProxy(
        keapProxyConfig(ctx, opts.ratePerSecond ?? 0, opts.env),
        path.join(ctx.dir, `${name}-${instance}.log`),
      );
    },
  };
}

/** keap-proxy running in front of a simulator that enforces a spike limit, ready for a burst. */
export interface PacedSetUp {
  url: string;
  /** The rate keap-proxy allows itself: RATE_LIMIT_PER_SECOND x RATE_LIMIT_MARGIN. */
  allowedPerSecond: number;
  margin: number;
  queueLimit: number;
  deadlineMs: number;
  /**
   * Closes keap-proxy first (its queue too, so nothing more reaches the simulator), then reads
   * the simulator's final counters and closes it.
   */
  close(): Promise<SimulatorCounters>;
}

/**
 * (d) keap-proxy with RATE_LIMIT_PER_SECOND = `limit` (default margin) in front of a simulator
 * of its own that answers 429 above `limit` calls a second, as Keap's spike arrest does. Its
 * own simulator, because the shared one has counted the throughput runs' calls against the
 * minute quota (keap-proxy would read that from the quota headers and hold back), and its own
 * token store, because a fresh simulator knows only the seed refresh token.
 */
export async function pacedKeapProxy(dir: string, limit: number): Promise<PacedSetUp> {
  const sim = await startSimulator({ ratePerSecond: limit });
  try {
    const ctx = { sim, dir: mkdtempSync(path.join(dir, 'pacing-')) };
    const config = keapProxyConfig(ctx, limit);
    const proxy = await startKeapProxy(config, path.join(ctx.dir, 'keap-proxy-paced.log'));
    return {
      url: proxy.url,
      allowedPerSecond: config.accounts[0]!.pacing.perSecond * config.accounts[0]!.pacing.margin,
      margin: config.accounts[0]!.pacing.margin,
      queueLimit: config.accounts[0]!.pacing.queueLimit,
      deadlineMs: config.requestDeadlineMs,
      async close() {
        await proxy.close();
        const counters = await sim.counters();
        await sim.close();
        return counters;
      },
    };
  } catch (err) {
    await sim.close();
    throw err;
  }
}

/**
 * keap-proxy's settings against the given simulator; `ratePerSecond` 0 turns pacing off. `env`
 * adds to them or overrides them (the scale-out scenario's Redis, TOKEN_STORE, limits).
 */
export function keapProxyConfig(ctx: BenchContext, ratePerSecond: number, env: Record<string, string> = {}): Config {
  return loadConfig({
    cwd: ctx.dir,
    env: {
      KEAP_CLIENT_ID: SIM_CLIENT_ID,
      KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
      KEAP_REFRESH_TOKEN: SIM_SEED,
      KEAP_API_URL: ctx.sim.url,
      KEAP_TOKEN_URL: ctx.sim.tokenUrl,
      // One store for every keap-proxy start: the seed works once (Keap rotates refresh
      // tokens), so later starts must load the stored grant, exactly as a restart does.
      TOKEN_STORE: path.join(ctx.dir, 'tokens.json'),
      RATE_LIMIT_PER_SECOND: String(ratePerSecond),
      PORT: '0',
      LOG_LEVEL: 'info',
      ...env,
    },
  });
}

/** Starts keap-proxy with its `info` log going to `logFile`, through the destination it uses for stdout in production. */
export async function startKeapProxy(config: Config, logFile: string): Promise<Target> {
  const destination = createLogDestination(logFile);
  const proxy = await startProxy(config, { logger: createLogger('info', destination) });
  return {
    url: proxy.url,
    async close() {
      await proxy.close();
      // Drain the async log buffer now, so its writes are not billed to the next scenario.
      await destination.close();
    },
  };
}

async function listen(server: http.Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return `http://127.0.0.1:${port}`;
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
