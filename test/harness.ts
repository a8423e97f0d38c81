// Builds a real simulator and a real proxy on loopback for a test, with the proxy's log
// lines captured in memory so tests can read (and scan) them.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as realSleep } from 'node:timers/promises';
import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import {
  KeapSimulator,
  SIM_API_KEY,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_SEED,
  type SimulatorOptions,
} from './simulator/keap-simulator.js';
import { loadConfig, type Config, type ProcessFacts } from '../src/config/config.js';
import { runCli } from '../src/cli/cli-run.js';
import { createLogger } from '../src/observability/log.js';
import { startProxy, type ProxyOverrides, type RunningProxy } from '../src/http/server.js';
import { RawUpstream } from './raw-upstream.js';
import { sample } from './prometheus.js';
import { tempDir } from './temp-dir.js';

export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line !== '') this.lines.push(line);
    cb();
  }
  get entries(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
  text(): string {
    return this.lines.join('\n');
  }
}

/** Collects what a command prints, for the CLI tests. */
export class Out {
  text = '';
  write(s: string): boolean {
    this.text += s;
    return true;
  }
}

export interface Harness {
  sim: KeapSimulator;
  proxy: RunningProxy;
  config: Config;
  logs: LogCapture;
  dir: string;
  close(): Promise<void>;
}

export {
  SIM_API_KEY,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_LEGACY_KEY,
  SIM_SCOPE,
  SIM_SEED,
  SIM_TENANT,
} from './simulator/keap-simulator.js';

export { tempDir } from './temp-dir.js';

export function oauthEnv(sim: KeapSimulator, dir: string): Record<string, string> {
  return {
    KEAP_API_URL: sim.url,
    KEAP_TOKEN_URL: sim.tokenUrl,
    KEAP_CLIENT_ID: SIM_CLIENT_ID,
    KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET,
    KEAP_REFRESH_TOKEN: SIM_SEED,
    TOKEN_STORE: path.join(dir, 'store', 'tokens.json'),
    PORT: '0',
    RATE_LIMIT_PER_SECOND: '0',
    LOG_LEVEL: 'trace',
  };
}

export function keyEnv(sim: KeapSimulator, key = SIM_API_KEY): Record<string, string> {
  return { KEAP_API_URL: sim.url, KEAP_API_KEY: key, PORT: '0', RATE_LIMIT_PER_SECOND: '0', LOG_LEVEL: 'trace' };
}

export async function startHarness(opts: {
  mode: 'oauth' | 'key';
  env?: Record<string, string>;
  sim?: SimulatorOptions;
  /** Collaborators the proxy takes instead of its own (a clock, shorter replay delays). */
  overrides?: Omit<ProxyOverrides, 'logger'>;
}): Promise<Harness> {
  const sim = await KeapSimulator.start(opts.sim);
  const dir = tempDir();
  const base = opts.mode === 'oauth' ? oauthEnv(sim, dir) : keyEnv(sim);
  return serveOver(sim, { ...base, ...opts.env }, dir, opts.overrides);
}

/** A proxy configured by `env` in front of `sim`, logging into a capture; the simulator is closed with it (or at once if it cannot start). */
async function serveOver(
  sim: KeapSimulator,
  env: Record<string, string>,
  dir: string,
  overrides: Omit<ProxyOverrides, 'logger'> = {},
): Promise<Harness> {
  const logs = new LogCapture();
  let config: Config;
  let proxy: RunningProxy;
  try {
    config = loadConfig({ env, cwd: dir });
    proxy = await startProxy(config, { ...overrides, logger: createLogger(config.logLevel, logs) });
  } catch (err) {
    await sim.close();
    throw err;
  }
  return {
    sim,
    proxy,
    config,
    logs,
    dir,
    async close() {
      await proxy.close();
      await sim.close();
    },
  };
}

/** A start function for one test file: whatever it started is closed after each test. */
function perTest<A extends unknown[], H extends { close(): Promise<void> }>(
  afterEach: (fn: () => Promise<void>) => void,
  start: (...args: A) => Promise<H>,
): (...args: A) => Promise<H> {
  const open: H[] = [];
  afterEach(async () => {
    for (const h of open.splice(0)) await h.close();
  });
  return async (...args) => {
    const h = await start(...args);
    open.push(h);
    return h;
  };
}

/** A `startHarness` for one test file whose harnesses are all closed after each test. */
export function harnessPerTest(
  afterEach: (fn: () => Promise<void>) => void,
): (...args: Parameters<typeof startHarness>) => Promise<Harness> {
  return perTest(afterEach, startHarness);
}

export type AccountEntries = Record<string, Record<string, unknown>>;

export interface AccountsHarness extends Harness {
  /** The ACCOUNTS_FILE. */
  file: string;
  /** The settings the proxy was started with (the file's path among them). */
  env: Record<string, string>;
  /** Writes the file anew and has the proxy reload it, as SIGHUP does. */
  reload(accounts: AccountEntries): ReturnType<RunningProxy['reloadAccounts']>;
}

/**
 * A simulator and a proxy serving `accounts` from an ACCOUNTS_FILE (no default account unless
 * `env` gives credentials). The token endpoint is process-wide: OAuth accounts refresh at the
 * simulator's. `accounts` may be a function of the harness's folder (for grant files in it).
 */
export async function startAccountsHarness(opts: {
  accounts: AccountEntries | ((dir: string) => AccountEntries);
  env?: Record<string, string>;
  sim?: SimulatorOptions;
  overrides?: Omit<ProxyOverrides, 'logger'>;
}): Promise<AccountsHarness> {
  const sim = await KeapSimulator.start(opts.sim);
  const dir = tempDir();
  const file = path.join(dir, 'accounts.json');
  const write = (accounts: AccountEntries): void => writeFileSync(file, JSON.stringify({ accounts }));
  write(typeof opts.accounts === 'function' ? opts.accounts(dir) : opts.accounts);
  const env = {
    KEAP_API_URL: sim.url,
    KEAP_TOKEN_URL: sim.tokenUrl,
    ACCOUNTS_FILE: file,
    PORT: '0',
    RATE_LIMIT_PER_SECOND: '0',
    LOG_LEVEL: 'info',
    ...opts.env,
  };
  const h = await serveOver(sim, env, dir, opts.overrides);
  return {
    ...h,
    file,
    env,
    reload(accounts) {
      write(accounts);
      return h.proxy.reloadAccounts(loadConfig({ env, cwd: dir }));
    },
  };
}

/** A `startAccountsHarness` for one test file whose harnesses are all closed after each test. */
export function accountsHarnessPerTest(
  afterEach: (fn: () => Promise<void>) => void,
): (...args: Parameters<typeof startAccountsHarness>) => Promise<AccountsHarness> {
  return perTest(afterEach, startAccountsHarness);
}

/** One run of the command line, as the process would make it, with what it printed and its exit code. */
export async function runCommand(
  argv: string[],
  opts: { env?: Record<string, string>; cwd?: string; stdin?: string; facts?: ProcessFacts } = {},
): Promise<{ code: number | undefined; out: string; err: string }> {
  const out = new Out();
  const err = new Out();
  const code = await runCli({
    argv,
    env: opts.env ?? {},
    stdout: out,
    stderr: err,
    cwd: opts.cwd ?? tempDir(),
    stdin: () => Promise.resolve(opts.stdin ?? ''),
    ...(opts.facts !== undefined ? { facts: opts.facts } : {}),
    serve: () => Promise.reject(new Error('a command, not the proxy, was run here')),
  });
  return { code, out: out.text, err: err.text };
}

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
  text(): string;
}

/** A plain node:http request, so tests control every header and byte (fetch would add its own). */
export function send(
  baseUrl: string,
  method: string,
  pathAndQuery: string,
  opts: { headers?: OutgoingHttpHeaders; body?: Buffer | string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(baseUrl);
    const headers = { ...opts.headers };
    if (
      opts.body !== undefined &&
      headers['content-length'] === undefined &&
      headers['transfer-encoding'] === undefined
    )
      headers['content-length'] = Buffer.byteLength(opts.body);
    const req = httpRequest(
      { host: u.hostname, port: u.port, method, path: pathAndQuery, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: <T>() => JSON.parse(body.toString('utf8')) as T,
            text: () => body.toString('utf8'),
          });
        });
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

export interface RawRig {
  upstream: RawUpstream;
  proxy: RunningProxy;
  logs: LogCapture;
  close(): Promise<void>;
}

/** keap-proxy in key mode, pacing off, in front of a raw-socket upstream that records the exact bytes it receives. */
export async function startRawRig(
  env: Record<string, string> = {},
  overrides: Omit<ProxyOverrides, 'logger'> = {},
): Promise<RawRig> {
  const upstream = await RawUpstream.start();
  const logs = new LogCapture();
  const config = loadConfig({
    env: {
      KEAP_API_URL: upstream.url,
      KEAP_API_KEY: SIM_API_KEY,
      PORT: '0',
      RATE_LIMIT_PER_SECOND: '0',
      LOG_LEVEL: 'info',
      ...env,
    },
    cwd: tempDir(),
  });
  const proxy = await startProxy(config, { ...overrides, logger: createLogger(config.logLevel, logs) });
  return {
    upstream,
    proxy,
    logs,
    async close() {
      await proxy.close();
      await upstream.close();
    },
  };
}

/** Hex SHA-256, as the simulator's echo reports a body's. */
export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Asks `probe` every 10 ms until it answers with something other than undefined or false,
 * and returns that answer. It sleeps on real time even while a test fakes the global timers,
 * and gives up after about `timeoutMs`: a guard against a hang, not a claim about speed.
 */
export async function until<T>(
  what: string,
  probe: () => T | Promise<T>,
  timeoutMs = 10_000,
): Promise<Exclude<T, undefined | false>> {
  for (let waited = 0; ; waited += 10) {
    const v = await probe();
    if (v !== undefined && v !== false) return v as Exclude<T, undefined | false>;
    if (waited >= timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await realSleep(10);
  }
}

/** One sample of the proxy's /metrics (see `sample` in prometheus.ts). */
export async function metric(
  baseUrl: string,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  return sample((await send(baseUrl, 'GET', '/metrics')).text(), name, labels);
}
