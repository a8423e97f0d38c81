// Fall back to translation (XMLRPC_MODE=fallback): XML-RPC calls go to Keap's XML-RPC endpoint
// as in passthrough mode, and when it answers as retired or browned out, a call the proxy can
// translate is answered from REST v2 instead (translate-xmlrpc.ts). Calls it cannot translate
// always get Keap's own answer, relayed as in passthrough mode.
//
// Translating after Keap's answer is running the call a second time, so a call Keap may have
// run already is translated only when a second run does no harm (the policy below). Keap
// documents neither its retirement answer nor its brownouts' (research notes §1), so any of
// these answers makes the endpoint count as down for `downMs` (per account, on its
// XmlRpcEndpoint), and translatable calls skip it meanwhile, translated at once: a call that
// never reached Keap's XML-RPC is safe to translate whatever it does, writes included. The
// first call after the window tries the endpoint again.
import type { IncomingMessage } from 'node:http';
import type { Logger } from '../observability/log.js';
import { accountOf, loggerOf, type Exchange, type Stage, type StageResult } from '../pipeline/exchange.js';
import { UpstreamError } from './forwarder.js';
import type { Handled, ResponseHandler } from './response-handlers.js';
import type { XmlRpcTranslation } from './translate-xmlrpc.js';

export interface XmlRpcFallbackPolicy {
  /**
   * Answers that prove the call did not run, whatever the method: nothing is found there (404),
   * XML-RPC is gone (410), or the service refuses calls (503: a brownout). So does an answer
   * under 400 that is not XML (an HTML page such as `<h1>Developer Inactive</h1>`, JSON): Keap's
   * XML-RPC answers every call, its faults included, with XML.
   */
  notRun: readonly number[];
  /**
   * The application failed while answering (500): it may have run the call, in part, and it is
   * over. Translated only for `reads` and `idempotent` methods, whose second run leaves the same
   * state and answers the same. Any other 5xx (502, 504: a gateway gave up on a backend that may
   * still be running the call), a timeout and a lost connection: the call may still land on
   * Keap, after a later write of the app's; translated only for `reads`.
   */
  ranAndOver: readonly number[];
  /** Methods that change nothing. */
  reads: readonly string[];
  /**
   * Writes a second run of which changes nothing more and answers the same. Not in it:
   * ContactService.add (a second contact) and APIEmailService.optIn (its answer says whether
   * the status changed: false the second time). A method in neither list is not idempotent.
   */
  idempotent: readonly string[];
  /** How long the endpoint counts as down after such an answer (XMLRPC_FALLBACK_DOWN_MS). */
  downMs: number;
}

export const XMLRPC_FALLBACK: XmlRpcFallbackPolicy = {
  notRun: [404, 410, 503],
  ranAndOver: [500],
  reads: [
    'ContactService.load',
    'ContactService.findByEmail',
    'DataService.query',
    'DataService.findByField',
    'DataService.count',
    'DataService.load',
    'APIEmailService.getOptStatus',
  ],
  // Not addWithDupCheck (without an Email it creates), merge or DataService.delete (the
  // second run finds the record gone: a fault where the first answered true).
  idempotent: [
    'ContactService.update',
    'DataService.update',
    'ContactService.addToGroup',
    'ContactService.removeFromGroup',
    'APIEmailService.optOut',
  ],
  downMs: 300_000,
};

/**
 * What an XML-RPC answer says of the endpoint: it answered (`xml`); it is retired or down and
 * the call did not run (`not_run`), ran and is over (`ran`), or may still be running
 * (`unknown`); or the answer is about this request (`request`: 400, 401, 403, 413, 429... as
 * relayed in passthrough mode, and no judgement of the endpoint).
 */
export type Verdict = 'xml' | 'not_run' | 'ran' | 'unknown' | 'request';

export function judgeAnswer(
  status: number,
  contentType: string | undefined,
  policy: XmlRpcFallbackPolicy = XMLRPC_FALLBACK,
): Verdict {
  if (policy.notRun.includes(status)) return 'not_run';
  if (policy.ranAndOver.includes(status)) return 'ran';
  if (status >= 500) return 'unknown';
  if (status >= 400) return 'request';
  return contentType !== undefined && XML.test(contentType) ? 'xml' : 'not_run';
}

const XML = /^\s*(?:text|application)\/xml\s*(?:;|$)/i;

export interface FallbackDeps {
  translation: XmlRpcTranslation;
  logger: Logger;
  policy?: XmlRpcFallbackPolicy;
  /** The clock of the down window (tests move it). */
  now?: () => number;
}

export class FallBackToTranslation {
  private readonly translation: XmlRpcTranslation;
  private readonly logger: Logger;
  private readonly policy: XmlRpcFallbackPolicy;
  private readonly now: () => number;

  constructor(deps: FallbackDeps) {
    this.translation = deps.translation;
    this.logger = deps.logger;
    this.policy = deps.policy ?? XMLRPC_FALLBACK;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Request side, after the credential and before the pacer: while the account's endpoint
   * counts as down, a call that can be translated is, without trying XML-RPC.
   */
  readonly whileDown: Stage = (ex) => {
    if (!ex.xmlrpc || !fallingBack(ex) || !this.translation.translates(ex.xmlrpcMethod)) return;
    if (!accountOf(ex).xmlrpcEndpoint.skipping(this.now())) return;
    return this.translation.answer(ex);
  };

  /** Response side, outside every handler that replays: Keap's XML-RPC answer, judged. */
  readonly onAnswer: ResponseHandler = (ex, res) => (ex.xmlrpc && fallingBack(ex) ? this.judge(ex, res) : res);

  /**
   * Around the response side: a timeout or a lost connection to Keap's XML-RPC endpoint
   * judges it down; a read is then translated, any other call fails as in passthrough mode.
   */
  orOnFailure(stage: Stage): Stage {
    return (ex) => {
      const out = stage(ex);
      if (!ex.xmlrpc || !fallingBack(ex) || !(out instanceof Promise)) return out;
      return out.catch((err: unknown) => this.afterFailure(ex, err));
    };
  }

  private judge(ex: Exchange, res: IncomingMessage): Handled | Promise<Handled> {
    const status = res.statusCode ?? 0;
    const verdict = judgeAnswer(status, res.headers['content-type'], this.policy);
    if (verdict === 'xml') this.up(ex);
    if (verdict === 'xml' || verdict === 'request') {
      ex.xmlrpcServedBy = 'keap';
      return res;
    }
    this.down(ex, status);
    if (!this.mayTranslate(ex, verdict, status)) {
      ex.xmlrpcServedBy = 'keap';
      return res;
    }
    // Keap's answer is not the client's: read to its end and dropped, so its connection goes
    // back to the pool (one still unread when the exchange ends is cut, by Forwarder.finish).
    ex.upstreamStatus = status;
    res.on('error', ignore);
    res.resume();
    return this.translation.answer(ex);
  }

  private async afterFailure(ex: Exchange, err: unknown): Promise<StageResult> {
    if (
      !(err instanceof UpstreamError) ||
      (err.failure !== 'timeout' && err.failure !== 'unreachable') ||
      // Failed inside the translation (a REST call), or after an answer began: not XML-RPC's failure.
      ex.xmlrpcServedBy !== undefined ||
      ex.res.headersSent
    )
      throw err;
    this.down(ex, err.failure);
    // No answer proves nothing: the call may have reached Keap and may still run, even after
    // the app's next call, so only a read is run again (by translation); a write is not.
    if (!this.mayTranslate(ex, 'unknown', err.failure)) throw err;
    return this.translation.answer(ex);
  }

  /** Whether this call may be answered by translation after this verdict (the policy at the top). */
  private mayTranslate(ex: Exchange, verdict: Verdict, seen: number | string): boolean {
    const method = ex.xmlrpcMethod;
    if (!this.translation.translates(method)) return false;
    const p = this.policy;
    const safe =
      verdict === 'not_run' ||
      p.reads.includes(method as string) ||
      (verdict === 'ran' && p.idempotent.includes(method as string));
    if (!safe) {
      loggerOf(ex, this.logger).info(
        { event: 'xmlrpc_fallback_skipped', reqId: ex.id, xmlrpcMethod: method, status: seen },
        "Keap's XML-RPC may have run this call, and running it again by translation is not safe: the client gets Keap's answer, or the fault for none",
      );
    }
    return safe;
  }

  private down(ex: Exchange, seen: number | string): void {
    const endpoint = accountOf(ex).xmlrpcEndpoint;
    const until = this.now() + this.policy.downMs;
    const fields = { event: 'xmlrpc_endpoint_down', reqId: ex.id, status: seen, until: new Date(until).toISOString() };
    if (endpoint.markDown(until)) {
      loggerOf(ex, this.logger).warn(
        fields,
        "Keap's XML-RPC endpoint answers as retired or down: the calls the proxy can translate are translated, without trying it, until `until`",
      );
    } else {
      loggerOf(ex, this.logger).debug(fields, "Keap's XML-RPC endpoint is still down");
    }
  }

  private up(ex: Exchange): void {
    const endpoint = accountOf(ex).xmlrpcEndpoint;
    if (endpoint.downUntil() === undefined) return;
    if (endpoint.markUp())
      loggerOf(ex, this.logger).info(
        { event: 'xmlrpc_endpoint_up', reqId: ex.id },
        "Keap's XML-RPC endpoint answers again: calls go to it first",
      );
  }
}

function ignore(): void {}

/** Whether the exchange's account serves XML-RPC with translation as the fallback. */
function fallingBack(ex: Exchange): boolean {
  return accountOf(ex).xmlrpcMode === 'fallback';
}
