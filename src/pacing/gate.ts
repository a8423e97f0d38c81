// The gate a departure passes: it decides when one call may leave for Keap and books it.
// QuotaPacer (pacer.ts) keeps the queue; the gate keeps the budgets: even spacing, the
// rolling minute, the UTC day, Keap's back-off and what Keap's quota headers report.
// LocalGate keeps them in this process; RedisGate (redis-gate.ts) keeps them in Redis for
// every replica of one Keap client and tenant.
import type { Logger } from '../observability/log.js';
import type { QuotaReport } from '../keap/keap-quota.js';
import { AdaptivePace } from './adaptive-pace.js';

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
  /**
   * Which limits an operator set (rather than left at Keap's published defaults). Keap's
   * reported limits are the truth for the others, higher or lower (a client or key can have a
   * larger quota); an explicit limit stays the ceiling, which Keap's reports only lower.
   * Absent: every limit counts as set (the limits only come down).
   */
  explicit?: ExplicitLimits;
}

export interface ExplicitLimits {
  perSecond: boolean;
  perMinute: boolean;
  perDay: boolean;
  tenantPerMinute: boolean;
  tenantPerDay: boolean;
}

/**
 * The limit to pace to: Keap's reported one (undefined: not reported), unless the operator set
 * the limit explicitly; then the lower of the two.
 */
export function paceLimit(configured: number, explicit: boolean | undefined, reported: number | undefined): number {
  if (reported === undefined || !Number.isFinite(reported)) return configured;
  return explicit === false ? reported : Math.min(configured, reported);
}

/**
 * Calls per second to pace to: the operator's, or when left at the default, Keap's spike limit
 * when it reports one (`x-keap-product-spike-limit`). An explicit limit is kept as it is: Keap's
 * spike figure is not always its effective rate (see the notes), and 429s bring the pace down.
 */
export function pacePerSecond(limits: PaceLimits, report: QuotaReport): number {
  const spike = report.product.spikePerSecond;
  return limits.explicit?.perSecond === false && spike !== undefined && spike > 0 ? spike : limits.perSecond;
}

/** Where the budgets live: this process alone, Redis for all replicas, or this replica's share while Redis is away. */
export type GateMode = 'local' | 'shared' | 'local_share';

/** A gate's answer to "may one call leave now?". Times are on the caller's clock unless said otherwise. */
export type Booking =
  /** Booked: the call leaves now. `at` is the departure as the gate's clock booked it. */
  | { readonly kind: 'go'; readonly at: number }
  /** Not yet: ask again at `retryAt`. */
  | { readonly kind: 'wait'; readonly retryAt: number }
  /** The daily quota is spent: `resetsAt` as Keap or 00:00 UTC names it, and when to try again. */
  | { readonly kind: 'daySpent'; readonly resetsAt: number; readonly retryAt: number };

export interface DepartureGate {
  /** Books a departure at `now` (the caller's clock) when one may leave. */
  book(now: number): Promise<Booking>;
  /** Keap answered 429: nobody departs for `ms`. */
  backOff(ms: number): void;
  /**
   * Keap's spike arrest answered 429. A gate that adapts its pace lowers it and waits only
   * Keap's Retry-After (`retryAfterMs`, when given) or one new spacing; one that does not backs off `backOffMs`.
   */
  spikeArrested(retryAfterMs: number | undefined, backOffMs: number): void;
  /** The pace this gate keeps now, in departures per second (Infinity: no spacing). */
  pacePerSecond(now: number): number;
  /** Keap's quota headers of a response: budgets come down when Keap reports less left. */
  observe(report: QuotaReport): void;
  /** Keap says the daily quota is spent until `resetsAt` (00:00 UTC when undefined). */
  exhaustDay(resetsAt: number | undefined): void;
  /** What the gate knows at once (no round trip): the day is spent, until when. */
  daySpent(now: number): { resetsAt: number; retryAt: number } | undefined;
  /** What the gate knows at once: the earliest a departure could leave (for Retry-After). */
  earliestDeparture(now: number): number;
  /** The interval between departures this gate keeps now (for Retry-After of a full queue). */
  spacingMs(): number;
  mode(): GateMode;
  stop(): Promise<void>;
}

export const MINUTE = 60_000;
export const DAY = 24 * 60 * MINUTE;

export function nextUtcMidnight(now: number): number {
  return (Math.floor(now / DAY) + 1) * DAY;
}

/** The figures of a quota report the gates use, each the tighter of the client's and the tenant's. */
export interface ReportedQuota {
  /** Infinity when Keap did not say. */
  minuteLimit: number;
  /** The minute limit to pace to (paceLimit of the client's and the tenant's; the configured ones where Keap did not say). */
  paceMinuteLimit: number;
  /** The day limit to pace to, likewise. */
  paceDayLimit: number;
  /** Calls in Keap's minute window, ours included (0 when Keap did not say). */
  minuteUsed: number;
  dayLimit: number;
  dayUsed: number;
  /** When Keap's daily quota resets, when Keap says. */
  dayResetsAt: number | undefined;
}

export function readReport(report: QuotaReport, limits: PaceLimits): ReportedQuota {
  const { product, tenant } = report;
  const explicit = limits.explicit;
  return {
    minuteLimit: Math.min(product.minute?.limit ?? Infinity, tenant.minute?.limit ?? Infinity),
    paceMinuteLimit: Math.min(
      paceLimit(limits.perMinute, explicit?.perMinute, product.minute?.limit),
      paceLimit(limits.tenantPerMinute, explicit?.tenantPerMinute, tenant.minute?.limit),
    ),
    paceDayLimit: Math.min(
      paceLimit(limits.perDay, explicit?.perDay, product.day?.limit),
      paceLimit(limits.tenantPerDay, explicit?.tenantPerDay, tenant.day?.limit),
    ),
    minuteUsed: Math.max(usedOf(product.minute), usedOf(tenant.minute)),
    dayLimit: Math.min(product.day?.limit ?? Infinity, tenant.day?.limit ?? Infinity),
    dayUsed: Math.max(usedOf(product.day), usedOf(tenant.day)),
    dayResetsAt: product.day?.resetsAt,
  };
}

function usedOf(w: { limit?: number; available?: number; used?: number } | undefined): number {
  if (w === undefined) return 0;
  if (w.used !== undefined) return w.used;
  if (w.limit !== undefined && w.available !== undefined) return Math.max(0, w.limit - w.available);
  return 0;
}

/** The configured minute and day budgets (margin applied), before Keap reports anything. */
export function configuredBudget(limits: PaceLimits, share = 1): { minute: number; day: number } {
  return {
    minute: Math.floor((Math.min(limits.perMinute, limits.tenantPerMinute) / share) * limits.margin),
    day: Math.floor((Math.min(limits.perDay, limits.tenantPerDay) / share) * limits.margin),
  };
}

/**
 * Says so when Keap's report brings a budget down by a tenth or more (not on every response),
 * and follows the budget both ways, so the next drop by a tenth is reported again.
 */
export class BudgetLog {
  private readonly last: { minute: number; day: number };

  constructor(
    private readonly logger: Logger,
    initial: { minute: number; day: number },
  ) {
    this.last = { ...initial };
  }

  report(b: {
    minute: number;
    dayLeft: number;
    keapMinuteLimit: number;
    keapDayLimit: number;
    othersThisMinute: number;
  }): void {
    const last = this.last;
    const minuteDown = b.minute < last.minute * 0.9;
    const dayDown = b.keapDayLimit < Infinity && b.dayLeft < last.day * 0.9;
    if (minuteDown || dayDown) {
      this.logger.info(
        {
          event: 'keap_quota_reported',
          minuteBudget: b.minute,
          dayBudgetLeft: b.dayLeft,
          keapMinuteLimit: finite(b.keapMinuteLimit),
          keapDayLimit: finite(b.keapDayLimit),
          othersThisMinute: b.othersThisMinute,
        },
        'Keap reports less budget than configured: pacing to it',
      );
    }
    if (minuteDown || b.minute > last.minute * 1.1) last.minute = b.minute;
    if (dayDown || b.dayLeft > last.day * 1.1) last.day = b.dayLeft;
  }
}

export function logDaySpent(logger: Logger, until: number): void {
  logger.warn(
    { event: 'daily_quota_spent', resetsAt: new Date(until).toISOString() },
    "Keap's daily quota is spent: requests get 429 until it resets",
  );
}

function finite(n: number): number | undefined {
  return Number.isFinite(n) ? n : undefined;
}

/**
 * The budgets in this process. With `share` > 1 (a replica whose shared gate lost Redis) each
 * limit is divided by `share`, and so are Keap's reports: its counts include the other
 * replicas' calls, each of which keeps to its own share, so this one takes its share of them.
 */
export class LocalGate implements DepartureGate {
  /** The pace Keap's spike arrests leave us (adaptive-pace.ts), under the configured one; none without spacing. */
  private readonly pace: AdaptivePace | undefined;
  /** The per-second limit paced to: the configured one, or Keap's reported one when none was set. */
  private perSecond: number;
  private nextSlotAt = 0;
  private pausedUntil = 0;
  /** Departures of the last minute, oldest first (a rolling window, as Keap's throttle is). */
  private readonly minuteLog: number[] = [];
  /** Calls others made in Keap's current minute window, as Keap last reported, and when. */
  private external = { count: 0, at: 0 };
  private reportedMinuteLimit = Infinity;
  private reportedDayLimit = Infinity;
  /** The limits paced to: the configured ones until Keap reports (see paceLimit). */
  private minuteLimit: number;
  private dayLimit: number;
  private day: number;
  /** This UTC day's calls: ours, or what Keap reported when that is more. */
  private dayUsed = 0;
  /** This UTC day's departures booked here (what a shared gate adds to Redis when it is back). */
  private dayBooked = 0;
  private dayResetsAt: number;
  private dayExhaustedUntil = 0;
  private readonly budgetLog: BudgetLog;

  constructor(
    private readonly limits: PaceLimits,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    private readonly share = 1,
  ) {
    this.perSecond = limits.perSecond;
    this.minuteLimit = Math.min(limits.perMinute, limits.tenantPerMinute);
    this.dayLimit = Math.min(limits.perDay, limits.tenantPerDay);
    const ceiling = (limits.perSecond * limits.margin) / share;
    this.pace = Number.isFinite(ceiling) && ceiling > 0 ? new AdaptivePace(ceiling, logger, now()) : undefined;
    this.day = Math.floor(now() / DAY);
    this.dayResetsAt = nextUtcMidnight(now());
    this.budgetLog = new BudgetLog(logger, configuredBudget(limits, share));
  }

  async book(now: number): Promise<Booking> {
    this.rollDay();
    if (now < this.dayExhaustedUntil || this.dayUsed >= this.dayCap()) {
      if (this.dayExhaustedUntil < now) this.dayExhaustedUntil = this.dayResetsAt;
      return { kind: 'daySpent', resetsAt: this.dayExhaustedUntil, retryAt: this.dayExhaustedUntil };
    }
    const at = this.earliestDeparture(now);
    if (at > now) return { kind: 'wait', retryAt: at };
    // Slots follow on from the planned one, not from a timer that fired late, so timer
    // lateness does not add up; the allowance is within the margin, so no two
    // departures come closer than Keap's own interval.
    const spacing = this.spacingAt(now);
    this.nextSlotAt = Math.max(this.nextSlotAt, now - (spacing * (1 - this.limits.margin)) / 2) + spacing;
    this.pace?.departed(now);
    this.minuteLog.push(now);
    this.dayUsed += 1;
    this.dayBooked += 1;
    return { kind: 'go', at: now };
  }

  observe(report: QuotaReport): void {
    const now = this.now();
    const r = readReport(report, this.limits);
    this.reportedMinuteLimit = r.minuteLimit;
    this.minuteLimit = r.paceMinuteLimit;
    this.dayLimit = r.paceDayLimit;
    // Keap's reported spike limit moves the ceiling of the adaptive pace (unless the operator set one).
    const perSecond = pacePerSecond(this.limits, report);
    if (perSecond !== this.perSecond) {
      this.perSecond = perSecond;
      this.pace?.setCeiling((perSecond * this.limits.margin) / this.share, now);
    }
    // Keap's count of calls in its window includes ours: the rest were other apps' (same client id or tenant).
    if (r.minuteUsed > 0)
      this.external = { count: Math.max(0, r.minuteUsed / this.share - this.countMinute(now)), at: now };
    this.reportedDayLimit = r.dayLimit;
    if (r.dayUsed / this.share > this.dayUsed) this.dayUsed = r.dayUsed / this.share;
    if (r.dayResetsAt !== undefined && r.dayResetsAt > now) this.dayResetsAt = r.dayResetsAt;
    this.budgetLog.report({
      minute: this.minuteCap(now),
      dayLeft: this.dayCap() - this.dayUsed,
      keapMinuteLimit: this.reportedMinuteLimit,
      keapDayLimit: this.reportedDayLimit,
      othersThisMinute: this.external.count,
    });
  }

  backOff(ms: number): void {
    this.pauseUntil(this.now() + ms);
  }

  spikeArrested(retryAfterMs: number | undefined, backOffMs: number): void {
    if (this.pace === undefined) return this.backOff(backOffMs);
    const now = this.now();
    this.pace.spikeArrested(now);
    if (retryAfterMs !== undefined) this.pauseUntil(now + retryAfterMs);
    this.nextSlotAt = Math.max(this.nextSlotAt, now + this.spacingAt(now));
  }

  pacePerSecond(now: number): number {
    return this.pace?.perSecond(now) ?? Infinity;
  }

  exhaustDay(resetsAt: number | undefined): void {
    this.dayExhaustedUntil = resetsAt !== undefined && resetsAt > this.now() ? resetsAt : this.dayResetsAt;
    logDaySpent(this.logger, this.dayExhaustedUntil);
  }

  daySpent(now: number): { resetsAt: number; retryAt: number } | undefined {
    this.rollDay();
    if (now >= this.dayExhaustedUntil) return undefined;
    return { resetsAt: this.dayExhaustedUntil, retryAt: this.dayExhaustedUntil };
  }

  earliestDeparture(now: number): number {
    let at = Math.max(this.nextSlotAt, this.pausedUntil, this.pace?.windowFreesAt(now) ?? now);
    const cap = this.minuteCap(now);
    const used = this.countMinute(now);
    if (used >= cap) {
      // The window frees when enough of our own departures age out of it.
      const index = Math.min(this.minuteLog.length - 1, used - cap);
      at = Math.max(at, index >= 0 ? (this.minuteLog[index] as number) + MINUTE : this.external.at + MINUTE);
    }
    return at;
  }

  spacingMs(): number {
    return this.spacingAt(this.now());
  }

  mode(): GateMode {
    return this.share > 1 ? 'local_share' : 'local';
  }

  async stop(): Promise<void> {}

  /** Silently takes over a pause and a spent day another gate knew of (times on this gate's clock). */
  restrictUntil(pausedUntil: number, dayExhaustedUntil: number): void {
    this.pauseUntil(pausedUntil);
    if (dayExhaustedUntil > this.dayExhaustedUntil) this.dayExhaustedUntil = dayExhaustedUntil;
  }

  /** What this gate booked: today's count, and how long ago each departure of the last minute left. */
  booked(now: number): { today: number; minuteAges: number[] } {
    this.rollDay();
    this.countMinute(now);
    return { today: this.dayBooked, minuteAges: this.minuteLog.map((t) => now - t) };
  }

  private spacingAt(now: number): number {
    return this.pace === undefined ? 0 : 1000 / this.pace.perSecond(now);
  }

  private pauseUntil(until: number): void {
    if (until > this.pausedUntil) this.pausedUntil = until;
  }

  private countMinute(now: number): number {
    const log = this.minuteLog;
    let drop = 0;
    while (drop < log.length && (log[drop] as number) <= now - MINUTE) drop++;
    if (drop > 0) log.splice(0, drop);
    return log.length;
  }

  private minuteCap(now: number): number {
    const limit = this.minuteLimit / this.share;
    const external = now - this.external.at < MINUTE ? this.external.count : 0;
    return Math.max(0, Math.floor(limit * this.limits.margin) - external);
  }

  private dayCap(): number {
    const limit = this.dayLimit / this.share;
    return Math.floor(limit * this.limits.margin);
  }

  /** The daily quota resets at 00:00 UTC, not 24 hours after this process started. */
  private rollDay(): void {
    const now = this.now();
    const day = Math.floor(now / DAY);
    if (day === this.day) return;
    this.day = day;
    this.dayUsed = 0;
    this.dayBooked = 0;
    this.dayResetsAt = nextUtcMidnight(now);
    if (this.dayExhaustedUntil <= now) this.dayExhaustedUntil = 0;
  }
}
