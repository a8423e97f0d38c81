// What a pacer raises when a call may not leave. These know nothing of HTTP: the one edge
// that answers clients (http/error-answers.ts) turns each into a status and headers.

/** A call the pacer will not let leave; `code` is also the error code clients see. */
export abstract class PacingError extends Error {
  abstract readonly code: string;
  /** When trying again may succeed, in whole seconds (at least 1). */
  abstract readonly retryAfterSeconds: number;
}

/** Too many calls wait already: this one is refused at once rather than queued. */
export class QueueFull extends PacingError {
  readonly code = 'queue_full';
  constructor(
    readonly queueLimit: number,
    readonly retryAfterSeconds: number,
  ) {
    super(
      `Too many requests are waiting for Keap's rate limit (QUEUE_LIMIT ${queueLimit}). Retry after the indicated time.`,
    );
    this.name = 'QueueFull';
  }
}

/** Keap's daily quota is spent until `resetsAt` (00:00 UTC when Keap did not say). */
export class DailyQuotaSpent extends PacingError {
  readonly code = 'daily_quota_exhausted';
  constructor(
    readonly resetsAt: number | undefined,
    readonly retryAfterSeconds: number,
  ) {
    super(
      `Keap's daily API quota is spent; it resets at ${resetsAt !== undefined ? new Date(resetsAt).toISOString() : '00:00 UTC'}. Retry after the indicated time.`,
    );
    this.name = 'DailyQuotaSpent';
  }
}

/** Keap's rate limit would keep this call waiting past its deadline. */
export class DeadlineExceeded extends PacingError {
  readonly code = 'rate_limited';
  constructor(readonly retryAfterSeconds: number) {
    super(
      "Keap's rate limit would keep this request waiting past its deadline (REQUEST_DEADLINE_MS or X-Keap-Proxy-Deadline-Ms). Retry after the indicated time.",
    );
    this.name = 'DeadlineExceeded';
  }
}

/** The caller gave up its turn (its client went away) before the call left: nothing was sent. */
export class WaitAbandoned extends PacingError {
  readonly code = 'client_closed';
  readonly retryAfterSeconds = 1;
  constructor() {
    super('The client closed the connection while its request waited for the rate limit; it was not sent.');
    this.name = 'WaitAbandoned';
  }
}
