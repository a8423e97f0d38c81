// Observe quota: Keap's quota headers bring the account's pacer budgets down when Keap
// reports less left than we counted (other apps spend the same quota), and feed the gauges.
import type { IncomingMessage } from 'node:http';
import type { Account } from '../accounts/account.js';
import { parseQuotaHeaders } from '../keap/keap-quota.js';
import type { Metrics } from '../observability/metrics.js';
import { accountOf } from '../pipeline/exchange.js';
import type { ResponseHandler } from './response-handlers.js';

export interface QuotaObservationPolicy {
  /**
   * Headers are read at most this often per account: ten times a second is plenty to follow a
   * per-minute budget, and reading them on every response would cost more than the rest of
   * the proxy's work on it.
   */
  everyMs: number;
  /** ...except on these statuses, always read: a 429's reaction needs Keap's latest count. */
  alwaysOn: readonly number[];
  /**
   * ...and on these, never: the gateway's 401 carries every quota header empty (unknown, never
   * zero), so it says nothing, and must not take the turn of the next answer that does.
   */
  neverOn: readonly number[];
}

export const QUOTA_OBSERVATION: QuotaObservationPolicy = { everyMs: 100, alwaysOn: [429], neverOn: [401] };

export function observeQuota(
  metrics: Metrics,
  policy: QuotaObservationPolicy = QUOTA_OBSERVATION,
  now: () => number = Date.now,
): ResponseHandler {
  const readAt = new WeakMap<Account, number>();
  const always = new Set(policy.alwaysOn);
  const never = new Set(policy.neverOn);
  return (ex, res: IncomingMessage) => {
    if (never.has(res.statusCode ?? 0)) return res;
    const account = accountOf(ex);
    const t = now();
    if (t - (readAt.get(account) ?? -Infinity) < policy.everyMs && !always.has(res.statusCode ?? 0)) return res;
    readAt.set(account, t);
    const report = parseQuotaHeaders(res.headers);
    if (report === undefined) return res;
    account.pacer.observe(report);
    metrics.observeQuota(account.id, account.label(), report);
    return res;
  };
}
