// Why Keap could not be reached: each failure to get an answer from Keap (it could not be
// reached, or did not answer in time) is logged at warn with its cause (the error code:
// ECONNREFUSED, ENOTFOUND, ECONNRESET, CERT_HAS_EXPIRED, …, or `timeout`) and the upstream
// host. A cause that repeats (Keap down, a broken DNS) is logged at most once per window,
// the next line saying how many were left out. Nothing here can hold a secret: the error
// comes from the socket or TLS layer, which never sees the request's headers.
import type { Logger } from '../observability/log.js';
import { UpstreamError } from './forwarder.js';

export interface FailureLogPolicy {
  /** At most one line per cause (and host) this often; the ones left out are counted on the next. */
  windowMs: number;
  /** Most distinct causes remembered at once (a bound on memory; past it the oldest is forgotten). */
  maxCauses: number;
}

export const UPSTREAM_FAILURE_LOG: FailureLogPolicy = {
  windowMs: 10_000,
  maxCauses: 100,
};

/** The cause of an upstream failure as the logs name it; the request line carries it too. */
export function causeOf(err: UpstreamError): string {
  if (err.failure === 'timeout') return 'timeout';
  let e: unknown = err.cause;
  // Node wraps errors (AggregateError from trying each address, `cause` chains): the first code found.
  for (let depth = 0; depth < 5 && e instanceof Error; depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code !== '') return code;
    e = e instanceof AggregateError ? (e.errors as unknown[])[0] : e.cause;
  }
  return 'unknown';
}

/** The failures this log is for: Keap not reached or not in time (not a client that went, not a body too large). */
function isKeapsFailure(err: unknown): err is UpstreamError {
  return err instanceof UpstreamError && (err.failure === 'unreachable' || err.failure === 'timeout');
}

interface Window {
  /** When the last line for this cause was written. */
  loggedAt: number;
  /** Failures with this cause left out since. */
  suppressed: number;
}

export class UpstreamFailureLog {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly logger: Logger,
    /** The upstream host, as the lines name it (KEAP_API_URL's host, never its path or credentials). */
    private readonly host: string,
    private readonly now: () => number = Date.now,
    private readonly policy: FailureLogPolicy = UPSTREAM_FAILURE_LOG,
  ) {}

  /** The failure's cause, logged (unless its window is still open); undefined for errors this log is not for. */
  failed(err: unknown, reqId: string, logger: Logger = this.logger): string | undefined {
    if (!isKeapsFailure(err)) return undefined;
    const cause = causeOf(err);
    const key = `${cause} ${this.host}`;
    const now = this.now();
    const window = this.windows.get(key);
    if (window !== undefined && now - window.loggedAt < this.policy.windowMs) {
      window.suppressed += 1;
      return cause;
    }
    const suppressed = window?.suppressed ?? 0;
    this.windows.delete(key);
    this.windows.set(key, { loggedAt: now, suppressed: 0 });
    if (this.windows.size > this.policy.maxCauses) this.windows.delete(this.windows.keys().next().value as string);
    const timeout = err.failure === 'timeout';
    logger.warn(
      {
        event: timeout ? 'upstream_timeout' : 'upstream_unreachable',
        reqId,
        host: this.host,
        cause,
        error: timeout ? undefined : detailOf(err),
        suppressed: suppressed > 0 ? suppressed : undefined,
        windowMs: this.policy.windowMs,
      },
      timeout
        ? `Keap (${this.host}) did not answer within UPSTREAM_TIMEOUT_MS`
        : `Keap (${this.host}) could not be reached: ${cause}`,
    );
    return cause;
  }
}

/** The error's own message, short: what the socket or TLS layer said (e.g. `getaddrinfo ENOTFOUND host`). */
function detailOf(err: UpstreamError): string | undefined {
  const cause = err.cause;
  if (!(cause instanceof Error)) return undefined;
  const first: unknown = cause instanceof AggregateError ? (cause.errors as unknown[])[0] : undefined;
  const message = first instanceof Error ? first.message : cause.message;
  return message.length > 200 ? `${message.slice(0, 200)}…` : message;
}
