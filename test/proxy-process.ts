// keap-proxy as its own process, started the way an operator starts it (src/cli/cli.ts, run
// from the TypeScript source through tsx), for what only a process can show: kill -9, signals,
// exit codes. Its JSON log lines are collected as they come.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const CLI = path.resolve(import.meta.dirname, '../src/cli/cli.ts');
/** tsx's loader, found from this repository: the process runs in a temporary folder. */
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const running = new Set<ChildProcess>();
// Whatever a failed test left running goes with the test process.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface ProxyProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** The log lines so far, parsed. */
  readonly lines: Record<string, unknown>[];
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once a log line with this event has been written. */
  waitFor(event: string): Promise<Record<string, unknown>>;
  kill(signal?: NodeJS.Signals): void;
}

export async function spawnProxy(env: Record<string, string>, cwd: string): Promise<ProxyProcess> {
  const child = spawn(process.execPath, ['--import', TSX, CLI], {
    cwd,
    // Only what is given: nothing of the test's own environment leaks into the settings.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const lines: Record<string, unknown>[] = [];
  const waiters: { event: string; resolve: (line: Record<string, unknown>) => void }[] = [];
  let pending = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const text = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (text === '') continue;
      const line = JSON.parse(text) as Record<string, unknown>;
      lines.push(line);
      for (const w of waiters.filter((x) => x.event === line.event)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      for (const w of waiters.splice(0)) w.resolve({ event: 'exited', code, stderr });
      resolve({ code, signal });
    }),
  );
  const waitFor = (event: string): Promise<Record<string, unknown>> => {
    const seen = lines.find((l) => l.event === event);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => waiters.push({ event, resolve }));
  };
  const listening = await waitFor('listening');
  if (listening.event !== 'listening') throw new Error(`keap-proxy did not start: ${stderr}`);
  return {
    url: listening.url as string,
    child,
    lines,
    exited,
    waitFor,
    kill: (signal = 'SIGTERM') => child.kill(signal),
  };
}
