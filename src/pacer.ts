// Spaces outgoing calls so Keap's per-second spike arrest never fires. Apigee's spike
// arrest smooths its rate into intervals (25 per second means one per 40 ms), so calls are
// spaced evenly rather than let through in a burst at the top of each second.
import Bottleneck from 'bottleneck';

export interface Pacer {
  /** False when pacing is off: the pipeline then leaves the stage out. */
  readonly enabled: boolean;
  /** Resolves when the next call to Keap may start. */
  wait(): Promise<void>;
  stop(): Promise<void>;
}

export class NoPacer implements Pacer {
  readonly enabled = false;
  wait(): Promise<void> {
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

export class SpacingPacer implements Pacer {
  readonly enabled = true;
  private readonly limiter: Bottleneck;

  constructor(perSecond: number) {
    this.limiter = new Bottleneck({ minTime: Math.ceil(1000 / perSecond) });
  }

  wait(): Promise<void> {
    return this.limiter.schedule(() => Promise.resolve());
  }

  async stop(): Promise<void> {
    await this.limiter.stop({ dropWaitingJobs: true }).catch(() => undefined);
  }
}

export function createPacer(perSecond: number): Pacer {
  return perSecond > 0 ? new SpacingPacer(perSecond) : new NoPacer();
}
