// The last stage: send the request to Keap and react to Keap's answer before the client
// sees it. A gateway 401 means Apigee rejected the token before Keap processed anything,
// so a new token and one replay (every method, body and all) is safe; the client never
// sees that 401. A second 401 goes to the client.
import type { IncomingMessage } from 'node:http';
import type { Logger } from './log.js';
import type { CredentialSource } from './credentials.js';
import { type Forwarder, UpstreamError } from './forwarder.js';
import { HttpError } from './http-error.js';
import { tooLarge } from './body.js';
import { classifyUnauthorized, parseFault } from './apigee.js';
import { injectCredential, type Exchange, type Stage } from './pipeline.js';

export interface ForwardDeps {
  forwarder: Forwarder;
  credentials: CredentialSource;
  logger: Logger;
  maxBodyBytes: number;
  replayBodyBytes: number;
}

/** The most of an error body we read to classify it; Apigee's faults are a few hundred bytes. */
const FAULT_BODY_LIMIT = 64 * 1024;

export function forward(deps: ForwardDeps): Stage {
  return async (ex) => {
    let upstream: IncomingMessage | undefined = await send(deps, ex);
    if (upstream.statusCode === 401) upstream = await replayAfterUnauthorized(deps, ex, upstream);
    if (upstream === undefined) return;
    ex.upstreamStatus = upstream.statusCode;
    deps.forwarder.relay(upstream, ex.res, ex.id);
  };
}

async function send(deps: ForwardDeps, ex: Exchange): Promise<IncomingMessage> {
  ex.attempts += 1;
  try {
    return await deps.forwarder.send(ex.req, ex.res, { body: ex.body, stream: ex.bodyStream });
  } catch (err) {
    throw upstreamFailure(err, ex, deps.maxBodyBytes);
  }
}

/** Returns the response to relay, or undefined when this already answered the client. */
async function replayAfterUnauthorized(deps: ForwardDeps, ex: Exchange, upstream: IncomingMessage): Promise<IncomingMessage | undefined> {
  const used = ex.credential;
  // A key cannot be refreshed: the client sees Keap's 401 as it is.
  if (used === undefined || used.kind !== 'bearer') return upstream;
  const body = await readSmall(upstream, FAULT_BODY_LIMIT);
  const fault = parseFault(body);
  const answer = (): undefined => {
    ex.upstreamStatus = upstream.statusCode;
    deps.forwarder.relayBuffered(upstream, body, ex.res, ex.id);
    return undefined;
  };
  if (classifyUnauthorized(fault) === 'not_approved') {
    deps.logger.error(
      { event: 'app_not_approved', reqId: ex.id, errorcode: fault.errorcode },
      "Keap says this OAuth app is not approved: no token refresh helps; check the app's status in Keap's developer portal",
    );
    return answer();
  }
  if (ex.bodyStream !== undefined) {
    deps.logger.warn(
      { event: 'replay_skipped', reqId: ex.id, errorcode: fault.errorcode, reason: 'body_streamed', replayBodyBytes: deps.replayBodyBytes },
      'Keap rejected the token, but the request body was larger than REPLAY_BODY_BYTES and was streamed, so it cannot be replayed: the client gets the 401',
    );
    await deps.credentials.invalidate(used);
    return answer();
  }
  deps.logger.debug({ event: 'token_rejected_by_keap', reqId: ex.id, errorcode: fault.errorcode }, 'replaying with a new token');
  await deps.credentials.invalidate(used);
  ex.credential = await deps.credentials.get();
  injectCredential(ex);
  return send(deps, ex);
}

function readSmall(res: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    res.once('end', () => resolve(Buffer.concat(chunks)));
    res.once('error', reject);
  });
}

function upstreamFailure(err: unknown, ex: Exchange, maxBodyBytes: number): HttpError {
  if (!(err instanceof UpstreamError)) throw err;
  ex.outcome = err.failure;
  switch (err.failure) {
    case 'timeout':
      return new HttpError(504, 'upstream_timeout', 'Keap did not answer in time (UPSTREAM_TIMEOUT_MS). The request may or may not have been processed; check before you send it again.');
    case 'body_too_large':
      return tooLarge(maxBodyBytes);
    case 'client_closed':
      return new HttpError(499, 'client_closed', 'The client closed the connection.');
    default:
      return new HttpError(502, 'upstream_unreachable', 'Keap could not be reached. Retry later; if it persists, check KEAP_API_URL and the network.');
  }
}
