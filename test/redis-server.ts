// A real redis-server of the test's own, on a spare loopback port (never 6379, which CI and
// people use), with nothing written to disk. It can be killed and started again on the same
// port, to test what happens while Redis is away.
import type { ChildProcess } from 'node:child_process';
import { onFreePort, launchRedisServer, REDIS_HOST as HOST, terminate } from './simulator/redis-process.js';
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

export function startRedisServer(): Promise<RedisServer> {
  return onFreePort(serve);
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

function launch(port: number): Promise<ChildProcess> {
  return launchRedisServer(port);
}
