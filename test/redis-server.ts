// A real redis-server of the test's own, on a spare loopback port (never 6379, which CI and
// people use), with nothing written to disk. It can be killed and started again on the same
// port, to test what happens while Redis is away.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** Options for a test client: fails fast while the server is away, reconnects quickly when it is back. */
  clientOptions(extra?: RedisOptions): RedisOptions;
  /** A client the server closes in stop(); its errors (reconnects) are ignored. */
  client(extra?: RedisOptions): Redis;
  /** SIGKILL, as a crash would: the data (none on disk) goes with it. */
  kill(): Promise<void>;
  /** Starts it again on the same port, after kill(). */
  restart(): Promise<void>;
  /** Closes the clients made by client() and stops the server. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';

export async function startRedisServer(): Promise<RedisServer> {
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

async function serve(port: number): Promise<RedisServer> {
  let child = await launch(port);
  const clients: Redis[] = [];
  const clientOptions = (extra: RedisOptions = {}): RedisOptions => ({
    host: HOST,
    port,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: () => 50,
    ...extra,
  });
  return {
    host: HOST,
    port,
    clientOptions,
    client(extra) {
      const c = new Redis(clientOptions(extra));
      c.on('error', () => undefined);
      clients.push(c);
      return c;
    },
    async kill() {
      await terminate(child, 'SIGKILL');
    },
    async restart() {
      child = await launch(port);
    },
    async stop() {
      for (const c of clients.splice(0)) c.disconnect();
      await terminate(child, 'SIGTERM');
    },
  };
}

async function launch(port: number): Promise<ChildProcess> {
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

/** Servers still running when the test process exits (a test that never reached stop()) go with it. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** True when the server at `port` answers PING with PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
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
