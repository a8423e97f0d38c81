// Turns any burst into the fastest schedule Keap accepts. Keap meters every OAuth client
// and tenant behind Apigee: a spike arrest per second (smoothed: 25/s means one call per
// 40 ms), a rolling per-minute throttle and a daily quota that resets at 00:00 UTC.
//
// bottleneck holds the queue: bounded (a full queue answers at once), ordered, replays
// ahead of new calls, one departure decided at a time. The gate each job runs (gate.ts)
// decides when that departure may go: evenly spaced, inside the minute and day windows
// (ours plus what Keap reports others spent), and not while Keap has told us to back off.
import Bottleneck from 'bottleneck';
import type { Logger } from '../observability/log.js';
import { DailyQuotaSpent, DeadlineExceeded, PacingError, QueueFull, WaitAbandoned } from './pacing-errors.js';
import type { QuotaReport } from '../keap/keap-quota.js';
import { LocalGate, type DepartureGate, type GateMode, type PaceLimits } from './gate.js';

export { nextUtcMidnight, type PaceLimits } from './gate.js';

export type Priority = 'new' | 'replay';

export interface Pacer {
  readonly enabled: boolean;
  /**
   * Resolves when the call may leave; throws a PacingError (queue full, quota spent, past the
   * deadline, or WaitAbandoned when `signal` aborts: the client went away, its turn given up).
   */
  acquire(deadline: number, priority: Priority, signal?: AbortSignal): Promise<void>;
  /** Keap's quota headers of a response: budgets come down when Keap reports less left. */
  observe(report: QuotaReport | undefined): void;
  /** Keap answered 429: nobody calls for `ms`. */
  backOff(ms: number): void;
  /**
   * Keap's spike arrest answered 429: the pace comes down and the queue waits only Keap's
   * Retry-After or one new spacing (a gate that does not adapt backs off `backOffMs`).
   */
  spikeArrested(retryAfterMs: number | undefined, backOffMs: number): void;
  /** The pace kept now, in calls per second (undefined without pacing): for /metrics. */
  pacePerSecond(): number | undefined;
  /** Keap says the daily quota is spent until `resetsAt`. */
  exhaustDay(resetsAt: number | undefined): void;
  /** Requests waiting now. */
  depth(): number;
  /** Where the budgets live ('off' without pacing): for /readyz. */
  mode(): PacingMode;
  stop(): Promise<void>;
}

export type PacingMode = 'off' | GateMode;

export class NoPacer implements Pacer {
  readonly enabled = false;
  acquire(): Promise<void> {
    return Promise.resolve();
  }
  observe(): void {}
  backOff(): void {}
  spikeArrested(): void {}
  pacePerSecond(): number | undefined {
    return undefined;
  }
  exhaustDay(): void {}
  depth(): number {
    return 0;
  }
  mode(): PacingMode {
    return 'off';
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

interface Ticket {
  deadline: number;
  /** The client stopped waiting (deadline): its turn is skipped, consuming nothing. */
  cancelled: boolean;
}

export class QuotaPacer implements Pacer {
  readonly enabled = true;
  private readonly limiter: Bottleneck;
  private readonly now: () => number;
  private readonly gate: DepartureGate;

  /** `gate` keeps the budgets: by default in this process (LocalGate); a RedisGate shares them between replicas. */
  constructor(
    private readonly limits: PaceLimits,
    logger: Logger,
    now: () => number = Date.now,
    gate?: DepartureGate,
  ) {
    this.now = now;
    this.gate = gate ?? new LocalGate(limits, logger, now);
    this.limiter = new Bottleneck({
      maxConcurrent: 1,
      highWater: limits.queueLimit,
      strategy: Bottleneck.strategy.OVERFLOW,
    });
  }

  async acquire(deadline: number, priority: Priority, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) throw clientGone();
    const spent = this.gate.daySpent(this.now());
    if (spent !== undefined) throw this.dailyQuotaSpent(spent.resetsAt, spent.retryAt);
    const ticket: Ticket = { deadline, cancelled: false };
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const turn = this.limiter.schedule({ priority: priority === 'replay' ? 3 : 5 }, () => this.waitTurn(ticket));
    const ended = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          ticket.cancelled = true;
          const now = this.now();
          reject(deadlineExceeded(Math.max(1, Math.ceil((this.gate.earliestDeparture(now) - now) / 1000))));
        },
        Math.max(0, deadline - this.now()),
      );
      // A request whose client has gone is never sent: its turn is skipped, consuming nothing.
      onAbort = () => {
        ticket.cancelled = true;
        reject(clientGone());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([turn, ended]);
    } catch (err) {
      throw err instanceof PacingError ? err : this.queueFull();
    } finally {
      clearTimeout(timer);
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
    }
    // The turn and the abort can land in the same tick: a gone client's booked slot is still not used.
    if (aborted(signal)) throw clientGone();
  }

  observe(report: QuotaReport | undefined): void {
    if (report !== undefined) this.gate.observe(report);
  }

  backOff(ms: number): void {
    this.gate.backOff(ms);
  }

  spikeArrested(retryAfterMs: number | undefined, backOffMs: number): void {
    this.gate.spikeArrested(retryAfterMs, backOffMs);
  }

  pacePerSecond(): number | undefined {
    return finiteOrUndefined(this.gate.pacePerSecond(this.now()));
  }

  exhaustDay(resetsAt: number | undefined): void {
    this.gate.exhaustDay(resetsAt);
  }

  depth(): number {
    const counts = this.limiter.counts();
    return counts.QUEUED + counts.RUNNING + counts.EXECUTING;
  }

  mode(): PacingMode {
    return this.gate.mode();
  }

  async stop(): Promise<void> {
    await this.limiter.stop({ dropWaitingJobs: true }).catch(() => undefined);
    await this.gate.stop();
  }

  /** Runs inside the limiter, one at a time: returns when this departure may go, booked by the gate. */
  private async waitTurn(ticket: Ticket): Promise<void> {
    for (;;) {
      if (ticket.cancelled) return;
      const booking = await this.gate.book(this.now());
      switch (booking.kind) {
        case 'go':
          return;
        case 'daySpent':
          ticket.cancelled = true;
          throw this.dailyQuotaSpent(booking.resetsAt, booking.retryAt);
        case 'wait':
          break;
      }
      const at = booking.retryAt;
      // A shared gate answers after a round trip: the wait counts from its answer, not from the question.
      const answered = this.now();
      if (at > ticket.deadline) {
        ticket.cancelled = true;
        throw deadlineExceeded(Math.ceil((at - answered) / 1000));
      }
      // Re-check at least every second: feedback and back-offs change the answer.
      await new Promise((r) => setTimeout(r, Math.min(at - answered, 1000)));
    }
  }

  private dailyQuotaSpent(resetsAt: number, retryAt: number): DailyQuotaSpent {
    const now = this.now();
    const wait = Math.max(retryAt - now, 1000);
    return new DailyQuotaSpent(Math.max(resetsAt, now + 1000), Math.ceil(wait / 1000));
  }

  private queueFull(): QueueFull {
    return new QueueFull(this.limits.queueLimit, Math.max(1, Math.ceil((this.depth() * this.gate.spacingMs()) / 1000)));
  }
}

function finiteOrUndefined(n: number): number | undefined {
  return Number.isFinite(n) ? n : undefined;
}

function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function clientGone(): WaitAbandoned {
  return new WaitAbandoned();
}

function deadlineExceeded(retryAfterSeconds: number): DeadlineExceeded {
  return new DeadlineExceeded(Math.max(1, retryAfterSeconds));
}

export function createPacer(limits: PaceLimits, logger: Logger, now?: () => number): Pacer {
  return limits.perSecond > 0 ? new QuotaPacer(limits, logger, now) : new NoPacer();
}
