// The scale-out scenario's Redis: a redis-server of the bench's own on a spare loopback port
// (never 6379, which people and CI use), nothing written to disk, pinned to the helpers' core
// with the simulator and the load generator (as a Redis on another host would be, it does not
// take the proxies' core). It is stopped at the end of the scenario, also when the scenario
// fails, and killed with the bench if the bench exits without stopping it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { pinHelperProcess } from './processes.js';

export interface BenchRedis {
  /** redis://127.0.0.1:<port>/0 */
  url: string;
  port: number;
  /** Deletes every key: each measurement starts from an empty Redis, as from a fresh process. */
  flush(): Promise<void>;
  /** CPU time redis-server has used so far, in µs (INFO cpu: used_cpu_user + used_cpu_sys). */
  cpuUs(): Promise<number>;
  /** INFO server's redis_version. */
  version(): Promise<string>;
  /** One PING's round trip from this process, in ms. */
  pingMs(): Promise<number>;
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';

export async function startBenchRedis(): Promise<BenchRedis> {
  // A port that was free a moment ago may be taken by the time redis-server binds it: try another.
  for (let tries = 1; ; tries++) {
    const port = await freePort();
    try {
      return await serve(port);
    } catch (err) {
      if (tries >= 5) throw err;
    }
  }
}

async function serve(port: number): Promise<BenchRedis> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
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
  if (child.pid !== undefined) pinHelperProcess(child.pid);
  const client = new Redis({ host: HOST, port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  client.on('error', () => undefined);
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const outcome = await Promise.race([
        client.ping().then(
          () => 'up' as const,
          () => 'not yet' as const,
        ),
        exited,
      ]);
      if (outcome === 'up') break;
      if (outcome instanceof Error) throw outcome;
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within 10 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    client.disconnect();
    await terminate(child, 'SIGKILL');
    throw err;
  }
  return {
    url: `redis://${HOST}:${port}/0`,
    port,
    async flush() {
      await client.flushall();
    },
    async cpuUs() {
      const info = await client.info('cpu');
      const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
      return Math.round((field('used_cpu_user') + field('used_cpu_sys')) * 1e6);
    },
    async pingMs() {
      const t = performance.now();
      await client.ping();
      return performance.now() - t;
    },
    async version() {
      return /^redis_version:(\S+)/m.exec(await client.info('server'))?.[1] ?? 'unknown';
    },
    async stop() {
      client.disconnect();
      await terminate(child, 'SIGTERM');
    },
  };
}

function terminate(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    // A server that does not stop when asked is killed.
    const hard = setTimeout(() => child.kill('SIGKILL'), 2_000);
    child.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    child.kill(signal);
  });
}

/** Servers still running when the bench exits (it failed before stop()) go with it. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => {
        // Never the well-known port, whatever the system hands out.
        if (port === 6379) freePort().then(resolve, reject);
        else resolve(port);
      });
    });
  });
}
