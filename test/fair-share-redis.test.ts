// The fair share with its shared budget in Redis (a RedisGate: one client's budget for every
// replica): the fair queue works over any DepartureGate. A real redis-server of the test's own;
// the tests count departures and their order, as Redis booked them, never the machine's speed.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { randomUUID } from 'node:crypto';
import { startRedisServer, type RedisServer } from './redis-server.js';
import { createLogger } from '../src/observability/log.js';
import { SharedClient, clientLimits } from '../src/pacing/fair-share.js';
import { RedisGate, pacingRedisOptions } from '../src/pacing/redis-gate.js';
import { DailyQuotaSpent } from '../src/pacing/pacing-errors.js';
import type { Booking, PaceLimits } from '../src/pacing/gate.js';

const LIMITS: PaceLimits = {
  perSecond: 50,
  perMinute: 100_000,
  perDay: 1_000_000,
  tenantPerMinute: 100_000,
  tenantPerDay: 1_000_000,
  margin: 1,
  queueLimit: 1000,
};

/** A RedisGate that notes each departure as Redis booked it (Redis's clock). */
class RecordingGate extends RedisGate {
  booked: number[] = [];
  override async book(now: number): Promise<Booking> {
    const b = await super.book(now);
    if (b.kind === 'go') this.booked.push(b.at);
    return b;
  }
}

let redis: RedisServer;
const clients: SharedClient[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
});

afterAll(async () => {
  await redis.stop();
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.stop()));
});

/** Two replicas of one OAuth client: each its own SharedClient and Redis connection, one budget. */
interface Replica {
  client: SharedClient;
  gate: RecordingGate;
}

function replicas(): [Replica, Replica] {
  const key = randomUUID();
  const booked: number[] = [];
  const make = (): Replica => {
    const logger = createLogger('silent');
    const gate = new RecordingGate(clientLimits(LIMITS), logger, {
      redis: redis.client(pacingRedisOptions()),
      prefix: 'test:',
      key,
      replicas: 2,
    });
    gate.booked = booked;
    const client = new SharedClient(LIMITS, logger, Date.now, gate);
    clients.push(client);
    return { client, gate };
  };
  return [make(), make()];
}

describe('a fair share over a RedisGate (a client shared by replicas)', () => {
  it("a trickle beside a flood on another replica's account: the fair queue keeps the trickle's turn, Redis keeps the spacing", async () => {
    const [one, two] = replicas();
    const a = one.client.pacerFor('a');
    const b = one.client.pacerFor('b');
    const c = two.client.pacerFor('c');
    expect(a.mode()).toBe('shared');
    const order: string[] = [];
    const deadline = Date.now() + 30_000;
    const flood = Array.from({ length: 40 }, () => a.acquire(deadline, 'new').then(() => void order.push('a')));
    const other = Array.from({ length: 10 }, () => c.acquire(deadline, 'new').then(() => void order.push('c')));
    // Once the flood is under way, b's calls come one at a time.
    while (order.length < 5) await new Promise((r) => setTimeout(r, 5));
    for (let i = 0; i < 4; i++) {
      const before = order.length;
      await b.acquire(Date.now() + 30_000, 'new');
      const after = order.length;
      order.push('b');
      // On its replica, b's call takes the next departure that replica books (another replica's
      // bookings may come between, and one of a's already booked slot may land first).
      expect(order.slice(before, after).filter((x) => x === 'a').length).toBeLessThanOrEqual(1);
    }
    await Promise.all([...flood, ...other]);
    expect(order.filter((x) => x === 'a').length).toBe(40);
    // Both replicas' departures, as Redis booked them: never closer than the shared spacing.
    const booked = [...one.gate.booked].sort((x, y) => x - y);
    expect(booked.length).toBe(54);
    const gaps = booked.slice(1).map((t, i) => t - (booked[i] as number));
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(1000 / LIMITS.perSecond - 1);
  });

  it("the client's spent day, met on one replica's account, stops every account on every replica", async () => {
    const [one, two] = replicas();
    const a = one.client.pacerFor('a');
    const b = two.client.pacerFor('b');
    await a.acquire(Date.now() + 5000, 'new');
    a.exhaustDay(undefined);
    const outcomes = await Promise.allSettled([
      a.acquire(Date.now() + 5000, 'new'),
      b.acquire(Date.now() + 5000, 'new'),
    ]);
    for (const o of outcomes) {
      expect(o.status).toBe('rejected');
      expect((o as PromiseRejectedResult).reason).toBeInstanceOf(DailyQuotaSpent);
    }
  });
});
