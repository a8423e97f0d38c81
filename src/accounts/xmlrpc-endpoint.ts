// What the proxy has seen of Keap's XML-RPC endpoint for one account (XMLRPC_MODE=fallback):
// whether it was judged down (retired, browned out, not answering) and until when calls that
// can be translated skip it. Only the state: when to judge, and for how long, is the policy of
// upstream/fall-back-to-translation.ts, which also owns the clock.

export class XmlRpcEndpoint {
  /** Epoch ms until which translatable calls skip the endpoint. */
  private until = -Infinity;
  /** Judged down, and not seen answering XML-RPC since (the window may have lapsed). */
  private down = false;

  /** Whether calls that can be translated skip the endpoint at `now`. */
  skipping(now: number): boolean {
    return now < this.until;
  }

  /** Judged down until `until` (never sooner than an earlier judgement said); true when it was up until now. */
  markDown(until: number): boolean {
    const first = !this.down;
    this.down = true;
    this.until = Math.max(this.until, until);
    return first;
  }

  /** It answered as XML-RPC; true when it had been judged down (it recovered). */
  markUp(): boolean {
    const was = this.down;
    this.down = false;
    this.until = -Infinity;
    return was;
  }

  /** Until when it counts as down (epoch ms), or undefined while it counts as up. */
  downUntil(): number | undefined {
    return this.down ? this.until : undefined;
  }
}
