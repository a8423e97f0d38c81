// Child processes of the benchmark and where they run. On a 2-core machine the proxy under
// test gets core 0 to itself; the simulator and the load generator share core 1. Without
// pinning the scheduler moves the three around and one run's figures differ from the next
// by a third; pinned, the proxy's own cost decides its throughput.
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { SimulatorCounters, SimulatorOptions } from '../test/simulator/keap-simulator.js';
import type { SimAnswer, SimMessage, SimRequest } from './sim-process.js';
import type { UpstreamCounters, UpstreamMessage, UpstreamRequest } from './slow-upstream-process.js';
import type { LoadMessage, LoadRequest } from './load.js';

/** The environment variable sim-process.js reads its SimulatorOptions (JSON) from. */
export const SIM_OPTIONS_ENV = 'BENCH_SIM_OPTIONS';
/** The environment variable slow-upstream-process.js reads its hold time (ms) from. */
export const UPSTREAM_HOLD_ENV = 'BENCH_UPSTREAM_HOLD_MS';
/** How often a watched server child (server-process.js) samples its RSS. */
export const RSS_SAMPLE_MS = 20;

const SERVER_CORE = '0';
const HELPER_CORE = '1';

/** Pins a process to a core where the machine has two or more and `taskset` exists; says whether it did. */
function pin(pid: number, core: string): boolean {
  if (cpus().length < 2) return false;
  const r = spawnSync('taskset', ['-p', '-c', core, String(pid)], { stdio: 'ignore' });
  return r.status === 0;
}

export function pinServerProcess(): boolean {
  return pin(process.pid, SERVER_CORE);
}

/** A helper that is not a node child (redis-server) goes where the simulator and the load generator run. */
export function pinHelperProcess(pid: number): boolean {
  return pin(pid, HELPER_CORE);
}

/** Server children of a head-to-head run share core 0, as the in-process servers do. */
export const SERVER_CORE_ID = SERVER_CORE;

export function forkScript(
  name: string,
  env: Record<string, string> = {},
  core: string = HELPER_CORE,
  nodeArgs: string[] = [],
): ChildProcess {
  const script = fileURLToPath(new URL(`./${name}`, import.meta.url));
  // execArgv: [] so that `node --cpu-prof dist/bench/run.js` profiles the servers only.
  // BENCH_PROFILE_DIR: CPU profiles of the head-to-head servers, to see where time goes.
  const profile =
    name === 'server-process.js' && process.env.BENCH_PROFILE_DIR
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
      : [];
  const child = fork(script, [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [...profile, ...nodeArgs],
    env: { ...process.env, ...env },
  });
  if (child.pid !== undefined) pin(child.pid, core);
  return child;
}

/** The simulator, as the scenarios see it. */
export interface RemoteSimulator {
  url: string;
  tokenUrl: string;
  issueAccessToken(): Promise<string>;
  /** A snapshot of what the simulator saw so far (API calls, 429s it sent, ...). */
  counters(): Promise<SimulatorCounters>;
  close(): Promise<void>;
}

/** Starts the simulator in its child process; `options` as KeapSimulator.start takes them (e.g. a spike limit). */
export function startSimulator(options: SimulatorOptions = {}): Promise<RemoteSimulator> {
  const child = forkScript('sim-process.js', { [SIM_OPTIONS_ENV]: JSON.stringify(options) });
  const waiting = new Map<number, (answer: SimAnswer) => void>();
  let nextId = 0;
  const send = (msg: SimRequest): void => {
    child.send(msg);
  };
  /** One question, answered by the reply that carries its id. */
  const ask = (type: SimAnswer['type']): Promise<SimAnswer> =>
    new Promise((done) => {
      const id = nextId++;
      waiting.set(id, done);
      send({ type, id });
    });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`simulator exited with code ${code}`)));
    child.on('message', (msg: SimMessage) => {
      if (msg.type !== 'ready') {
        waiting.get(msg.id)?.(msg);
        waiting.delete(msg.id);
        return;
      }
      resolve({
        url: msg.url,
        tokenUrl: msg.tokenUrl,
        issueAccessToken: async () => {
          const answer = await ask('token');
          if (answer.type !== 'token') throw new Error(`simulator answered ${answer.type} to a token request`);
          return answer.token;
        },
        counters: async () => {
          const answer = await ask('counters');
          if (answer.type !== 'counters') throw new Error(`simulator answered ${answer.type} to a counters request`);
          return answer.counters;
        },
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

/** The uploads scenario's slow Keap (slow-upstream-process.ts), as run.ts sees it. */
export interface SlowUpstream {
  url: string;
  counters(): Promise<UpstreamCounters>;
  close(): Promise<void>;
}

/** Starts the slow upstream in its child process, on the helpers' core: it reads each body whole, then answers 200 after `holdMs`. */
export function startSlowUpstream(holdMs: number): Promise<SlowUpstream> {
  const child = forkScript('slow-upstream-process.js', { [UPSTREAM_HOLD_ENV]: String(holdMs) });
  const waiting = new Map<number, (counters: UpstreamCounters) => void>();
  let nextId = 0;
  const send = (msg: UpstreamRequest): void => {
    child.send(msg);
  };
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`slow upstream exited with code ${code}`)));
    child.on('message', (msg: UpstreamMessage) => {
      if (msg.type === 'counters') {
        waiting.get(msg.id)?.(msg.counters);
        waiting.delete(msg.id);
        return;
      }
      resolve({
        url: msg.url,
        counters: () =>
          new Promise((done) => {
            const id = nextId++;
            waiting.set(id, done);
            send({ type: 'counters', id });
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

export type LoadDone = Extract<LoadMessage, { type: 'done' }>;

/**
 * Runs the load generator (load.ts) in a child process on the helpers' core and resolves with
 * its result once it has exited. `onTimedStart` is called when its timed part starts, `onDone`
 * the moment its result arrives (before the child exits), for readings that must end with it.
 */
export function runLoadChild(
  request: LoadRequest,
  hooks: { onTimedStart?: () => void; onDone?: (done: LoadDone) => void } = {},
): Promise<LoadDone> {
  return new Promise((resolve, reject) => {
    const child = forkScript('load.js');
    let result: LoadDone | undefined;
    let failure: string | undefined;
    child.on('message', (msg: LoadMessage) => {
      if (msg.type === 'timed-start') hooks.onTimedStart?.();
      else if (msg.type === 'done') {
        result = msg;
        hooks.onDone?.(msg);
      } else failure = msg.error;
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (result !== undefined) resolve(result);
      else
        reject(
          new Error(
            `load generator ${failure !== undefined ? `failed: ${failure}` : `exited with code ${code} without a result`}`,
          ),
        );
    });
    child.send(request);
  });
}
