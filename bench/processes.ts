// Child processes of the benchmark and where they run. On a 2-core machine the proxy under
// test gets core 0 to itself; the simulator and the load generator share core 1. Without
// pinning the scheduler moves the three around and one run's figures differ from the next
// by a third; pinned, the proxy's own cost decides its throughput.
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { SimMessage, SimRequest } from './sim-process.js';

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

export function pinHelper(child: ChildProcess): void {
  if (child.pid !== undefined) pin(child.pid, HELPER_CORE);
}

export function forkScript(name: string): ChildProcess {
  const script = fileURLToPath(new URL(`./${name}`, import.meta.url));
  // execArgv: [] so that `node --cpu-prof dist/bench/run.js` profiles the servers only.
  const child = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
  pinHelper(child);
  return child;
}

/** The simulator, as the scenarios see it. */
export interface RemoteSimulator {
  url: string;
  tokenUrl: string;
  issueAccessToken(): Promise<string>;
  close(): Promise<void>;
}

export function startSimulator(): Promise<RemoteSimulator> {
  const child = forkScript('sim-process.js');
  const waiting = new Map<number, (token: string) => void>();
  let nextId = 0;
  const send = (msg: SimRequest): void => {
    child.send(msg);
  };
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`simulator exited with code ${code}`)));
    child.on('message', (msg: SimMessage) => {
      if (msg.type === 'token') {
        waiting.get(msg.id)?.(msg.token);
        waiting.delete(msg.id);
        return;
      }
      resolve({
        url: msg.url,
        tokenUrl: msg.tokenUrl,
        issueAccessToken: () =>
          new Promise((done) => {
            const id = nextId++;
            waiting.set(id, done);
            send({ type: 'token', id });
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
