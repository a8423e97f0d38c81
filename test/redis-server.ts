// A redis-server of the test's own: a spare loopback port (never 6379, which people and CI
// use), nothing written to disk. It can be killed, as a crash would, and started again on
// the same port, to test what clients do while Redis is away and when it is back.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** Options for a test client: it fails fast while the server is away and reconnects quickly when it is back. */
  clientOptions(extra?: RedisOptions): RedisOptions;
  /** A client that stop() closes; its connection errors are ignored. */
  client(extra?: RedisOptions): Redis;
  /** SIGKILL: the server goes with its data (none on disk). */
  kill(): Promise<void>;
  /** Starts it again on the same port, after kill(). */
  restart(): Promise<void>;
  /** Closes the clients client() made and stops the server. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';

export async function startRedisServer(): Promise<RedisServer> {
  // A port free a moment ago may be taken by the time redis-server binds it: then another.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await serverOn(port);
    } catch (err) {
      if (attempt >= 5) throw err;
    }
  }
}

async function serverOn(port: number): Promise<RedisServer> {
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
      await stopChild(child, 'SIGKILL');
    },
    async restart() {
      child = await launch(port);
    },
    async stop() {
      for (const c of clients.splice(0)) c.disconnect();
      await stopChild(child, 'SIGTERM');
    },
  };
}

async function launch(port: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const failed = new Promise<Error>((resolve) => {
    child.once('error', (err) => resolve(new Error(`redis-server cannot be started: ${err.message}`)));
    child.once('exit', (code, signal) =>
      resolve(new Error(`redis-server on port ${port} exited (${code ?? signal}): ${stderr.trim()}`)),
    );
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const outcome = await Promise.race([answersPing(port), failed]);
    if (outcome === true) return child;
    if (outcome instanceof Error) throw outcome;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not answer PING within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/** Whether a server on `port` answers PING with PONG (a raw socket: no client library's retries). */
function answersPing(port: number): Promise<boolean> {
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
    socket.on('data', (chunk: Buffer) => {
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
        if (port === 6379) freePort().then(resolve, reject);
        else resolve(port);
      });
    });
  });
}
