// Turns any burst into the fastest schedule Keap accepts. Keap meters every OAuth client
// and tenant behind Apigee: a spike arrest per second (smoothed: 25/s means one call per
// 40 ms), a rolling per-minute throttle and a daily quota that resets at 00:00 UTC.
//
// bottleneck holds the queue: bounded (a full queue answers at once), ordered, replays
// ahead of new calls, one departure decided at a time. The gate each job runs decides
// when that departure may go: evenly spaced, inside the minute and day windows (ours
// plus what Keap reports others spent), and not while Keap has told us to back off.
import Bottleneck from 'bottleneck';
import type { Logger } from '../observability/log.js';
import { DailyQuotaSpent, DeadlineExceeded, PacingError, QueueFull, WaitAbandoned } from './pacing-errors.js';
import type { QuotaReport } from '../keap/keap-quota.js';

export interface PaceLimits {
  /** Calls per second (Keap's spike limit); 0 turns pacing off. */
  perSecond: number;
  perMinute: number;
  perDay: number;
  tenantPerMinute: number;
  tenantPerDay: number;
  /** Share of each limit we allow ourselves (other apps of the same client id spend the same quota). */
  margin: number;
  /** Requests that may wait; past that, 503 at once. */
  queueLimit: number;
}

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
  /** Keap says the daily quota is spent until `resetsAt`. */
  exhaustDay(resetsAt: number | undefined): void;
  /** Requests waiting now. */
  depth(): number;
  stop(): Promise<void>;
}

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

export function nextUtcMidnight(now: number): number {
  return (Math.floor(now / DAY) + 1) * DAY;
}

export class NoPacer implements Pacer {
  readonly enabled = false;
  acquire(): Promise<void> {
    return Promise.resolve();
  }
  observe(): void {}
  backOff(): void {}
  exhaustDay(): void {}
  depth(): number {
    return 0;
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
  private readonly spacingMs: number;
  private readonly lateAllowanceMs: number;
  private nextSlotAt = 0;
  private pausedUntil = 0;
  /** Departures of the last minute, oldest first (a rolling window, as Keap's throttle is). */
  private readonly minuteLog: number[] = [];
  /** Calls others made in Keap's current minute window, as Keap last reported, and when. */
  private external = { count: 0, at: 0 };
  private reportedMinuteLimit = Infinity;
  private reportedDayLimit = Infinity;
  private day: number;
  private dayUsed = 0;
  private dayResetsAt: number;
  private dayExhaustedUntil = 0;
  /** The budgets last reported in the log; at first, the configured ones. */
  private readonly loggedBudget: { minute: number; day: number };

  constructor(
    private readonly limits: PaceLimits,
    private readonly logger: Logger,
    now: () => number = Date.now,
  ) {
    this.now = now;
    this.spacingMs = 1000 / (limits.perSecond * limits.margin);
    this.lateAllowanceMs = (this.spacingMs * (1 - limits.margin)) / 2;
    this.day = Math.floor(now() / DAY);
    this.dayResetsAt = nextUtcMidnight(now());
    this.loggedBudget = {
      minute: Math.floor(Math.min(limits.perMinute, limits.tenantPerMinute) * limits.margin),
      day: Math.floor(Math.min(limits.perDay, limits.tenantPerDay) * limits.margin),
    };
    this.limiter = new Bottleneck({
      maxConcurrent: 1,
      highWater: limits.queueLimit,
      strategy: Bottleneck.strategy.OVERFLOW,
    });
  }

  async acquire(deadline: number, priority: Priority, signal?: AbortSignal): Promise<void> {
    this.rollDay();
    if (signal?.aborted === true) throw clientGone();
    if (this.now() < this.dayExhaustedUntil) throw this.dailyQuotaSpent();
    const ticket: Ticket = { deadline, cancelled: false };
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const turn = this.limiter.schedule({ priority: priority === 'replay' ? 3 : 5 }, () => this.waitTurn(ticket));
    const ended = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          ticket.cancelled = true;
          reject(deadlineExceeded(Math.max(1, Math.ceil((this.earliestDeparture() - this.now()) / 1000))));
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
    if (report === undefined) return;
    const now = this.now();
    const minute = report.product.minute;
    const tenantMinute = report.tenant.minute;
    this.reportedMinuteLimit = Math.min(minute?.limit ?? Infinity, tenantMinute?.limit ?? Infinity);
    // Keap's count of calls in its window includes ours: the rest were other apps' (same client id or tenant).
    const keapUsed = Math.max(usedOf(minute), usedOf(tenantMinute));
    if (keapUsed > 0) this.external = { count: Math.max(0, keapUsed - this.countMinute(now)), at: now };
    const day = report.product.day;
    const tenantDay = report.tenant.day;
    this.reportedDayLimit = Math.min(day?.limit ?? Infinity, tenantDay?.limit ?? Infinity);
    const dayUsed = Math.max(usedOf(day), usedOf(tenantDay));
    if (dayUsed > this.dayUsed) this.dayUsed = dayUsed;
    if (day?.resetsAt !== undefined && day.resetsAt > now) this.dayResetsAt = day.resetsAt;
    this.logBudgetChange(now);
  }

  /** Says so when Keap's report brings a budget down by a tenth or more (not on every response). */
  private logBudgetChange(now: number): void {
    const minute = this.minuteCap(now);
    const day = this.dayCap() - this.dayUsed;
    const last = this.loggedBudget;
    const minuteDown = minute < last.minute * 0.9;
    const dayDown = this.reportedDayLimit < Infinity && day < last.day * 0.9;
    if (minuteDown || dayDown) {
      this.logger.info(
        {
          event: 'keap_quota_reported',
          minuteBudget: minute,
          dayBudgetLeft: day,
          keapMinuteLimit: finite(this.reportedMinuteLimit),
          keapDayLimit: finite(this.reportedDayLimit),
          othersThisMinute: this.external.count,
        },
        'Keap reports less budget than configured: pacing to it',
      );
    }
    // Follow the budget both ways, so the next drop by a tenth is reported again.
    if (minuteDown || minute > last.minute * 1.1) last.minute = minute;
    if (dayDown || day > last.day * 1.1) last.day = day;
  }

  backOff(ms: number): void {
    const until = this.now() + ms;
    if (until > this.pausedUntil) this.pausedUntil = until;
  }

  exhaustDay(resetsAt: number | undefined): void {
    this.dayExhaustedUntil = resetsAt !== undefined && resetsAt > this.now() ? resetsAt : this.dayResetsAt;
    this.logger.warn(
      { event: 'daily_quota_spent', resetsAt: new Date(this.dayExhaustedUntil).toISOString() },
      "Keap's daily quota is spent: requests get 429 until it resets",
    );
  }

  depth(): number {
    const counts = this.limiter.counts();
    return counts.QUEUED + counts.RUNNING + counts.EXECUTING;
  }

  async stop(): Promise<void> {
    await this.limiter.stop({ dropWaitingJobs: true }).catch(() => undefined);
  }

  /** Runs inside the limiter, one at a time: returns when this departure may go, and books it. */
  private async waitTurn(ticket: Ticket): Promise<void> {
    for (;;) {
      if (ticket.cancelled) return;
      const now = this.now();
      this.rollDay();
      if (now < this.dayExhaustedUntil || this.dayUsed >= this.dayCap()) {
        ticket.cancelled = true;
        if (this.dayExhaustedUntil < now) this.dayExhaustedUntil = this.dayResetsAt;
        throw this.dailyQuotaSpent();
      }
      const at = this.earliestDeparture();
      if (at <= now) {
        // Slots follow on from the planned one, not from a timer that fired late, so timer
        // lateness does not add up; the allowance is within the margin, so no two
        // departures come closer than Keap's own interval.
        this.nextSlotAt = Math.max(this.nextSlotAt, now - this.lateAllowanceMs) + this.spacingMs;
        this.minuteLog.push(now);
        this.dayUsed += 1;
        return;
      }
      if (at > ticket.deadline) {
        ticket.cancelled = true;
        throw deadlineExceeded(Math.ceil((at - now) / 1000));
      }
      // Re-check at least every second: feedback and back-offs change the answer.
      await new Promise((r) => setTimeout(r, Math.min(at - now, 1000)));
    }
  }

  private earliestDeparture(): number {
    const now = this.now();
    let at = Math.max(this.nextSlotAt, this.pausedUntil);
    const cap = this.minuteCap(now);
    const used = this.countMinute(now);
    if (used >= cap) {
      // The window frees when enough of our own departures age out of it.
      const index = Math.min(this.minuteLog.length - 1, used - cap);
      at = Math.max(at, index >= 0 ? (this.minuteLog[index] as number) + MINUTE : this.external.at + MINUTE);
    }
    return at;
  }

  private countMinute(now: number): number {
    const log = this.minuteLog;
    let drop = 0;
    while (drop < log.length && (log[drop] as number) <= now - MINUTE) drop++;
    if (drop > 0) log.splice(0, drop);
    return log.length;
  }

  private minuteCap(now: number): number {
    const limit = Math.min(this.limits.perMinute, this.limits.tenantPerMinute, this.reportedMinuteLimit);
    const external = now - this.external.at < MINUTE ? this.external.count : 0;
    return Math.max(0, Math.floor(limit * this.limits.margin) - external);
  }

  private dayCap(): number {
    return Math.floor(
      Math.min(this.limits.perDay, this.limits.tenantPerDay, this.reportedDayLimit) * this.limits.margin,
    );
  }

  /** The daily quota resets at 00:00 UTC, not 24 hours after this process started. */
  private rollDay(): void {
    const now = this.now();
    const day = Math.floor(now / DAY);
    if (day === this.day) return;
    this.day = day;
    this.dayUsed = 0;
    this.dayResetsAt = nextUtcMidnight(now);
    if (this.dayExhaustedUntil <= now) this.dayExhaustedUntil = 0;
  }

  private dailyQuotaSpent(): DailyQuotaSpent {
    const until = Math.max(this.dayExhaustedUntil, this.now() + 1000);
    return new DailyQuotaSpent(until, Math.ceil((until - this.now()) / 1000));
  }

  private queueFull(): QueueFull {
    return new QueueFull(this.limits.queueLimit, Math.max(1, Math.ceil((this.depth() * this.spacingMs) / 1000)));
  }
}

function finite(n: number): number | undefined {
  return Number.isFinite(n) ? n : undefined;
}

function usedOf(w: { limit?: number; available?: number; used?: number } | undefined): number {
  if (w === undefined) return 0;
  if (w.used !== undefined) return w.used;
  if (w.limit !== undefined && w.available !== undefined) return Math.max(0, w.limit - w.available);
  return 0;
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
