// A fair share of one OAuth client's budget between the accounts that use it (issue 12,
// point 4). Keap meters an OAuth client across every account it serves: the spike arrest
// per second, the rolling minute throttle and the daily quota are the client's, however many
// accounts spend them. Each account also has limits of its own (the tenant limits). So each
// account's call waits for two things: its account's tenant budget, and its fair turn on the
// client's shared budget.
//
//   SharedClient ── one per OAuth client id (KEAP_CLIENT_ID) that two or more accounts use
//     ├─ shared gate: any DepartureGate with the client limits, tenant limits off (clientLimits()):
//     │    LocalGate in this process, or a RedisGate keyed by the client for all replicas
//     ├─ one dispatcher: one departure decided at a time (as QuotaPacer's bottleneck does)
//     └─ per account (pacerFor): a lane (replay queue, new queue, weight, virtual finish time)
//          and a tenant gate: a LocalGate with only that account's tenant limits (tenantLimits())
//
// Policy (defaults in FAIR_SHARE below):
//
// - Fair queueing: start-time fair queueing (SFQ, Goyal et al. 1996) over accounts, with
//   weights. Each account carries the virtual finish time F of its last departure; its head
//   waiter's start tag is S = max(F, v), v being the start tag of the last departure of any
//   account. The eligible account with the smallest S departs (ties: smaller S + 1/weight,
//   then the earlier arrival); then v = S and F = S + 1/weight. So a backlogged account of
//   weight w gets w / (sum of backlogged weights) of the departures, and an account that was
//   idle (or held by its own tenant limit) comes back at v: no credit saved up, no burst, and
//   a trickle's next call has the smallest tag, so it leaves at the very next departure: its
//   queue wait is at most one spacing of the shared budget (1 / (perSecond x margin)), when
//   the shared budget is otherwise free of pauses and windows.
// - Work conserving: the dispatcher books a slot on the shared gate only while some account
//   has a waiter that its tenant budget lets leave now, and then gives that slot to the fair
//   queue's choice among those accounts at that moment. An account alone gets the full rate;
//   an account held by its tenant limit is skipped, and the others take its turns.
// - Within an account, replays (priority 'replay': Keap answered 429, nothing was processed)
//   leave before new calls; across accounts only the fair queue decides.
// - Queue limit per account: an account holds `queueLimit` waiters plus the one at its head,
//   as QuotaPacer does (bottleneck's highWater counts the queued, not the one being paced).
//   Past that, QueueFull at once; other accounts' queues are not touched.
// - Deadline and abort: a waiter whose deadline passes (DeadlineExceeded) or whose signal aborts
//   (WaitAbandoned) leaves its queue at once and consumes nothing: tags move only when a call
//   departs, and a slot is given only to a waiter still waiting. A waiter that cannot leave before
//   its deadline is refused at once: when its account's tenant budget is closed past it, or the
//   shared gate names a wait (a back-off, a full minute) longer than one spacing past it.
// - Feedback. observe(report): Keap's product (client) windows go to the shared gate, its
//   tenant windows to the account's tenant gate only. backOff(ms) and exhaustDay(resetsAt) go
//   to the shared gate (every account of the client waits: a spike arrest is always the
//   client's, and Keap's 429 on a client quota holds every account), unless the account's
//   latest report, at most `reportFreshMs` old (a 429's own headers are observed before its
//   back-off), says the tenant's window is spent and the client's is not: then the account's
//   tenant gate alone. A caller that knows which limit Keap meant passes the scope ('client' |
//   'account') as the extra argument. A client's spent day refuses every account's waiters at
//   once (DailyQuotaSpent); a tenant's spent day only that account's.
//
// An account with no shared client (key mode, or the only account of its OAuth client) keeps
// the plain QuotaPacer of createPacer / createSharedPacer: nothing here is on its path.
import type { Logger } from '../observability/log.js';
import type { QuotaReport, QuotaWindow } from '../keap/keap-quota.js';
import { LocalGate, type DepartureGate, type ExplicitLimits, type PaceLimits } from './gate.js';
import { NoPacer, type Pacer, type PacingMode, type Priority } from './pacer.js';
import { DailyQuotaSpent, DeadlineExceeded, QueueFull, WaitAbandoned, type PacingError } from './pacing-errors.js';

export interface FairSharePolicy {
  /** An account's weight when it names none. */
  defaultWeight: number;
  /** While the dispatcher waits for the shared or a tenant budget it asks again at least this often: back-offs and reports change the answer. */
  recheckMs: number;
  /** How long an account's latest quota report classifies a 429 (client or account) for backOff and exhaustDay. */
  reportFreshMs: number;
}

export const FAIR_SHARE: FairSharePolicy = { defaultWeight: 1, recheckMs: 1000, reportFreshMs: 1000 };

/** Which budget a 429 or a spent day concerns: the OAuth client's (every account) or the account's own. */
export type FeedbackScope = 'client' | 'account';

/** What one account asks of its client's shared budget. */
export interface AccountShare {
  /** Relative share of the client's budget while others are backlogged too (> 0; default FAIR_SHARE.defaultWeight). */
  weight?: number;
  /** The account's own limits (TENANT_LIMIT_PER_MINUTE / PER_DAY); undefined: the client limits' tenantPerMinute / tenantPerDay. */
  tenant?: { perMinute: number | undefined; perDay: number | undefined; explicit?: ExplicitLimits | undefined };
  /** Waiters the account's queue holds (QUEUE_LIMIT); default the client limits' queueLimit. */
  queueLimit?: number;
  /**
   * Keeps the account's tenant budget (built with tenantLimits(), e.g. a RedisGate keyed by the
   * account for all replicas); default a LocalGate. The account's pacer stops it.
   */
  tenantGate?: DepartureGate;
}

/** An account's pacer on a shared client: a Pacer whose feedback may name its scope. */
export interface FairSharePacer extends Pacer {
  /** Keap answered 429: the client's budget waits `ms` (every account), or this account's alone; unnamed, see the policy. */
  backOff(ms: number, scope?: FeedbackScope): void;
  /** Keap says the daily quota is spent: the client's (every account) or this account's alone; unnamed, see the policy. */
  exhaustDay(resetsAt: number | undefined, scope?: FeedbackScope): void;
}

/** The client's limits for its shared gate: spike, minute and day, the tenant limits off. */
export function clientLimits(limits: PaceLimits): PaceLimits {
  return { ...limits, tenantPerMinute: Infinity, tenantPerDay: Infinity };
}

/** One account's limits for its tenant gate: tenant minute and day only, no spacing of its own. */
export function tenantLimits(limits: PaceLimits, share: AccountShare = {}): PaceLimits {
  return {
    perSecond: Infinity,
    perMinute: Infinity,
    perDay: Infinity,
    tenantPerMinute: share.tenant?.perMinute ?? limits.tenantPerMinute,
    tenantPerDay: share.tenant?.perDay ?? limits.tenantPerDay,
    margin: limits.margin,
    queueLimit: share.queueLimit ?? limits.queueLimit,
    // Whether the account's own tenant limits were set (Keap's reports replace them if not).
    explicit: share.tenant?.explicit ?? limits.explicit,
  };
}

/**
 * The shared budget of one OAuth client and the fair queue over its accounts. Make one per
 * client id that two or more accounts use; give each account the pacer of pacerFor(). `gate`
 * keeps the shared budget (default: a LocalGate with clientLimits(limits); a RedisGate built
 * with clientLimits() and keyed by the client shares it between replicas). stop() ends every
 * account's pacer and the gate.
 */
export class SharedClient {
  private readonly queue: FairQueue;

  constructor(
    private readonly limits: PaceLimits,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    gate?: DepartureGate,
    private readonly policy: FairSharePolicy = FAIR_SHARE,
  ) {
    this.queue = new FairQueue(gate ?? new LocalGate(clientLimits(limits), logger, now), logger, now, policy);
  }

  /**
   * The pacer of one account of this client: its acquire waits for the account's tenant budget
   * and its fair turn on the client's. With `limits.perSecond` 0 (pacing off), a NoPacer. An
   * account id has one pacer at a time: after its stop(), the id may be given a new one.
   */
  pacerFor(accountId: string, share: AccountShare = {}): FairSharePacer {
    if (this.limits.perSecond <= 0) return new NoPacer();
    const weight = share.weight ?? this.policy.defaultWeight;
    if (!(weight > 0 && Number.isFinite(weight)))
      throw new RangeError(`account ${accountId}: weight must be a positive number, not ${weight}`);
    const queueLimit = share.queueLimit ?? this.limits.queueLimit;
    const tenant = share.tenantGate ?? new LocalGate(tenantLimits(this.limits, share), this.logger, this.now);
    return new AccountPacer(this.queue, this.queue.attach(accountId, weight, queueLimit, tenant));
  }

  /** Waiters of every account. */
  depth(): number {
    return this.queue.depth();
  }

  /** Refuses every waiter (QueueFull, as QuotaPacer's stop does), stops every account's tenant gate and the shared gate. */
  stop(): Promise<void> {
    return this.queue.stop();
  }
}

class AccountPacer implements FairSharePacer {
  readonly enabled = true;

  constructor(
    private readonly queue: FairQueue,
    private readonly lane: Lane,
  ) {}

  acquire(deadline: number, priority: Priority, signal?: AbortSignal): Promise<void> {
    return this.queue.acquire(this.lane, deadline, priority, signal);
  }

  observe(report: QuotaReport | undefined): void {
    if (report !== undefined) this.queue.observe(this.lane, report);
  }

  backOff(ms: number, scope?: FeedbackScope): void {
    this.queue.backOff(this.lane, ms, scope);
  }

  spikeArrested(retryAfterMs: number | undefined, backOffMs: number): void {
    this.queue.spikeArrested(retryAfterMs, backOffMs);
  }

  pacePerSecond(): number | undefined {
    return this.queue.pacePerSecond();
  }

  exhaustDay(resetsAt: number | undefined, scope?: FeedbackScope): void {
    this.queue.exhaustDay(this.lane, resetsAt, scope);
  }

  depth(): number {
    return this.lane.size();
  }

  mode(): PacingMode {
    return this.queue.mode();
  }

  stop(): Promise<void> {
    return this.queue.detach(this.lane);
  }
}

interface Waiter {
  /** Arrival order, across accounts (the fair queue's last tie-break). */
  readonly seq: number;
  readonly deadline: number;
  /** Settles the acquire (once) and lets go of its timer and abort listener. */
  settle(err?: PacingError): void;
}

/** What an account's latest quota report says is spent, and when it came. */
interface Spent {
  at: number;
  clientMinute: boolean;
  clientDay: boolean;
  tenantMinute: boolean;
  tenantDay: boolean;
}

class Lane {
  readonly replays: Waiter[] = [];
  readonly fresh: Waiter[] = [];
  /** Virtual finish time of the account's last departure. */
  finish = 0;
  detached = false;
  spent: Spent | undefined;

  constructor(
    readonly id: string,
    readonly weight: number,
    readonly queueLimit: number,
    readonly tenant: DepartureGate,
  ) {}

  size(): number {
    return this.replays.length + this.fresh.length;
  }

  head(): Waiter | undefined {
    return this.replays[0] ?? this.fresh[0];
  }

  shift(): Waiter | undefined {
    return this.replays.length > 0 ? this.replays.shift() : this.fresh.shift();
  }

  remove(w: Waiter): boolean {
    for (const q of [this.replays, this.fresh]) {
      const i = q.indexOf(w);
      if (i >= 0) {
        q.splice(i, 1);
        return true;
      }
    }
    return false;
  }

  drain(): Waiter[] {
    return [...this.replays.splice(0), ...this.fresh.splice(0)];
  }

  all(): Waiter[] {
    return [...this.replays, ...this.fresh];
  }
}

type SleepReason = 'idle' | 'tenant' | 'shared';

/** The accounts' lanes, the dispatcher and the shared gate of one client. */
class FairQueue {
  private readonly lanes = new Map<string, Lane>();
  /** Lanes with waiters. */
  private readonly backlogged = new Set<Lane>();
  /** Virtual time: the start tag of the last departure. */
  private virtual = 0;
  private seq = 0;
  private waiting = 0;
  private stopped = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private sleepingFor: SleepReason | undefined;

  constructor(
    private readonly gate: DepartureGate,
    private readonly logger: Logger,
    private readonly now: () => number,
    private readonly policy: FairSharePolicy,
  ) {}

  attach(id: string, weight: number, queueLimit: number, tenant: DepartureGate): Lane {
    if (this.stopped) throw new Error('the shared client is stopped');
    if (this.lanes.has(id)) throw new Error(`account ${id} already has a pacer on this client`);
    const lane = new Lane(id, weight, queueLimit, tenant);
    // A newcomer starts at the current virtual time: no credit for the time before it came.
    lane.finish = this.virtual;
    this.lanes.set(id, lane);
    return lane;
  }

  async detach(lane: Lane): Promise<void> {
    if (lane.detached) return;
    lane.detached = true;
    this.refuseLane(lane, this.queueFull(lane));
    this.lanes.delete(lane.id);
    await lane.tenant.stop();
  }

  acquire(lane: Lane, deadline: number, priority: Priority, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted === true) return Promise.reject(new WaitAbandoned());
    if (this.stopped || lane.detached) return Promise.reject(this.queueFull(lane));
    const now = this.now();
    const spent = this.gate.daySpent(now) ?? lane.tenant.daySpent(now);
    if (spent !== undefined) return Promise.reject(this.dailyQuotaSpent(spent.resetsAt, spent.retryAt));
    if (lane.size() > lane.queueLimit) return Promise.reject(this.queueFull(lane));
    const tenantAt = lane.tenant.earliestDeparture(now);
    if (tenantAt > deadline) return Promise.reject(deadlineExceeded(tenantAt - now));
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const onAbort = (): void => this.cancel(lane, waiter, new WaitAbandoned());
      const timer = setTimeout(
        () => this.cancel(lane, waiter, deadlineExceeded(this.earliest(lane, this.now()) - this.now())),
        Math.max(0, deadline - now),
      );
      const waiter: Waiter = {
        seq: this.seq++,
        deadline,
        settle: (err) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          if (err === undefined) resolve();
          else reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      (priority === 'replay' ? lane.replays : lane.fresh).push(waiter);
      this.waiting += 1;
      this.backlogged.add(lane);
      this.start();
      // The dispatcher waiting for the shared slot picks the newcomer at that slot; idle, or
      // waiting for tenant budgets, it must look now.
      if (this.sleepingFor === 'idle' || this.sleepingFor === 'tenant') this.wake?.();
    });
  }

  observe(lane: Lane, report: QuotaReport): void {
    const { product, tenant } = report;
    if (hasWindows(product)) this.gate.observe({ product, tenant: {} });
    if (hasWindows(tenant)) lane.tenant.observe({ product: {}, tenant });
    lane.spent = {
      at: this.now(),
      clientMinute: isSpent(product.minute),
      clientDay: isSpent(product.day),
      tenantMinute: isSpent(tenant.minute),
      tenantDay: isSpent(tenant.day),
    };
  }

  backOff(lane: Lane, ms: number, scope: FeedbackScope | undefined): void {
    if ((scope ?? this.scopeOf(lane, 'minute')) === 'account') lane.tenant.backOff(ms);
    else this.gate.backOff(ms);
  }

  /** Keap's spike arrest is the client's (every account's calls count): the shared gate's pace comes down. */
  spikeArrested(retryAfterMs: number | undefined, backOffMs: number): void {
    this.gate.spikeArrested(retryAfterMs, backOffMs);
  }

  pacePerSecond(): number | undefined {
    const pace = this.gate.pacePerSecond(this.now());
    return Number.isFinite(pace) ? pace : undefined;
  }

  exhaustDay(lane: Lane, resetsAt: number | undefined, scope: FeedbackScope | undefined): void {
    if ((scope ?? this.scopeOf(lane, 'day')) === 'account') lane.tenant.exhaustDay(resetsAt);
    else this.gate.exhaustDay(resetsAt);
    // Waiters are refused now, not at the next slot.
    this.wake?.();
  }

  depth(): number {
    return this.waiting;
  }

  mode(): PacingMode {
    return this.gate.mode();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const lanes = [...this.lanes.values()];
    await Promise.all(lanes.map((lane) => this.detach(lane)));
    this.wake?.();
    await this.running;
    await this.gate.stop();
  }

  /** A 429 or a spent day without a named scope: the account's alone only when its fresh report says so. */
  private scopeOf(lane: Lane, window: 'minute' | 'day'): FeedbackScope {
    const s = lane.spent;
    if (s === undefined || this.now() - s.at > this.policy.reportFreshMs) return 'client';
    const [tenant, client] = window === 'minute' ? [s.tenantMinute, s.clientMinute] : [s.tenantDay, s.clientDay];
    return tenant && !client ? 'account' : 'client';
  }

  private start(): void {
    this.running ??= this.dispatch();
  }

  /** One departure decided at a time, until stopped. */
  private async dispatch(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.step();
      } catch (err) {
        // Nothing in step() should throw; if something did, the waiters still get their turns.
        this.logger.error({ event: 'pacing_error', op: 'fair_share', error: String(err) }, 'pacing: fair share');
        await this.sleep(this.policy.recheckMs, 'shared');
      }
    }
  }

  private async step(): Promise<void> {
    const now = this.now();
    const spent = this.gate.daySpent(now);
    if (spent !== undefined) this.refuseAll(this.dailyQuotaSpent(spent.resetsAt, spent.retryAt));
    if (this.waiting === 0) return this.sleep(Infinity, 'idle');
    // Accounts whose tenant budget lets a call leave now; the others are refused what cannot
    // leave in time, and the earliest of them says when to look again.
    let ready = false;
    let nextTenant = Infinity;
    for (const lane of this.backlogged) {
      const at = this.tenantOpensAt(lane, now);
      if (at <= now) ready = true;
      else nextTenant = Math.min(nextTenant, at);
    }
    if (!ready) {
      if (this.waiting === 0) return;
      return this.sleep(Math.min(nextTenant - now, this.policy.recheckMs), 'tenant');
    }
    const booking = await this.gate.book(now);
    switch (booking.kind) {
      case 'go':
        return this.grant();
      case 'daySpent':
        return this.refuseAll(this.dailyQuotaSpent(booking.resetsAt, booking.retryAt));
      case 'wait': {
        // A shared gate answers after a round trip: the wait counts from its answer.
        const answered = this.now();
        const wait = booking.retryAt - answered;
        if (wait > this.gate.spacingMs()) this.refuseLate(booking.retryAt, answered);
        return this.sleep(Math.min(wait, this.policy.recheckMs), 'shared');
      }
    }
  }

  /**
   * When the account's tenant budget next lets a call leave (Infinity: its day is spent). Refuses
   * its waiters that cannot leave before that: all of them on a spent day.
   */
  private tenantOpensAt(lane: Lane, now: number): number {
    const spent = lane.tenant.daySpent(now);
    if (spent !== undefined) {
      this.refuseLane(lane, this.dailyQuotaSpent(spent.resetsAt, spent.retryAt));
      return Infinity;
    }
    const at = lane.tenant.earliestDeparture(now);
    if (at > now) for (const w of lane.all()) if (w.deadline < at) this.cancel(lane, w, deadlineExceeded(at - now));
    return at;
  }

  /** A shared slot is booked: it goes to the fair queue's choice among the accounts whose tenant budget lets them leave. */
  private async grant(): Promise<void> {
    const tried = new Set<Lane>();
    for (;;) {
      const now = this.now();
      const lane = this.pick(now, tried);
      // Every waiter left while the slot was booked (or the tenant budgets closed): it goes unused.
      if (lane === undefined) return;
      tried.add(lane);
      const booking = await lane.tenant.book(now);
      if (booking.kind === 'daySpent') {
        this.refuseLane(lane, this.dailyQuotaSpent(booking.resetsAt, booking.retryAt));
        continue;
      }
      if (booking.kind === 'wait') continue;
      // The head may have left during the booking: the next of the account's waiters takes the slot.
      const waiter = lane.shift();
      if (waiter === undefined) continue;
      this.departed(lane);
      const tag = Math.max(lane.finish, this.virtual);
      this.virtual = tag;
      lane.finish = tag + 1 / lane.weight;
      waiter.settle();
      return;
    }
  }

  /** The backlogged account with the smallest start tag whose tenant budget lets it leave now. */
  private pick(now: number, tried: Set<Lane>): Lane | undefined {
    let best: Lane | undefined;
    let bestStart = Infinity;
    let bestFinish = Infinity;
    let bestSeq = Infinity;
    for (const lane of this.backlogged) {
      if (tried.has(lane)) continue;
      const head = lane.head();
      if (head === undefined) continue;
      if (lane.tenant.daySpent(now) !== undefined || lane.tenant.earliestDeparture(now) > now) continue;
      const start = Math.max(lane.finish, this.virtual);
      const finish = start + 1 / lane.weight;
      if (
        start < bestStart ||
        (start === bestStart && (finish < bestFinish || (finish === bestFinish && head.seq < bestSeq)))
      ) {
        best = lane;
        bestStart = start;
        bestFinish = finish;
        bestSeq = head.seq;
      }
    }
    return best;
  }

  /** Refuses at once every waiter whose deadline comes before the shared budget reopens at `at`. */
  private refuseLate(at: number, now: number): void {
    for (const lane of this.backlogged)
      for (const w of lane.all()) if (w.deadline < at) this.cancel(lane, w, deadlineExceeded(at - now));
  }

  /** A waiter leaves its queue without departing: nothing was booked for it. */
  private cancel(lane: Lane, waiter: Waiter, err: PacingError): void {
    if (!lane.remove(waiter)) return;
    this.departed(lane);
    waiter.settle(err);
  }

  private departed(lane: Lane): void {
    this.waiting -= 1;
    if (lane.size() === 0) this.backlogged.delete(lane);
  }

  private refuseLane(lane: Lane, err: PacingError): void {
    const gone = lane.drain();
    this.waiting -= gone.length;
    this.backlogged.delete(lane);
    for (const w of gone) w.settle(err);
  }

  private refuseAll(err: PacingError): void {
    for (const lane of [...this.backlogged]) this.refuseLane(lane, err);
  }

  private sleep(ms: number, reason: SleepReason): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(() => done(), Math.max(0, ms)) : undefined;
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        this.sleepingFor = undefined;
        resolve();
      };
      this.wake = done;
      this.sleepingFor = reason;
    });
  }

  /** The earliest a call of this account could leave, by both budgets (for Retry-After). */
  private earliest(lane: Lane, now: number): number {
    return Math.max(this.gate.earliestDeparture(now), lane.tenant.earliestDeparture(now));
  }

  private dailyQuotaSpent(resetsAt: number, retryAt: number): DailyQuotaSpent {
    const now = this.now();
    const wait = Math.max(retryAt - now, 1000);
    return new DailyQuotaSpent(Math.max(resetsAt, now + 1000), Math.ceil(wait / 1000));
  }

  /** Retry-After of a full queue: the account's waiters at its share of the shared rate. */
  private queueFull(lane: Lane): QueueFull {
    let weights = lane.weight;
    for (const other of this.backlogged) if (other !== lane) weights += other.weight;
    const ms = lane.size() * this.gate.spacingMs() * (weights / lane.weight);
    return new QueueFull(lane.queueLimit, Math.max(1, Math.ceil(ms / 1000)));
  }
}

function hasWindows(w: { minute?: QuotaWindow; day?: QuotaWindow }): boolean {
  return w.minute !== undefined || w.day !== undefined;
}

/** Keap reports the window has nothing left. */
function isSpent(w: QuotaWindow | undefined): boolean {
  if (w === undefined) return false;
  if (w.available !== undefined) return w.available <= 0;
  return w.limit !== undefined && w.used !== undefined && w.used >= w.limit;
}

function deadlineExceeded(waitMs: number): DeadlineExceeded {
  return new DeadlineExceeded(Math.max(1, Math.ceil(waitMs / 1000)));
}
