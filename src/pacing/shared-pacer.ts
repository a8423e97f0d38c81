// The pacer of a proxy with replicas (REDIS_URL set): the queue stays in each replica, the
// budgets of one Keap client and tenant live in Redis for all of them (redis-gate.ts).
import type { Logger } from '../observability/log.js';
import { NoPacer, QuotaPacer, type Pacer } from './pacer.js';
import type { PaceLimits } from './gate.js';
import { RedisGate, type RedisGateOptions } from './redis-gate.js';

export { pacingRedisOptions, type RedisGateOptions } from './redis-gate.js';

/**
 * A pacer whose budgets every replica with the same `key` shares through Redis; while Redis
 * is away, each keeps to its share (limit ÷ `replicas`). `limits.perSecond` 0 turns pacing off.
 */
export function createSharedPacer(
  limits: PaceLimits,
  logger: Logger,
  options: RedisGateOptions,
  now?: () => number,
): Pacer {
  if (limits.perSecond <= 0) return new NoPacer();
  return new QuotaPacer(limits, logger, now, new RedisGate(limits, logger, options, now));
}
