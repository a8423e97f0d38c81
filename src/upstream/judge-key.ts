// Key mode: whether Keap's gateway accepts the account's key, told to its credential source
// from every answer. A 401 with one of Apigee's faults (a token fault, or the app not
// approved) means the gateway rejected the key: /readyz turns red (key_rejected). Any
// other answer below 500 means it let the key through (the gateway authenticates before it
// routes, so even a 404 or the application's own 401 says so): /readyz turns green again.
// A 5xx says nothing about the key. The key's 401 still goes to the client as Keap sent it.
import type { IncomingMessage } from 'node:http';
import { classifyUnauthorized, parseFault } from '../keap/apigee.js';
import { accountOf, type Exchange } from '../pipeline/exchange.js';
import type { Account } from '../accounts/account.js';
import type { Credential } from '../tokens/credentials.js';
import { FAULT_BODY_LIMIT, keepReadBody, peekSmall } from './response-body.js';
import type { ResponseHandler } from './response-handlers.js';

export interface KeyJudgingPolicy {
  /** The status Apigee rejects a key with. */
  status: number;
  /** Most of a 401's body read to find Apigee's fault; a larger one is the application's. */
  faultBodyLimit: number;
}

export const KEY_JUDGING: KeyJudgingPolicy = {
  status: 401,
  faultBodyLimit: FAULT_BODY_LIMIT,
};

export function judgeKey(policy: KeyJudgingPolicy = KEY_JUDGING): ResponseHandler {
  return (ex, res) => {
    const used = ex.credential;
    if (used?.kind !== 'key') return res;
    const status = res.statusCode ?? 0;
    if (status === policy.status) return judgeUnauthorized(policy, ex, res, used);
    if (status < 500) accountOf(ex).credentials.accepted(used);
    return res;
  };
}

async function judgeUnauthorized(
  policy: KeyJudgingPolicy,
  ex: Exchange,
  res: IncomingMessage,
  used: Credential,
): Promise<IncomingMessage> {
  const peeked = await peekSmall(res, policy.faultBodyLimit);
  await judgeKeyBy(accountOf(ex), used, policy.status, peeked);
  return peeked === undefined ? res : keepReadBody(res, peeked);
}

/**
 * The rule, for any answer to a call made with the key (the proxy's REST calls too): a 401
 * with one of Apigee's faults rejects the key; any other answer below 500 (a 401 with no
 * fault body, `body` undefined when too large to be Apigee's) accepts it; a 5xx says nothing.
 */
export async function judgeKeyBy(
  { credentials }: Account,
  used: Credential,
  status: number,
  body: Buffer | undefined,
  policy: KeyJudgingPolicy = KEY_JUDGING,
): Promise<void> {
  if (status >= 500) return;
  if (status !== policy.status || body === undefined) return credentials.accepted(used);
  const fault = parseFault(body);
  if (classifyUnauthorized(fault) === 'other') credentials.accepted(used);
  else await credentials.invalidate(used, fault.errorcode);
}
