// The last stage: send the request to Keap and react to Keap's answer before the client
// sees it. A gateway 401 with one of Apigee's token faults means Apigee rejected the token
// before Keap processed anything, so a new token and one replay (every method, body and
// all) is safe; the client does not see that 401. Any other 401, a 401 inside the broker's
// refresh floor and a second 401 go to the client. A gateway 429 is as safe to replay: the
// whole queue waits as long as Keap asks, and the request goes again, within the replay
// policy below and the request's deadline. Nothing is sent for a client that has gone.
import type { IncomingMessage } from 'node:http';
import type { Logger } from '../observability/log.js';
import type { CredentialSource } from '../tokens/credentials.js';
import { type Forwarder, UnusableResponse, UpstreamError } from './forwarder.js';
import { HttpError, markAnsweredClosing } from '../http/http-error.js';
import { tooLarge } from '../http/body.js';
import { classifyUnauthorized, NOT_APPROVED_AFTER_REFRESH, parseFault, type Fault } from '../keap/apigee.js';
import { parseQuotaHeaders, type QuotaReport } from '../keap/keap-quota.js';
import { nextUtcMidnight, type Pacer } from '../pacing/pacer.js';
import type { Metrics } from '../observability/metrics.js';
import type { GetCache } from '../cache/get-cache.js';
import { bodyUnread, clientSignal, injectCredential, type Exchange, type Stage } from '../pipeline/exchange.js';

export interface ForwardDeps {
  forwarder: Forwarder;
  credentials: CredentialSource;
  pacer: Pacer;
  metrics: Metrics;
  cache: GetCache;
  logger: Logger;
  maxBodyBytes: number;
  replayBodyBytes: number;
  /** How Keap's 429s are replayed; RATE_LIMIT_REPLAYS' defaults unless configured. */
  rateLimitReplays?: RateLimitReplayPolicy;
}

/**
 * Replaying after Keap's 429. A gateway 429 means Keap did not process the request, so a
 * replay is safe for every method; what needs bounding is how often and how fast, whatever
 * Keap's headers say (`Retry-After: 0` must not become a loop).
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

/** The most of an error body we read to classify it; Apigee's faults are a few hundred bytes. */
const FAULT_BODY_LIMIT = 64 * 1024;

/**
 * Keap's quota headers are read at most this often (and on every 429): ten times a second
 * is plenty to follow a per-minute budget, and reading them on every response would cost
 * more than the rest of the proxy's work on it.
 */
const QUOTA_SAMPLE_MS = 100;

export function forward(deps: ForwardDeps): Stage {
  let quotaReadAt = 0;
  /** Returns the report when the headers were read (always for a 429, whose reaction needs it). */
  const observeQuota = (upstream: IncomingMessage): QuotaReport | undefined => {
    const now = Date.now();
    if (now - quotaReadAt < QUOTA_SAMPLE_MS && upstream.statusCode !== 429) return undefined;
    quotaReadAt = now;
    const report = parseQuotaHeaders(upstream.headers);
    if (report === undefined) return undefined;
    deps.pacer.observe(report);
    deps.metrics.observeQuota(deps.credentials.tenant(), report);
    return report;
  };
  /** Keap's answer goes to the client as it is, or (on the 401 and 429 a replay can fix) through a reaction first. */
  const answer = (ex: Exchange, upstream: IncomingMessage): void | Promise<void> => {
    const report = observeQuota(upstream);
    if (upstream.statusCode === 401 || upstream.statusCode === 429) {
      // A reaction may relay a response it read (relayBuffered): one Node refuses to write is a 502 there too.
      return react(ex, upstream, report).catch((err: unknown) => {
        throw unusable(deps, ex, err);
      });
    }
    relay(ex, upstream);
  };
  const policy = deps.rateLimitReplays ?? RATE_LIMIT_REPLAYS;
  const react = async (ex: Exchange, first: IncomingMessage, firstReport: QuotaReport | undefined): Promise<void> => {
    let upstream: IncomingMessage | undefined = first;
    let report = firstReport;
    let refreshed = false;
    // Each reaction either answers the client (undefined) or hands back the replay's response.
    for (;;) {
      if (upstream.statusCode === 401 && !refreshed) {
        refreshed = true;
        upstream = await replayAfterUnauthorized(deps, ex, upstream);
      } else if (upstream.statusCode === 429) {
        upstream = await replayAfterRateLimit(deps, policy, ex, upstream, report);
      } else {
        break;
      }
      if (upstream === undefined) return;
      report = observeQuota(upstream);
    }
    relay(ex, upstream);
  };
  const relay = (ex: Exchange, upstream: IncomingMessage): void => {
    ex.upstreamStatus = upstream.statusCode;
    const extra = closingIfBodyUnread(ex);
    try {
      if (ex.cacheKey !== undefined) {
        deps.forwarder.relay(upstream, ex.res, ex.id, extra === undefined ? CACHE_MISS : [...CACHE_MISS, ...extra]);
        // After the head is written (an unusable response is never cached); same tick as the relay's pipe, so the capture sees every chunk.
        if (upstream.statusCode === 200) deps.cache.capture(ex.cacheKey.key, ex.cacheKey.ttlMs, upstream);
      } else {
        deps.forwarder.relay(upstream, ex.res, ex.id, extra);
      }
    } catch (err) {
      throw unusable(deps, ex, err);
    }
  };
  return (ex) => send(deps, ex).then((upstream) => answer(ex, upstream));
}

const CACHE_MISS = ['x-cache', 'MISS'];
const CONNECTION_CLOSE = ['connection', 'close'];

/** Keap answered before the client's body was read to its end: this connection cannot carry another request. */
function closingIfBodyUnread(ex: Exchange): readonly string[] | undefined {
  if (!bodyUnread(ex)) return undefined;
  markAnsweredClosing(ex.req.socket);
  return CONNECTION_CLOSE;
}

/** Keap's answer cannot be written as it is (a header Node refuses): the client gets 502 and the log says why. */
function unusable(deps: ForwardDeps, ex: Exchange, err: unknown): unknown {
  if (!(err instanceof UnusableResponse)) return err;
  ex.outcome = 'unusable_response';
  deps.logger.warn(
    { event: 'upstream_response_unusable', reqId: ex.id, upstreamStatus: ex.upstreamStatus, reason: err.reason },
    "Keap's response could not be relayed as it is: the client gets 502",
  );
  return new HttpError(
    502,
    'upstream_bad_response',
    "Keap's response could not be relayed (it was not valid HTTP). Retry later; if it persists, report the request id.",
  );
}

/** Every send, the first and each replay, goes through here: a client that has gone gets nothing sent for it. */
function send(deps: ForwardDeps, ex: Exchange): Promise<IncomingMessage> {
  if (ex.clientGone) return Promise.reject(upstreamFailure(new UpstreamError('client_closed'), ex, deps.maxBodyBytes));
  ex.attempts += 1;
  const started = performance.now();
  return deps.forwarder.send(ex.req, ex.res, ex.body, ex.bodyStream).then(
    (upstream) => {
      deps.metrics.upstreamDone(ex.xmlrpc ? 'xmlrpc' : 'rest', (performance.now() - started) / 1000);
      return upstream;
    },
    (err: unknown) => {
      throw upstreamFailure(err, ex, deps.maxBodyBytes);
    },
  );
}

/** Returns the response to relay, or undefined when this already answered the client. */
async function replayAfterUnauthorized(
  deps: ForwardDeps,
  ex: Exchange,
  upstream: IncomingMessage,
): Promise<IncomingMessage | undefined> {
  const used = ex.credential;
  // A key cannot be refreshed: the client sees Keap's 401 as it is.
  if (used === undefined || used.kind !== 'bearer') return upstream;
  const peeked = await peekSmall(upstream, FAULT_BODY_LIMIT);
  // Too large to be Apigee's fault: the application's answer, relayed whole (streamed) below.
  const body = peeked ?? Buffer.alloc(0);
  const fault: Fault = peeked !== undefined ? parseFault(peeked) : { errorcode: undefined, faultstring: undefined };
  const answer = (response: IncomingMessage = upstream, bytes: Buffer = body): undefined => {
    ex.upstreamStatus = response.statusCode;
    deps.forwarder.relayBuffered(response, bytes, ex.res, ex.id, closingIfBodyUnread(ex));
    return undefined;
  };
  const notApproved = (errorcode: string | undefined): void => {
    deps.logger.error(
      { event: 'app_not_approved', reqId: ex.id, errorcode },
      "Keap says this OAuth app is not approved: no token refresh helps; check the app's status in Keap's developer portal",
    );
  };
  const kind = classifyUnauthorized(fault);
  if (kind === 'other') {
    // Not the gateway's fault body, so not proof that our token is bad: refreshing on it would
    // let any upstream answer rotate the refresh token, and a replay could write twice.
    // Neither the body nor its errorcode is logged: an upstream may echo anything, our token included.
    deps.logger.info(
      {
        event: 'unauthorized_passed_on',
        reqId: ex.id,
        status: upstream.statusCode,
        apigeeFault: fault.errorcode !== undefined,
      },
      "Keap answered 401 without one of Apigee's token faults: passed on to the client, no refresh, no replay",
    );
    return peeked === undefined ? upstream : answer();
  }
  if (kind === 'not_approved') {
    notApproved(fault.errorcode);
    return answer();
  }
  if (ex.bodyStream !== undefined) {
    deps.logger.warn(
      {
        event: 'replay_skipped',
        reqId: ex.id,
        errorcode: fault.errorcode,
        reason: 'body_streamed',
        replayBodyBytes: deps.replayBodyBytes,
      },
      'Keap rejected the token, but the request body was larger than REPLAY_BODY_BYTES and was streamed, so it cannot be replayed: the client gets the 401',
    );
    await deps.credentials.invalidate(used);
    return answer();
  }
  deps.logger.debug(
    { event: 'token_rejected_by_keap', reqId: ex.id, errorcode: fault.errorcode },
    'replaying with a new token',
  );
  // No other token: either the broker's refresh floor kept this one (it still serves, so
  // Keap's 401 is the honest answer), or the refresh failed and get() says so (503).
  if (!(await deps.credentials.invalidate(used)) && deps.credentials.current() !== undefined) return answer();
  ex.credential = await deps.credentials.get();
  injectCredential(ex);
  await deps.pacer.acquire(ex.deadline, 'replay', clientSignal(ex));
  const replayed = await send(deps, ex);
  if (fault.errorcode !== NOT_APPROVED_AFTER_REFRESH || replayed.statusCode !== 401) return replayed;
  // Apigee says "not approved" for one revoked token too; the same answer for a fresh token means the app.
  const again = await peekSmall(replayed, FAULT_BODY_LIMIT);
  if (again === undefined) return replayed;
  const second = parseFault(again);
  if (second.errorcode === NOT_APPROVED_AFTER_REFRESH || classifyUnauthorized(second) === 'not_approved')
    notApproved(second.errorcode);
  return answer(replayed, again);
}

/**
 * The whole body when it is at most `limit` bytes. A larger one is no Apigee fault, and the
 * client must still get all of it: what was read is put back and undefined returned, so the
 * response can be relayed as it came.
 */
function peekSmall(res: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // The error listener stays: a response put back may still fail before the relay listens.
    const stop = (): void => {
      res.off('data', onData);
      res.off('end', onEnd);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size <= limit) return;
      res.pause();
      stop();
      res.unshift(Buffer.concat(chunks));
      resolve(undefined);
    };
    const onEnd = (): void => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    res.on('data', onData);
    res.once('end', onEnd);
    res.once('error', reject);
  });
}

/**
 * Keap answered 429. Keap documents no Retry-After: use it when present; else a spike
 * arrest passes within about a second, a minute throttle within the minute, and a spent
 * daily quota only at its reset, which no client should wait for.
 */
async function replayAfterRateLimit(
  deps: ForwardDeps,
  policy: RateLimitReplayPolicy,
  ex: Exchange,
  upstream: IncomingMessage,
  report: QuotaReport | undefined,
): Promise<IncomingMessage | undefined> {
  const body = await readSmall(upstream, FAULT_BODY_LIMIT);
  const fault = parseFault(body);
  ex.rateLimited += 1;
  const wait = rateLimitWait(upstream.headers['retry-after'], fault, report, ex.rateLimited, Date.now(), policy);
  // A 429 the client must see is ours, in the proxy's shape and always with Retry-After (Keap's may have none).
  const passOn = (code: string, message: string): never => {
    ex.upstreamStatus = 429;
    throw new HttpError(429, code, message, { 'retry-after': String(Math.max(1, Math.ceil(wait.ms / 1000))) });
  };
  const tenant = deps.credentials.tenant();
  if (wait.dailyQuotaSpent) {
    deps.pacer.exhaustDay(wait.resetsAt);
    deps.logger.warn(
      { event: 'rate_limited', reqId: ex.id, errorcode: fault.errorcode, outcome: 'passed_on', reason: 'daily_quota' },
      "Keap's daily quota is spent",
    );
    passOn(
      'daily_quota_exhausted',
      "Keap's daily API quota is spent; it resets at 00:00 UTC. Retry after the indicated time.",
    );
  }
  deps.pacer.backOff(wait.ms);
  const reason =
    ex.bodyStream !== undefined
      ? 'body_streamed'
      : ex.attempts >= policy.maxAttempts
        ? 'attempts'
        : Date.now() + wait.ms > ex.deadline
          ? 'deadline'
          : undefined;
  if (reason !== undefined) {
    deps.logger.warn(
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
    passOn('rate_limited', PASS_ON_MESSAGES[reason]);
  }
  deps.metrics.rateLimited(tenant, 'absorbed');
  deps.logger.info(
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
  // The pacer's queue is paused for wait.ms (backOff above); without a pacer this request waits alone.
  if (deps.pacer.enabled) await deps.pacer.acquire(ex.deadline, 'replay', clientSignal(ex));
  else await clientWait(ex, wait.ms);
  return send(deps, ex);
}

const PASS_ON_MESSAGES = {
  body_streamed:
    "Keap's rate limit was hit and this request's body was too large to keep for a replay (REPLAY_BODY_BYTES). Retry after the indicated time.",
  attempts:
    'Keap kept answering 429 to this request (RATE_LIMIT_MAX_ATTEMPTS sends); it was not processed. Retry after the indicated time.',
  deadline:
    "Keap's rate limit would keep this request waiting past its deadline (REQUEST_DEADLINE_MS or X-Keap-Proxy-Deadline-Ms). Retry after the indicated time.",
} as const;

/** Waits `ms`, or less if the client goes away (send() then sends nothing). */
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
    return { ms: Math.max(0, (dayResets ?? nextUtcMidnight(now)) - now), dailyQuotaSpent: true, resetsAt: dayResets };
  }
  // A minute throttle frees as the rolling window moves; a spike arrest within seconds.
  const curve = fault.errorcode === 'policies.ratelimit.SpikeArrestViolation' ? policy.spike : policy.throttle;
  const spread = 1 - policy.jitter + random() * 2 * policy.jitter;
  const doubling = 2 ** Math.min(attempt - 1, 16);
  // Even when Keap says "now" (Retry-After: 0), replays of one request back off from the minimum.
  const floor = Math.max(policy.minDelayMs, Math.min(curve.maxMs, policy.minDelayMs * doubling) * spread);
  const given = parseRetryAfter(retryAfter, now);
  const ms = given !== undefined ? given : Math.min(curve.maxMs, curve.baseMs * doubling) * spread;
  return { ms: Math.max(floor, ms), dailyQuotaSpent: false, resetsAt: undefined };
}

/** Retry-After in seconds or as an HTTP date. */
function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function readSmall(res: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    res.once('end', () => resolve(Buffer.concat(chunks)));
    res.once('error', reject);
  });
}

function upstreamFailure(err: unknown, ex: Exchange, maxBodyBytes: number): HttpError {
  if (!(err instanceof UpstreamError)) throw err;
  ex.outcome = err.failure;
  switch (err.failure) {
    case 'timeout':
      return new HttpError(
        504,
        'upstream_timeout',
        'Keap did not answer in time (UPSTREAM_TIMEOUT_MS). The request may or may not have been processed; check before you send it again.',
      );
    case 'body_too_large':
      return tooLarge(maxBodyBytes);
    case 'client_closed':
      return new HttpError(499, 'client_closed', 'The client closed the connection.');
    default:
      return new HttpError(
        502,
        'upstream_unreachable',
        'Keap could not be reached. Retry later; if it persists, check KEAP_API_URL and the network.',
      );
  }
}
