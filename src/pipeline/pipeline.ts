// The request pipeline: small stages in order, each one concern, composed in one visible
// place (`createPipeline`). A stage returns nothing (the request goes on), returns 'done'
// (it answered the client itself), or throws an HttpError (the request ends with that answer).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DEFAULT_ACCOUNT, type Config } from '../config/config.js';
import { RequestLog, type Logger } from '../observability/log.js';
import type { AccountRegistry } from '../accounts/registry.js';
import type { Forwarder } from '../upstream/forwarder.js';
import { forwardToKeap } from '../upstream/response-side.js';
import { UpstreamFailureLog } from '../upstream/failure-log.js';
import { translateXmlRpc, XmlRpcTranslation } from '../upstream/translate-xmlrpc.js';
import { FallBackToTranslation, XMLRPC_FALLBACK } from '../upstream/fall-back-to-translation.js';
import { RATE_LIMIT_REPLAYS, type RateLimitReplayPolicy } from '../upstream/back-off-on-rate-limit.js';
import type { Metrics, RateLimitOutcome } from '../observability/metrics.js';
import type { GetCache } from '../cache/get-cache.js';
import { HttpError, sendError } from '../http/http-error.js';
import { answerFor, outcomeOf } from '../http/error-answers.js';
import { sendXmlRpcFault } from '../http/xmlrpc-fault.js';
import type { BodyBudget } from '../http/body.js';
import { bodyUnread, injectCredential, loggerOf, type Exchange, type Stage } from './exchange.js';
import {
  addForwardedHeaders,
  assignRequestId,
  authorizeClient,
  authorizeClientByPrivateKey,
  bufferBody,
  ClientKeys,
  copyEndToEndHeaders,
  decideFraming,
  keepClientXmlRpcCall,
  obtainCredential,
  nameXmlRpcCall,
  pace,
  resolveAccount,
  refuseAmbiguousPaths,
  removeQueryToken,
  refuseForeignTargets,
  rewriteXmlRpcKey,
  routeXmlRpc,
  serveFromCache,
  setDeadline,
} from './stages.js';

export interface PipelineDeps {
  config: Config;
  logger: Logger;
  accounts: AccountRegistry;
  forwarder: Forwarder;
  metrics: Metrics;
  cache: GetCache;
  bodyBudget: BodyBudget;
  /** How Keap's 429s are replayed; RATE_LIMIT_REPLAYS with RATE_LIMIT_MAX_ATTEMPTS unless given. */
  rateLimitReplays?: RateLimitReplayPolicy;
  /** The clock of XMLRPC_MODE=fallback's down window and of the upstream failure log's (tests move it); Date.now unless given. */
  now?: (() => number) | undefined;
}

// ---------------------------------------------------------------------------------------

export interface Pipeline {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Resolves once no request is in flight (at once when none is). */
  drained(): Promise<void>;
  /** From now on a request that ends unanswered was cut by the proxy (its shutdown), not by its client. */
  cutting(): void;
  /** Requests over so far, and how many of them the proxy cut. */
  counts(): { requests: number; cut: number; inFlight: number };
}

export function createPipeline(deps: PipelineDeps): Pipeline {
  const { config, logger } = deps;
  const requestLog = new RequestLog(logger);
  const clientKeys = new ClientKeys(config.proxyClientKeys);
  const rateLimitReplays = deps.rateLimitReplays ?? { ...RATE_LIMIT_REPLAYS, maxAttempts: config.rateLimitMaxAttempts };
  // Each account has its own XML-RPC mode: the stages any of them needs are in, each asks the exchange's account.
  // With ACCOUNTS_FILE a reload may bring an account that needs any stage: all are in, each
  // asking the exchange's account (a stage an account does not need returns at once).
  const reloadable = config.accountsFile !== undefined;
  const xmlrpcModes = reloadable
    ? new Set<'passthrough' | 'translate' | 'fallback'>(['passthrough', 'translate', 'fallback'])
    : deps.accounts.xmlrpcModes();
  const translation =
    xmlrpcModes.has('translate') || xmlrpcModes.has('fallback')
      ? new XmlRpcTranslation(deps.forwarder, rateLimitReplays, deps.metrics)
      : undefined;
  const fallback =
    xmlrpcModes.has('fallback') && translation !== undefined
      ? new FallBackToTranslation({
          translation,
          logger,
          policy: { ...XMLRPC_FALLBACK, downMs: config.xmlrpcFallbackDownMs },
          now: deps.now,
        })
      : undefined;
  const stages: Stage[] = [
    assignRequestId,
    setDeadline(config.requestDeadlineMs),
    refuseForeignTargets,
    refuseAmbiguousPaths,
    // Before anything reads the target (the cache's key included): the client's token never goes on.
    removeQueryToken,
    resolveAccount(deps.accounts),
    // Early, so that every error after it can answer an XML-RPC client with a fault.
    routeXmlRpc,
    decideFraming,
    // Only the stages this configuration needs: one that would do nothing still costs a call per request.
    ...(clientKeys.enabled ? [authorizeClient(clientKeys)] : []),
    copyEndToEndHeaders,
    ...(reloadable || deps.accounts.caching() ? [serveFromCache(deps.cache)] : []),
    addForwardedHeaders,
    bufferBody(config, deps.bodyBudget),
    nameXmlRpcCall,
    ...(clientKeys.enabled ? [authorizeClientByPrivateKey(clientKeys)] : []),
    obtainCredential,
    // A translation reads the call as the client sent it, never the one with Keap's key in it.
    ...(translation !== undefined ? [keepClientXmlRpcCall] : []),
    rewriteXmlRpcKey,
    injectCredential,
    // Translated XML-RPC calls are answered here, from REST calls that are each paced on their own:
    // every call in translate mode; in fallback mode, those that can be while Keap's XML-RPC is down.
    ...(xmlrpcModes.has('translate') && translation !== undefined ? [translateXmlRpc(translation)] : []),
    ...(fallback !== undefined ? [fallback.whileDown] : []),
    ...(reloadable || deps.accounts.pacing() ? [pace(deps.metrics)] : []),
    forwardToKeap({
      forwarder: deps.forwarder,
      metrics: deps.metrics,
      cache: deps.cache,
      logger,
      replayBodyBytes: config.replayBodyBytes,
      rateLimitReplays,
      fallback,
      // A handler that would do nothing still costs a call per answer: key judging only where keys are.
      keys: reloadable || deps.accounts.usesKeys(),
    }),
  ];

  const CONNECTION_CLOSE = { connection: 'close' } as const;
  const rateLimitOutcome: Record<string, RateLimitOutcome | undefined> = {
    queue_full: 'rejected_full',
    daily_quota_exhausted: 'quota_spent',
    rate_limited: 'passed_on',
  };

  const limits = { maxBodyBytes: config.maxBodyBytes };
  const failureLog = new UpstreamFailureLog(logger, config.keapApiUrl.host, deps.now);

  /** The one edge where an error becomes the client's answer (see http/error-answers.ts). */
  function fail(ex: Exchange, thrown: unknown): void {
    const outcome = outcomeOf(thrown);
    if (outcome !== undefined) ex.outcome = outcome;
    if (ex.clientGone) ex.outcome ??= 'client_closed';
    // Why Keap could not be reached (or did not answer in time): logged with its cause, which the request line carries too.
    const cause = failureLog.failed(thrown, ex.id, loggerOf(ex, logger));
    if (cause !== undefined) ex.cause = cause;
    if (outcome === 'unusable_response') {
      loggerOf(ex, logger).warn(
        {
          event: 'upstream_response_unusable',
          reqId: ex.id,
          upstreamStatus: ex.upstreamStatus,
          reason: (thrown as { reason?: string }).reason,
        },
        "Keap's response could not be relayed as it is: the client gets 502",
      );
    }
    let err = answerFor(thrown, limits);
    ex.errorCode = err?.code ?? 'internal_error';
    const rateLimited = err !== undefined ? rateLimitOutcome[err.code] : undefined;
    if (rateLimited !== undefined && ex.account !== undefined)
      deps.metrics.rateLimited(ex.account.id, ex.account.label(), rateLimited);
    if (err === undefined) {
      loggerOf(ex, logger).error(
        { event: 'internal_error', reqId: ex.id, err: thrown instanceof Error ? thrown.message : String(thrown) },
        'request failed inside the proxy',
      );
      err = new HttpError(
        500,
        'internal_error',
        'The proxy failed to handle this request; see its log for the request id.',
      );
    }
    if (ex.outcome === 'client_closed' || ex.res.destroyed) return;
    try {
      // The error's own connection header, if it has one, wins (it is spread last).
      // An XML-RPC client reads faults, not JSON.
      if (ex.xmlrpc) sendXmlRpcFault(ex.res, err, ex.id, bodyUnread(ex) ? CONNECTION_CLOSE : undefined);
      else sendError(ex.res, err, ex.id, bodyUnread(ex) ? CONNECTION_CLOSE : undefined);
    } catch (sendErr) {
      // The error answer itself failed (headers half-written): the client's connection goes, the process stays.
      loggerOf(ex, logger).error(
        { event: 'internal_error', reqId: ex.id, err: sendErr instanceof Error ? sendErr.message : String(sendErr) },
        'an error answer could not be written',
      );
      ex.res.destroy();
    }
  }

  /** Runs the stages from `i` on; synchronous stages run back to back, without a microtask each. */
  function run(ex: Exchange, i: number): void {
    try {
      for (; i < stages.length; i++) {
        const result = (stages[i] as Stage)(ex);
        if (result === undefined) continue;
        if (result === 'done') return;
        const next = i + 1;
        result.then(
          (r) => (r === 'done' ? undefined : run(ex, next)),
          (err: unknown) => fail(ex, err),
        );
        return;
      }
    } catch (err) {
      fail(ex, err);
    }
  }

  let inFlight = 0;
  let requests = 0;
  let cut = 0;
  let cuttingNow = false;
  const drainedWaiters: (() => void)[] = [];

  /** The request is over: its log line, and the counts a shutdown waits on. */
  function over(ex: Exchange): void {
    logExchange(requestLog, ex);
    requests += 1;
    inFlight -= 1;
    if (inFlight === 0 && drainedWaiters.length > 0) {
      for (const resolve of drainedWaiters.splice(0)) resolve();
    }
  }

  /** The exchange is over (answered, or the client gone): release what it holds, start the next one on its connection. */
  function end(ex: Exchange): void {
    if (!ex.res.writableFinished) {
      ex.clientGone = true;
      ex.abort?.abort();
      if (cuttingNow) {
        ex.outcome = 'cut_by_shutdown';
        cut += 1;
      }
    }
    deps.forwarder.finish(ex.req);
    if (ex.account !== undefined) deps.accounts.released(ex.account);
    if (ex.bodyReserved > 0) deps.bodyBudget.give(ex.bodyReserved);
    ex.bodyReserved = 0;
    ex.bodyStream?.destroy();
    deps.metrics.requestDone(ex.xmlrpc ? 'xmlrpc' : 'rest', ex.res.writableFinished ? ex.res.statusCode : 499);
    if (ex.xmlrpc) deps.metrics.xmlrpcCall(ex.xmlrpcMethod, xmlrpcOutcome(ex));
    over(ex);
    nextOnConnection(ex);
  }

  return {
    drained() {
      return inFlight === 0 ? Promise.resolve() : new Promise((resolve) => drainedWaiters.push(resolve));
    },
    cutting() {
      cuttingNow = true;
    },
    counts() {
      return { requests, cut, inFlight };
    },
    handle(req, res) {
      inFlight += 1;
      const ex: Exchange = {
        req,
        res,
        startedAt: performance.now(),
        id: '',
        account: undefined,
        xmlrpc: false,
        xmlrpcMethod: undefined,
        clientCall: undefined,
        xmlrpcServedBy: undefined,
        restCalls: undefined,
        errorCode: undefined,
        framing: 'none',
        declaredLength: undefined,
        body: undefined,
        bodyStream: undefined,
        bodyReserved: 0,
        bodyStarted: false,
        clientGone: false,
        abort: undefined,
        clientKeyInBody: false,
        credential: undefined,
        attempts: 0,
        refreshes: 0,
        rateLimited: 0,
        deadline: 0,
        upstreamStatus: undefined,
        outcome: undefined,
        cause: undefined,
        cacheKey: undefined,
        cache: undefined,
      };
      // 'close' comes once per response, whether it finished or the client went away.
      res.on('close', () => end(ex));
      if (takeTurnOnConnection(ex)) run(ex, 0);
    },
  };

  /**
   * Requests pipelined on one connection are handled one after another, so they reach Keap
   * in the order the client sent them (Node hands us the next one before the previous
   * one's body is even read). Their answers must go back in that order anyway.
   */
  function takeTurnOnConnection(ex: Exchange): boolean {
    const socket = ex.req.socket as ConnectionTurns;
    if (socket[ACTIVE] === undefined) {
      socket[ACTIVE] = ex;
      return true;
    }
    (socket[WAITING] ??= []).push(ex);
    return false;
  }

  function nextOnConnection(ex: Exchange): void {
    const socket = ex.req.socket as ConnectionTurns;
    if (socket[ACTIVE] !== ex) {
      // A waiting request whose client went away leaves the line.
      const waiting = socket[WAITING];
      const at = waiting?.indexOf(ex) ?? -1;
      if (at >= 0) waiting?.splice(at, 1);
      return;
    }
    let next = socket[WAITING]?.shift();
    // Node emits 'close' only for the answer in progress: requests still waiting their turn
    // on a connection that has gone are ended here, never run (nothing of theirs is sent).
    while (next !== undefined && socket.destroyed) {
      next.clientGone = true;
      if (cuttingNow) {
        next.outcome = 'cut_by_shutdown';
        cut += 1;
      }
      assignRequestId(next);
      deps.metrics.requestDone(next.xmlrpc ? 'xmlrpc' : 'rest', 499);
      over(next);
      next = socket[WAITING]?.shift();
    }
    socket[ACTIVE] = next;
    if (next !== undefined) run(next, 0);
  }
}

const ACTIVE = Symbol('keap-proxy.active');
const WAITING = Symbol('keap-proxy.waiting');
type ConnectionTurns = IncomingMessage['socket'] & { [ACTIVE]?: Exchange | undefined; [WAITING]?: Exchange[] };

function logExchange(log: RequestLog, ex: Exchange): void {
  const url = ex.req.url ?? '';
  const q = url.indexOf('?');
  const finished = ex.res.writableFinished;
  const account = ex.account?.id;
  log.write({
    time: Date.now(),
    reqId: ex.id,
    account: account === DEFAULT_ACCOUNT ? undefined : account,
    method: ex.req.method ?? '',
    // The query string is left out: legacy clients put keys there.
    path: q < 0 ? url : url.slice(0, q),
    status: finished ? ex.res.statusCode : undefined,
    upstreamStatus: ex.upstreamStatus,
    attempts: ex.attempts,
    durationMs: Math.round((performance.now() - ex.startedAt) * 10) / 10,
    outcome: ex.outcome ?? (finished ? undefined : 'client_closed'),
    cause: ex.cause,
    cache: ex.cache,
    xmlrpcMethod: ex.xmlrpcMethod,
    xmlrpcServedBy: ex.xmlrpcServedBy,
    rest: ex.restCalls?.join('; '),
  });
}

/** What became of an XML-RPC call: Keap's answer relayed, the translation's, or the code of the proxy's own answer. */
function xmlrpcOutcome(ex: Exchange): string {
  if (ex.errorCode !== undefined) return ex.errorCode;
  if (!ex.res.writableFinished) return 'client_closed';
  return ex.xmlrpcServedBy === 'translation' ? 'translated' : 'relayed';
}
