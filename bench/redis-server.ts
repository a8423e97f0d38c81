// The scale-out scenario's Redis: a redis-server of the bench's own on a spare loopback port
// (never 6379, which people and CI use), nothing written to disk, pinned to the helpers' core
// with the simulator and the load generator (as a Redis on another host would be, it does not
// take the proxies' core). It is stopped at the end of the scenario, also when the scenario
// fails, and killed with the bench if the bench exits without stopping it.
import { onFreePort, launchRedisServer, REDIS_HOST as HOST, terminate } from '../test/simulator/redis-process.js';
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

export function startBenchRedis(): Promise<BenchRedis> {
  return onFreePort(serve);
}

async function serve(port: number): Promise<BenchRedis> {
  const child = await launchRedisServer(port, pinHelperProcess);
  const client = new Redis({ host: HOST, port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  client.on('error', () => undefined);
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
