// A redis-server process of our own, for the tests and the bench: on a spare loopback port
// (never 6379, which people and CI use), nothing written to disk, killed with the process
// that started it if it was never stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer } from 'node:net';

export const REDIS_HOST = '127.0.0.1';

/** Servers still running when this process exits (it failed before stopping them) go with it. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts redis-server on `port` and resolves once it answers PING; `onSpawn` may pin it to a core. */
export async function launchRedisServer(port: number, onSpawn?: (pid: number) => void): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', REDIS_HOST, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  running.add(child);
  child.once('exit', () => running.delete(child));
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exited = new Promise<Error>((resolve) => {
    child.once('error', (err) => resolve(new Error(`redis-server cannot be started: ${err.message}`)));
    child.once('exit', (code, signal) =>
      resolve(new Error(`redis-server on port ${port} exited (${code ?? signal}): ${stderr.trim()}`)),
    );
  });
  if (child.pid !== undefined) onSpawn?.(child.pid);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const outcome = await Promise.race([ping(port).then((ok) => (ok ? 'up' : 'not yet')), exited]);
    if (outcome === 'up') return child;
    if (outcome instanceof Error) throw outcome;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not answer PING within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Asks the server to stop with `signal`; one that does not stop within 2 s is killed. */
export function terminate(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const hard = setTimeout(() => child.kill('SIGKILL'), 2_000);
    child.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    child.kill(signal);
  });
}

/** Runs `serve` on a free port; a port free a moment ago may be taken by the time redis-server binds it: then another. */
export async function onFreePort<T>(serve: (port: number) => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    const port = await freeRedisPort();
    try {
      return await serve(port);
    } catch (err) {
      if (tries >= 5) throw err;
    }
  }
}

/** A loopback port free a moment ago (never 6379). */
export function freeRedisPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, REDIS_HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => {
        if (port === 6379) freeRedisPort().then(resolve, reject);
        else resolve(port);
      });
    });
  });
}

/** True when the server at `port` answers PING with PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: REDIS_HOST, port });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('utf8');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}
