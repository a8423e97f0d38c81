// Back off on 429: a gateway 429 means Keap did not process the request, so a replay is
// safe for every method. The account's whole queue waits as long as Keap asks, then the
// request goes again, within the policy below and the request's deadline. Keap documents no
// Retry-After: it is used when present; else a spike arrest passes within about a second, a
// minute throttle within the minute, and a spent daily quota only at its reset, which no
// client should wait for. A spike arrest with a pacer does not pause the queue that long: the
// pacer lowers its pace to what Keap accepts (adaptive-pace.ts) and waits only Retry-After.
import type { IncomingMessage } from 'node:http';
import { parseFault, type Fault } from '../keap/apigee.js';
import { parseQuotaHeaders, type QuotaReport } from '../keap/keap-quota.js';
import type { Logger } from '../observability/log.js';
import type { Metrics } from '../observability/metrics.js';
import { DailyQuotaSpent } from '../pacing/pacing-errors.js';
import { nextUtcMidnight } from '../pacing/pacer.js';
import { accountOf, clientSignal, loggerOf, type Exchange } from '../pipeline/exchange.js';
import { FAULT_BODY_LIMIT, readSmall } from './response-body.js';
import type { Dispatch, ResponseHandler } from './response-handlers.js';

/**
 * Replaying after Keap's 429. What needs bounding is how often and how fast, whatever Keap's
 * headers say (`Retry-After: 0` must not become a loop).
 */
export interface RateLimitReplayPolicy {
  /** Sends of one request in all, the first included; then the client gets the 429. */
  maxAttempts: number;
  /** No replay sooner than this after a 429, whatever Retry-After says. */
  minDelayMs: number;
  /** Backoff without Retry-After: a spike arrest passes within seconds... */
  spike: { baseMs: number; maxMs: number };
  /** ...a rolling minute throttle within the minute. */
  throttle: { baseMs: number; maxMs: number };
  /** Each backoff is spread by ± this share, so clients that met the same 429 do not return together. */
  jitter: number;
}

export const RATE_LIMIT_REPLAYS: RateLimitReplayPolicy = {
  maxAttempts: 10,
  minDelayMs: 250,
  spike: { baseMs: 1000, maxMs: 4000 },
  throttle: { baseMs: 2000, maxMs: 60_000 },
  jitter: 0.25,
};

/** Keap rate-limited a request that cannot wait or be replayed; it was not processed. */
export class RateLimitedByKeap extends Error {
  readonly code = 'rate_limited';
  constructor(
    readonly reason: keyof typeof PASS_ON_MESSAGES,
    readonly retryAfterSeconds: number,
  ) {
    super(PASS_ON_MESSAGES[reason]);
    this.name = 'RateLimitedByKeap';
  }
}

const PASS_ON_MESSAGES = {
  body_streamed:
    "Keap's rate limit was hit and this request's body was too large to keep for a replay (REPLAY_BODY_BYTES). Retry after the indicated time.",
  attempts:
    'Keap kept answering 429 to this request (RATE_LIMIT_MAX_ATTEMPTS sends); it was not processed. Retry after the indicated time.',
  deadline:
    "Keap's rate limit would keep this request waiting past its deadline (REQUEST_DEADLINE_MS or X-Keap-Proxy-Deadline-Ms). Retry after the indicated time.",
} as const;

export function backOffOnRateLimit(
  logger: Logger,
  metrics: Metrics,
  policy: RateLimitReplayPolicy = RATE_LIMIT_REPLAYS,
): ResponseHandler {
  // A replay's own 429 is met by this same policy, until it says stop.
  const untilNotRateLimited = async (
    ex: Exchange,
    res: IncomingMessage,
    resend: Dispatch,
  ): Promise<IncomingMessage> => {
    let upstream = res;
    while (upstream.statusCode === 429) upstream = await waitAndReplay(logger, metrics, policy, ex, upstream, resend);
    return upstream;
  };
  return (ex, res, resend) => (res.statusCode === 429 ? untilNotRateLimited(ex, res, resend) : res);
}

async function waitAndReplay(
  rootLogger: Logger,
  metrics: Metrics,
  policy: RateLimitReplayPolicy,
  ex: Exchange,
  upstream: IncomingMessage,
  resend: Dispatch,
): Promise<IncomingMessage> {
  const account = accountOf(ex);
  const logger = loggerOf(ex, rootLogger);
  const report = parseQuotaHeaders(upstream.headers);
  const body = await readSmall(upstream, FAULT_BODY_LIMIT);
  const fault = parseFault(body);
  ex.rateLimited += 1;
  const wait = rateLimitWait(upstream.headers['retry-after'], fault, report, ex.rateLimited, Date.now(), policy);
  // A 429 the client must see is ours, in the proxy's shape and always with Retry-After (Keap's may have none).
  const retryAfterSeconds = Math.max(1, Math.ceil(wait.ms / 1000));
  ex.upstreamStatus = 429;
  if (wait.dailyQuotaSpent) {
    account.pacer.exhaustDay(wait.resetsAt);
    logger.warn(
      { event: 'rate_limited', reqId: ex.id, errorcode: fault.errorcode, outcome: 'passed_on', reason: 'daily_quota' },
      "Keap's daily quota is spent",
    );
    throw new DailyQuotaSpent(wait.resetsAt, retryAfterSeconds);
  }
  if (wait.spikeArrest) account.pacer.spikeArrested(wait.retryAfterMs, wait.ms);
  else account.pacer.backOff(wait.ms);
  const reason =
    ex.bodyStream !== undefined
      ? 'body_streamed'
      : ex.attempts >= policy.maxAttempts
        ? 'attempts'
        : Date.now() + wait.ms > ex.deadline
          ? 'deadline'
          : undefined;
  if (reason !== undefined) {
    logger.warn(
      {
        event: 'rate_limited',
        reqId: ex.id,
        errorcode: fault.errorcode,
        outcome: 'passed_on',
        waitMs: Math.round(wait.ms),
        attempts: ex.attempts,
        reason,
      },
      'Keap rate-limited a request that cannot wait or be replayed',
    );
    throw new RateLimitedByKeap(reason, retryAfterSeconds);
  }
  metrics.rateLimited(account.id, account.label(), 'absorbed');
  logger.info(
    {
      event: 'rate_limited',
      reqId: ex.id,
      errorcode: fault.errorcode,
      outcome: 'absorbed',
      waitMs: Math.round(wait.ms),
      attempts: ex.attempts,
    },
    'Keap answered 429: waiting, then replaying',
  );
  // The pacer's queue is paused for wait.ms (backOff above), or after a spike arrest its pace
  // lowered and this request alone waits its least wait, so replays of one request stay apart;
  // without a pacer this request waits alone.
  if (account.pacer.enabled) {
    if (wait.spikeArrest) await clientWait(ex, wait.floorMs);
    await account.pacer.acquire(ex.deadline, 'replay', clientSignal(ex));
  } else await clientWait(ex, wait.ms);
  return resend(ex);
}

/** Waits `ms`, or less if the client goes away (send then sends nothing). */
function clientWait(ex: Exchange, ms: number): Promise<void> {
  const signal = clientSignal(ex);
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

export interface RateLimitWait {
  ms: number;
  dailyQuotaSpent: boolean;
  resetsAt: number | undefined;
  /** Keap's spike arrest (per second): the pacer lowers its pace rather than pausing `ms`. */
  spikeArrest: boolean;
  /** Keap's own Retry-After, when it gave one. */
  retryAfterMs: number | undefined;
  /** The least this request waits before its replay, whatever Keap says (the policy's minimum, doubling). */
  floorMs: number;
}

/**
 * How long to wait after the `attempt`-th 429 of a request: Keap's Retry-After when it gives
 * one, else the backoff for the kind of limit hit; never less than the policy's minimum.
 * `random` is injectable so tests can pin the jitter.
 */
export function rateLimitWait(
  retryAfter: string | undefined,
  fault: Fault,
  report: QuotaReport | undefined,
  attempt: number,
  now: number,
  policy: RateLimitReplayPolicy = RATE_LIMIT_REPLAYS,
  random: () => number = Math.random,
): RateLimitWait {
  const day = report?.product.day;
  const dayResets = day?.resetsAt;
  const quotaFault =
    fault.errorcode === 'policies.ratelimit.QuotaViolation' ||
    (fault.errorcode === undefined && !/spike/i.test(fault.faultstring ?? ''));
  if (quotaFault && day?.available !== undefined && day.available <= 0) {
    return {
      ms: Math.max(0, (dayResets ?? nextUtcMidnight(now)) - now),
      dailyQuotaSpent: true,
      resetsAt: dayResets,
      spikeArrest: false,
      retryAfterMs: undefined,
      floorMs: policy.minDelayMs,
    };
  }
  // A minute throttle frees as the rolling window moves; a spike arrest within seconds.
  const spikeArrest = fault.errorcode === 'policies.ratelimit.SpikeArrestViolation';
  const curve = spikeArrest ? policy.spike : policy.throttle;
  const spread = 1 - policy.jitter + random() * 2 * policy.jitter;
  const doubling = 2 ** Math.min(attempt - 1, 16);
  // Even when Keap says "now" (Retry-After: 0), replays of one request back off from the minimum.
  const floor = Math.max(policy.minDelayMs, Math.min(curve.maxMs, policy.minDelayMs * doubling) * spread);
  const given = parseRetryAfter(retryAfter, now);
  const ms = given !== undefined ? given : Math.min(curve.maxMs, curve.baseMs * doubling) * spread;
  return {
    ms: Math.max(floor, ms),
    dailyQuotaSpent: false,
    resetsAt: undefined,
    spikeArrest,
    retryAfterMs: given,
    floorMs: floor,
  };
}

/** Retry-After in seconds or as an HTTP date. */
function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
