// The one edge where what went wrong becomes an answer. Pacing, token and upstream code
// raise their own errors and know nothing of statuses; here each gets its status, code,
// message and headers. (XML-RPC calls will get faults from here too.)
import { HttpError } from './http-error.js';
import { tooLarge } from './body.js';
import { PacingError, WaitAbandoned } from '../pacing/pacing-errors.js';
import { NoCredential } from '../tokens/credentials.js';
import { UnusableResponse, UpstreamError } from '../upstream/forwarder.js';
import { RateLimitedByKeap } from '../upstream/back-off-on-rate-limit.js';

export interface AnswerLimits {
  /** Named in the 413 a body over MAX_BODY_BYTES gets. */
  maxBodyBytes: number;
}

/** The answer for `err`, or undefined when it is none of ours (a bug: the caller answers 500). */
export function answerFor(err: unknown, limits: AnswerLimits): HttpError | undefined {
  if (err instanceof HttpError) return err;
  if (err instanceof WaitAbandoned) return new HttpError(499, err.code, err.message);
  if (err instanceof PacingError) {
    // Only a full queue is ours to refuse; the rest is Keap's quota, answered as Keap would.
    const status = err.code === 'queue_full' ? 503 : 429;
    return new HttpError(status, err.code, err.message, { 'retry-after': String(err.retryAfterSeconds) });
  }
  if (err instanceof RateLimitedByKeap)
    return new HttpError(429, err.code, err.message, { 'retry-after': String(err.retryAfterSeconds) });
  if (err instanceof NoCredential)
    return new HttpError(503, err.code, err.message, { 'retry-after': String(err.retryAfterSeconds) });
  if (err instanceof UnusableResponse) {
    return new HttpError(
      502,
      'upstream_bad_response',
      "Keap's response could not be relayed (it was not valid HTTP). Retry later; if it persists, report the request id.",
    );
  }
  if (err instanceof UpstreamError) return upstreamFailure(err, limits);
  return undefined;
}

/** Why the request ended without Keap's answer, for the request log, when the error says. */
export function outcomeOf(err: unknown): string | undefined {
  if (err instanceof UpstreamError) return err.failure;
  if (err instanceof UnusableResponse) return 'unusable_response';
  return undefined;
}

function upstreamFailure(err: UpstreamError, limits: AnswerLimits): HttpError {
  switch (err.failure) {
    case 'timeout':
      return new HttpError(
        504,
        'upstream_timeout',
        'Keap did not answer in time (UPSTREAM_TIMEOUT_MS). The request may or may not have been processed; check before you send it again.',
      );
    case 'body_too_large':
      return tooLarge(limits.maxBodyBytes);
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
