// The last stage: send the request to Keap and pass Keap's answer through the response
// handlers before the client sees it. Composed here, in one visible place; each handler's
// policy is written at the top of its own module.
import type { GetCache } from '../cache/get-cache.js';
import type { Logger } from '../observability/log.js';
import type { Metrics } from '../observability/metrics.js';
import type { Stage } from '../pipeline/exchange.js';
import { backOffOnRateLimit, RATE_LIMIT_REPLAYS, type RateLimitReplayPolicy } from './back-off-on-rate-limit.js';
import type { Forwarder } from './forwarder.js';
import { observeQuota } from './observe-quota.js';
import { judgeKey } from './judge-key.js';
import { refreshOnUnauthorized } from './refresh-on-unauthorized.js';
import { relay } from './relay.js';
import { composeResponseSide } from './response-handlers.js';
import { createSend } from './send.js';
import type { FallBackToTranslation } from './fall-back-to-translation.js';

export interface ResponseSideDeps {
  forwarder: Forwarder;
  metrics: Metrics;
  cache: GetCache;
  logger: Logger;
  /** Bodies up to this size are held, so a 401 can be replayed; named in the log when one could not be. */
  replayBodyBytes: number;
  rateLimitReplays?: RateLimitReplayPolicy;
  /** XMLRPC_MODE=fallback only: Keap's XML-RPC answers that say it is retired or down are translated. */
  fallback?: FallBackToTranslation | undefined;
  /** Whether any account may use a key (key mode): only then is every answer judged for it. */
  keys?: boolean;
}

export function forwardToKeap(deps: ResponseSideDeps): Stage {
  const fallback = deps.fallback;
  const stage = composeResponseSide(
    createSend(deps.forwarder, deps.metrics),
    // Innermost first: every answer, each replay's too, is observed before anything reacts to it.
    [
      observeQuota(deps.metrics),
      // Key mode: every answer says whether Keap accepts the key (/readyz); a key's 401 is passed on as it is.
      ...(deps.keys !== false ? [judgeKey()] : []),
      refreshOnUnauthorized(deps.logger, deps.replayBodyBytes),
      backOffOnRateLimit(deps.logger, deps.metrics, deps.rateLimitReplays ?? RATE_LIMIT_REPLAYS),
      // Outermost: it judges the answer the client would get (after a refresh, after Keap's 429s), and may answer itself.
      ...(fallback !== undefined ? [fallback.onAnswer] : []),
    ],
    relay(deps.forwarder, deps.cache),
  );
  return fallback !== undefined ? fallback.orOnFailure(stage) : stage;
}
