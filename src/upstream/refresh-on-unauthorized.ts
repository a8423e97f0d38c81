// Refresh on 401: a gateway 401 with one of Apigee's token faults means Apigee rejected the
// token before Keap processed anything, so a new token and one replay (every method, body
// and all) is safe; the client does not see that 401. Any other 401, a 401 inside the
// broker's refresh floor and a second 401 go to the client as Keap sent them.
import type { IncomingMessage } from 'node:http';
import { classifyUnauthorized, NOT_APPROVED_AFTER_REFRESH, parseFault, type Fault } from '../keap/apigee.js';
import type { Logger } from '../observability/log.js';
import { accountOf, clientSignal, injectCredential, loggerOf, type Exchange } from '../pipeline/exchange.js';
import { FAULT_BODY_LIMIT, keepReadBody, peekSmall } from './response-body.js';
import type { Dispatch, ResponseHandler } from './response-handlers.js';

export interface UnauthorizedRefreshPolicy {
  /** The status Apigee rejects a token with. */
  status: number;
  /** New tokens per request: a 401 to a fresh token is Keap's honest answer. */
  refreshesPerRequest: number;
  /** Most of a 401's body read to find Apigee's fault; a larger body is the application's, relayed whole. */
  faultBodyLimit: number;
  // Every method is replayed: Apigee rejected the request before Keap saw it. Only a body
  // held in memory (at most REPLAY_BODY_BYTES) can be sent twice; a streamed one cannot.
}

export const REFRESH_ON_UNAUTHORIZED: UnauthorizedRefreshPolicy = {
  status: 401,
  refreshesPerRequest: 1,
  faultBodyLimit: FAULT_BODY_LIMIT,
};

export function refreshOnUnauthorized(
  logger: Logger,
  replayBodyBytes: number,
  policy: UnauthorizedRefreshPolicy = REFRESH_ON_UNAUTHORIZED,
): ResponseHandler {
  return (ex, res, resend) => {
    if (res.statusCode !== policy.status || ex.refreshes >= policy.refreshesPerRequest) return res;
    // A key cannot be refreshed: the client sees Keap's 401 as it is.
    if (ex.credential?.kind !== 'bearer') return res;
    ex.refreshes += 1;
    return replayWithNewToken(loggerOf(ex, logger), replayBodyBytes, policy, ex, res, resend);
  };
}

async function replayWithNewToken(
  logger: Logger,
  replayBodyBytes: number,
  policy: UnauthorizedRefreshPolicy,
  ex: Exchange,
  upstream: IncomingMessage,
  resend: Dispatch,
): Promise<IncomingMessage> {
  const used = ex.credential;
  if (used === undefined) return upstream;
  const { credentials, pacer } = accountOf(ex);
  const peeked = await peekSmall(upstream, policy.faultBodyLimit);
  // Too large to be Apigee's fault: the application's answer, relayed whole (streamed).
  const fault: Fault = peeked !== undefined ? parseFault(peeked) : { errorcode: undefined, faultstring: undefined };
  const passOn = (): IncomingMessage => (peeked === undefined ? upstream : keepReadBody(upstream, peeked));
  const kind = classifyUnauthorized(fault);
  if (kind === 'other') {
    // Not the gateway's fault body, so not proof that our token is bad: refreshing on it would
    // let any upstream answer rotate the refresh token, and a replay could write twice.
    // Neither the body nor its errorcode is logged: an upstream may echo anything, our token included.
    logger.info(
      {
        event: 'unauthorized_passed_on',
        reqId: ex.id,
        status: upstream.statusCode,
        apigeeFault: fault.errorcode !== undefined,
      },
      "Keap answered 401 without one of Apigee's token faults: passed on to the client, no refresh, no replay",
    );
    return passOn();
  }
  if (kind === 'not_approved') {
    logNotApproved(logger, ex, fault.errorcode);
    return passOn();
  }
  if (ex.bodyStream !== undefined) {
    logger.warn(
      { event: 'replay_skipped', reqId: ex.id, errorcode: fault.errorcode, reason: 'body_streamed', replayBodyBytes },
      'Keap rejected the token, but the request body was larger than REPLAY_BODY_BYTES and was streamed, so it cannot be replayed: the client gets the 401',
    );
    await credentials.invalidate(used);
    return passOn();
  }
  logger.debug(
    { event: 'token_rejected_by_keap', reqId: ex.id, errorcode: fault.errorcode },
    'replaying with a new token',
  );
  // No other token: either the broker's refresh floor kept this one (it still serves, so
  // Keap's 401 is the honest answer), or the refresh failed and get() says so (NoCredential).
  if (!(await credentials.invalidate(used)) && credentials.current() !== undefined) return passOn();
  ex.credential = await credentials.get();
  injectCredential(ex);
  await pacer.acquire(ex.deadline, 'replay', clientSignal(ex));
  const replayed = await resend(ex);
  if (fault.errorcode !== NOT_APPROVED_AFTER_REFRESH || replayed.statusCode !== policy.status) return replayed;
  // Apigee says "not approved" for one revoked token too; the same answer for a fresh token means the app.
  const again = await peekSmall(replayed, policy.faultBodyLimit);
  if (again === undefined) return replayed;
  const second = parseFault(again);
  if (second.errorcode === NOT_APPROVED_AFTER_REFRESH || classifyUnauthorized(second) === 'not_approved')
    logNotApproved(logger, ex, second.errorcode);
  return keepReadBody(replayed, again);
}

function logNotApproved(logger: Logger, ex: Exchange, errorcode: string | undefined): void {
  logger.error(
    { event: 'app_not_approved', reqId: ex.id, errorcode },
    "Keap says this OAuth app is not approved: no token refresh helps; check the app's status in Keap's developer portal",
  );
}
