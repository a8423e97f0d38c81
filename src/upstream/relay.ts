// Relay: Keap's final answer goes to the client as it came (only what Node can write; see
// Forwarder.relay), streamed, or as the bytes a handler already read; and, for a GET the
// cache rules allow, captured for the cache as it streams.
import type { GetCache } from '../cache/get-cache.js';
import { markAnsweredClosing } from '../http/http-error.js';
import { bodyUnread, type Exchange } from '../pipeline/exchange.js';
import type { Forwarder } from './forwarder.js';
import { readBodyOf } from './response-body.js';
import type { Relay } from './response-handlers.js';

export interface CacheCapturePolicy {
  /** Only these answers are kept; anything else may be an error of the moment. */
  statuses: readonly number[];
}

export const CACHE_CAPTURE: CacheCapturePolicy = { statuses: [200] };

const CACHE_MISS = ['x-cache', 'MISS'];
const CONNECTION_CLOSE = ['connection', 'close'];

export function relay(forwarder: Forwarder, cache: GetCache, capture: CacheCapturePolicy = CACHE_CAPTURE): Relay {
  return (ex, upstream) => {
    ex.upstreamStatus = upstream.statusCode;
    const extra = closingIfBodyUnread(ex);
    const read = readBodyOf(upstream);
    if (read !== undefined) {
      forwarder.relayBuffered(upstream, read, ex.res, ex.id, extra);
    } else if (ex.cacheKey !== undefined) {
      forwarder.relay(upstream, ex.res, ex.id, extra === undefined ? CACHE_MISS : [...CACHE_MISS, ...extra]);
      // After the head is written (an unusable response is never cached); same tick as the relay's pipe, so the capture sees every chunk.
      if (capture.statuses.includes(upstream.statusCode ?? 0))
        cache.capture(ex.cacheKey.key, ex.cacheKey.ttlMs, upstream);
    } else {
      forwarder.relay(upstream, ex.res, ex.id, extra);
    }
  };
}

/** Keap answered before the client's body was read to its end: this connection cannot carry another request. */
function closingIfBodyUnread(ex: Exchange): readonly string[] | undefined {
  if (!bodyUnread(ex)) return undefined;
  markAnsweredClosing(ex.req.socket);
  return CONNECTION_CLOSE;
}
