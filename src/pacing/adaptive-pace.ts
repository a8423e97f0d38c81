// The pace a gate keeps when Keap's spike arrests show its real limit is below the configured
// one (a key limited to 5/s or 10/s, other apps of the same client spending part of it).
// AIMD, as TCP does: each spike arrest lowers the pace, to what Keap accepted in its last
// second when that is less than the pace, else multiplicatively; then, as long as no spike
// arrest comes (busy or idle: the climb follows the clock), the pace climbs back additively: quickly up to just below the pace Keap last refused, then slowly
// probing above it, faster the longer Keap accepts, up to the configured pace, the ceiling.
// Keap's spike arrest counts calls in a sliding second (Apigee's UseEffectiveCount): while
// adapted, no more calls leave in any such second than the pace allows, so the burst that
// filled Keap's second is not followed by more before it frees.
import type { Logger } from '../observability/log.js';

export interface AdaptivePacePolicy {
  /**
   * On a spike arrest the pace comes down to the calls Keap accepted in its last second, when
   * fewer than the pace (Keap's sliding second measures its limit); else it is multiplied by this...
   */
  decrease: number;
  /** ...never below this share of the pace in one lowering (Keap's count of one second can say little)... */
  deepest: number;
  /** ...and never goes below this many calls per second. */
  floorPerSecond: number;
  /** Without spike arrests, the pace climbs by this share of the configured pace per second... */
  increase: number;
  /** ...up to this share of the pace Keap last refused; above it, probing... */
  nearRefused: number;
  /** ...by this share of the configured pace per second at first, */
  probe: number;
  /** doubling every this many ms of success (up to `increase`), so a lifted limit is found again. */
  probeDoublingMs: number;
  /** Spike arrests within this long of a lowering are the same overflow (calls already sent): one lowering. */
  holdMs: number;
  /** The sliding second the pace's calls are counted in: Keap's second plus the trip's jitter. */
  windowMs: number;
  /** At most one log line per this long about lowering the pace (it counts the lowerings it stands for). */
  logEveryMs: number;
}

export const ADAPTIVE_PACE: AdaptivePacePolicy = {
  decrease: 0.75,
  deepest: 0.4,
  floorPerSecond: 1,
  increase: 0.05,
  nearRefused: 0.9,
  probe: 0.005,
  probeDoublingMs: 10_000,
  holdMs: 1000,
  windowMs: 1020,
  logEveryMs: 10_000,
};

/** Euler steps of the climb are at most this long, so a long idle stretch climbs as a busy one. */
const STEP_MS = 250;

export class AdaptivePace {
  private rate: number;
  /** The pace Keap last refused (Infinity: none yet, or the ceiling was reached since). */
  private refused = Infinity;
  /** When the pace last came down, and when it was last brought up to date. */
  private loweredAt = -Infinity;
  private updatedAt: number;
  /** When the probing above `nearRefused` x `refused` began (undefined: not probing). */
  private probingSince: number | undefined;
  /** Departures of the last `windowMs`. */
  private readonly window: number[] = [];
  private unlogged = 0;
  private loggedAt = -Infinity;

  constructor(
    /** The configured pace (calls per second): the ceiling (Keap's reported spike limit moves it when none was set). */
    private ceilingPerSecond: number,
    private readonly logger: Logger,
    now: number,
    private readonly policy: AdaptivePacePolicy = ADAPTIVE_PACE,
  ) {
    this.rate = ceilingPerSecond;
    this.updatedAt = now;
  }

  get ceiling(): number {
    return this.ceilingPerSecond;
  }

  /**
   * A new ceiling (Keap reported another spike limit and the operator set none): a pace at the
   * old ceiling follows it; a pace Keap's 429s brought lower stays where it is, under it.
   */
  setCeiling(perSecond: number, now: number): void {
    this.climb(now);
    const atCeiling = this.rate >= this.ceilingPerSecond;
    this.ceilingPerSecond = perSecond;
    if (atCeiling || this.rate > perSecond) this.rate = perSecond;
  }

  /** The pace now, in calls per second. */
  perSecond(now: number): number {
    this.climb(now);
    return this.rate;
  }

  /** Whether Keap's spike arrest has brought the pace below the ceiling. */
  adapted(now: number): boolean {
    return this.perSecond(now) < this.ceiling;
  }

  /** A call left at `now`. */
  departed(now: number): void {
    this.prune(now);
    this.window.push(now);
  }

  /**
   * While adapted, the earliest a call may leave so that no more than the pace leave in any
   * sliding second (`now` when one may leave now).
   */
  windowFreesAt(now: number): number {
    const rate = this.perSecond(now);
    if (rate >= this.ceiling) return now;
    this.prune(now);
    const cap = Math.max(1, Math.floor(rate));
    if (this.window.length < cap) return now;
    return (this.window[this.window.length - cap] as number) + this.policy.windowMs;
  }

  /** Keap's spike arrest refused a call: answers whether the pace was lowered (once per overflow). */
  spikeArrested(now: number): boolean {
    this.climb(now);
    this.prune(now);
    // The newest departure stands for the refused call. It stays in the window although Keap
    // did not count it: a call that reached Keap later than it left here is still in Keap's
    // second, and freeing its place would send the next call into the same full second.
    if (now - this.loweredAt < this.policy.holdMs) return false;
    const before = this.rate;
    const accepted = Math.max(0, this.window.length - 1);
    this.refused = before;
    const p = this.policy;
    this.rate = Math.max(p.floorPerSecond, before * p.deepest, accepted < before ? accepted : before * p.decrease);
    this.loweredAt = now;
    this.probingSince = undefined;
    this.unlogged += 1;
    if (now - this.loggedAt >= this.policy.logEveryMs) {
      this.logger.info(
        {
          event: 'pace_lowered',
          pacePerSecond: round(this.rate),
          refusedPerSecond: round(before),
          acceptedLastSecond: accepted,
          configuredPerSecond: round(this.ceiling),
          lowerings: this.unlogged,
        },
        "Keap's spike arrest refused calls: pacing below the configured rate, climbing back while Keap accepts",
      );
      this.loggedAt = now;
      this.unlogged = 0;
    }
    return true;
  }

  private climb(now: number): void {
    const p = this.policy;
    while (this.updatedAt < now && this.rate < this.ceiling) {
      const dt = Math.min(STEP_MS, now - this.updatedAt);
      const t = this.updatedAt + dt;
      let share = p.increase;
      if (this.rate >= this.refused * p.nearRefused) {
        this.probingSince ??= this.updatedAt;
        share = Math.min(p.increase, p.probe * 2 ** ((t - this.probingSince) / p.probeDoublingMs));
      }
      this.rate = Math.min(this.ceiling, this.rate + (share * this.ceiling * dt) / 1000);
      this.updatedAt = t;
    }
    if (this.rate >= this.ceiling) {
      this.refused = Infinity;
      this.probingSince = undefined;
    }
    this.updatedAt = Math.max(this.updatedAt, now);
  }

  private prune(now: number): void {
    const w = this.window;
    let drop = 0;
    while (drop < w.length && (w[drop] as number) <= now - this.policy.windowMs) drop++;
    if (drop > 0) w.splice(0, drop);
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
