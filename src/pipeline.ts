// The request pipeline: small stages in order, each one concern, composed in one visible
// place (`createPipeline`). A stage returns nothing (the request goes on), returns 'done'
// (it answered the client itself), or throws an HttpError (the request ends with that answer).
import { randomUUID, createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Config } from './config.js';
import { RequestLog, type Logger } from './log.js';
import type { CredentialSource, Credential } from './credentials.js';
import type { Pacer } from './pacer.js';
import { type Forwarder, HOP_BY_HOP, parseConnection } from './forwarder.js';
import { forward, RATE_LIMIT_REPLAYS, type RateLimitReplayPolicy } from './upstream.js';
import type { Metrics, RateLimitOutcome } from './metrics.js';
import { type GetCache, serveCached } from './get-cache.js';
import { HttpError, sendError } from './http-error.js';
import { framingOf, readBody, type BodyBudget, type BufferedBody, BufferedBody as Buffered, type Framing } from './body.js';
import { readPrivateKey, rewritePrivateKey, XmlRpcError } from './xmlrpc.js';

/** One client request on its way through the pipeline. */
export interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly startedAt: number;
  id: string;
  /** XML-RPC calls have their body rewritten; REST calls pass through. */
  xmlrpc: boolean;
  /** How the client framed its body (and its declared length), from the parsed request. */
  framing: Framing;
  declaredLength: number | undefined;
  body: BufferedBody | undefined;
  bodyStream: Readable | undefined;
  /** Bytes of the body budget this exchange holds. */
  bodyReserved: number;
  /** Reading of the client's body has begun (what is left of a body never begun is Node's to drop). */
  bodyStarted: boolean;
  /** The client went away before its answer was written: nothing more is sent to Keap for it. */
  clientGone: boolean;
  /** Cancels a wait in the rate-limit queue when the client goes away (made only when a wait begins). */
  abort: AbortController | undefined;
  /** The client authenticated to us with its key in the XML-RPC privateKey param. */
  clientKeyInBody: boolean;
  credential: Credential | undefined;
  attempts: number;
  /** Keap 429s this request met. */
  rateLimited: number;
  /** When the client stops waiting for the rate limit (epoch ms). */
  deadline: number;
  upstreamStatus: number | undefined;
  /** Why the request ended without Keap's answer, for the log line. */
  outcome: string | undefined;
  /** Set when a 200 answer to this GET may be cached. */
  cacheKey: { key: string; ttlMs: number } | undefined;
  /** 'HIT' when served from the cache. */
  cache: 'HIT' | 'MISS' | undefined;
}

/** A stage returns nothing (go on), 'done' (it answered the client), or a promise of either; it throws HttpError to answer with an error. */
export type Stage = (ex: Exchange) => StageResult | Promise<StageResult>;
export type StageResult = void | 'done';

export interface PipelineDeps {
  config: Config;
  logger: Logger;
  credentials: CredentialSource;
  pacer: Pacer;
  forwarder: Forwarder;
  metrics: Metrics;
  cache: GetCache;
  bodyBudget: BodyBudget;
  /** How Keap's 429s are replayed; RATE_LIMIT_REPLAYS with RATE_LIMIT_MAX_ATTEMPTS unless given. */
  rateLimitReplays?: RateLimitReplayPolicy;
}

// ---------------------------------------------------------------------------------------
// Stages, in the order they run.

/** Only Keap is ever contacted: absolute-form targets and `//host` paths never pass. */
export function refuseForeignTargets(ex: Exchange): void {
  const url = ex.req.url ?? '';
  if (url.charCodeAt(0) !== 47 /* / */) {
    throw new HttpError(400, 'absolute_form_refused', 'This proxy forwards only to the configured Keap API. Send an origin-form request, e.g. "GET /crm/rest/v1/contacts", to this proxy\'s base URL.');
  }
  if (url.charCodeAt(1) === 47 || url.charCodeAt(1) === 92 /* \ */) {
    throw new HttpError(400, 'invalid_path', 'Paths must not start with "//": this proxy forwards only to the configured Keap API. Remove the extra slash.');
  }
}

/**
 * Paths go to Keap byte for byte (see the Forwarder), so a path Keap would resolve to another
 * one must not pass: the cache rules, XML-RPC routing and the request log would judge
 * `/crm/rest/v1/tags/../admin` while Keap served `/crm/rest/admin`. Refused rather than
 * resolved, because servers resolve them in different ways (see `hasDotSegment`).
 * Only the path is checked: the query is Keap's to read.
 */
export function refuseAmbiguousPaths(ex: Exchange): void {
  const url = ex.req.url ?? '';
  // Nearly every target has none of the three: native scans, and done. Each finds the
  // first one, so one past the path's end means none in the path (a query with dots is common).
  const dot = url.indexOf('.');
  const pct = url.indexOf('%');
  const backslash = url.indexOf('\\');
  if (dot < 0 && pct < 0 && backslash < 0) return;
  const end = pathEnd(url);
  if (backslash >= 0 && backslash < end) {
    throw new HttpError(400, 'invalid_path', 'The path contains a backslash ("\\"), which some servers read as "/". Percent-encode it as %5C, or use "/".');
  }
  if (((dot >= 0 && dot < end) || (pct >= 0 && pct < end)) && hasDotSegment(url, end)) {
    throw new HttpError(400, 'invalid_path', 'The path contains a "." or ".." segment (plain or percent-encoded, e.g. %2e%2e). This proxy passes paths to Keap unchanged, so send the path with those segments resolved, e.g. /crm/rest/v1/contacts rather than /crm/rest/v1/tags/../contacts.');
  }
}

/** Where the path ends: at the query or, should a client send one, the fragment. */
function pathEnd(url: string): number {
  for (let i = 0; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 63 /* ? */ || c === 35 /* # */) return i;
  }
  return url.length;
}

/**
 * Whether a segment of url[0, end) is "." or "..", each dot plain or as %2e/%2E. Counted as
 * dot-segments too, because some servers read them so: one that ends at an encoded slash
 * (%2F) or backslash (%5C), which some decode before splitting the path, and one whose dots
 * are followed by `;parameters` (`..;x`), which Java servers strip before resolving the path.
 */
export function hasDotSegment(url: string, end: number): boolean {
  // Dots in the segment so far, or -1 once it has anything else (before a ';').
  let dots = 0;
  let params = false;
  for (let i = 0; i <= end; i++) {
    // An implicit "/" at the end closes the last segment.
    const c = i === end ? 47 : url.charCodeAt(i);
    let width = 1;
    if (c === 37 /* % */ && i + 2 < end) {
      const hi = url.charCodeAt(i + 1);
      const lo = url.charCodeAt(i + 2) | 0x20;
      if (hi === 50 /* 2 */ && lo === 101 /* e */) {
        if (!params && dots >= 0) dots++;
        i += 2;
        continue;
      }
      if ((hi === 50 && lo === 102) /* %2f */ || (hi === 53 /* 5 */ && lo === 99) /* %5c */) width = 3;
    }
    if (c === 47 /* / */ || width === 3) {
      if (dots === 1 || dots === 2) return true;
      dots = 0;
      params = false;
      i += width - 1;
    } else if (c === 46 /* . */) {
      if (!params && dots >= 0) dots++;
    } else if (c === 59 /* ; */) {
      params = true;
    } else if (!params) {
      dots = -1;
    }
  }
  return false;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

/** Honour a sane X-Request-Id, else make one; it goes upstream and back to the client. */
export function assignRequestId(ex: Exchange): void {
  const given = ex.req.headers['x-request-id'];
  ex.id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

const XMLRPC_PATHS = new Set(['/crm/xmlrpc/v1', '/crm/xmlrpc', '/api/xmlrpc']);

/** Old per-account apps call /api/xmlrpc; Keap serves XML-RPC at /crm/xmlrpc/v1. */
export function routeXmlRpc(ex: Exchange): void {
  const url = ex.req.url ?? '/';
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);
  const trimmed = pathname.length > 1 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
  ex.xmlrpc = ex.req.method === 'POST' && XMLRPC_PATHS.has(trimmed);
  if (ex.xmlrpc && trimmed === '/api/xmlrpc') ex.req.url = '/crm/xmlrpc/v1' + (q < 0 ? '' : url.slice(q));
}

/** A client may ask to wait less than REQUEST_DEADLINE_MS for the rate limit. */
export const DEADLINE_HEADER = 'x-keap-proxy-deadline-ms';

/** The body's framing, read from the request as Node's parser framed it, before any header is filtered. */
export function decideFraming(ex: Exchange): void {
  const { framing, length } = framingOf(ex.req);
  ex.framing = framing;
  ex.declaredLength = length;
}

/**
 * Request headers that never pass: those of the client's connection, and the framing ones,
 * which the forwarder sets from what it actually sends (a client that names Content-Length
 * in Connection can then not strip the framing from the body).
 */
const REQUEST_HOP_BY_HOP = new Set([...HOP_BY_HOP, 'expect', 'content-length']);
/** Clients hold no Keap credentials: whatever they send is replaced by ours. Our own request headers stay here too. */
const CLIENT_ONLY = new Set(['authorization', 'x-keap-api-key', DEADLINE_HEADER]);

/**
 * What goes upstream: the client's headers minus hop-by-hop and framing ones (and those its
 * Connection header names) and minus any credential it sent, plus our request id. A fresh
 * object, because deleting from Node's header object turns it slow for every later read and copy.
 */
export function copyEndToEndHeaders(ex: Exchange): void {
  const from = ex.req.headers;
  const listed = parseConnection(from.connection);
  const to: IncomingHttpHeaders = {};
  for (const name of Object.keys(from)) {
    if (REQUEST_HOP_BY_HOP.has(name) || CLIENT_ONLY.has(name) || listed?.has(name) === true) continue;
    to[name] = from[name];
  }
  to['x-request-id'] = ex.id;
  ex.req.headers = to;
}

/** Keap sees who asked and how; the proxy itself speaks plain HTTP on its side. */
export function addForwardedHeaders(ex: Exchange): void {
  const headers = ex.req.headers;
  const client = ex.req.socket.remoteAddress ?? '';
  const prior = headers['x-forwarded-for'];
  headers['x-forwarded-for'] = prior === undefined ? client : `${String(prior)}, ${client}`;
  headers['x-forwarded-proto'] = 'http';
}

/** The keys clients must present when PROXY_CLIENT_KEYS is set. */
export class ClientKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = keys.map(sha256);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  matches(candidate: string): boolean {
    const d = sha256(candidate);
    let ok = false;
    // Compare against every key, so timing says nothing about which one (or none) matched.
    for (const k of this.digests) ok = timingSafeEqual(d, k) || ok;
    return ok;
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export function authorizeClient(keys: ClientKeys): Stage {
  return (ex) => {
    if (!keys.enabled) return;
    const auth = ex.req.headers.authorization;
    if (typeof auth === 'string' && auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ') {
      if (keys.matches(auth.slice(7).trim())) return;
      throw unauthorizedClient();
    }
    // XML-RPC clients that cannot set headers may put the key in privateKey; checked once the body is read.
    if (ex.xmlrpc && auth === undefined) {
      ex.clientKeyInBody = true;
      return;
    }
    throw unauthorizedClient();
  };
}

function unauthorizedClient(): HttpError {
  return new HttpError(401, 'client_unauthorized', 'Send `Authorization: Bearer <client key>` with one of the keys in PROXY_CLIENT_KEYS (XML-RPC clients may send it as the privateKey parameter).', {
    'www-authenticate': 'Bearer realm="keap-proxy"',
  });
}

export function bufferBody(config: Config, budget: BodyBudget): Stage {
  // XML-RPC must be rewritten whole, so it is held whole, within what the budget can ever hold.
  const xmlrpcLimit = Math.min(config.maxBodyBytes, budget.limit);
  const read = async (ex: Exchange): Promise<void> => {
    // Everything but XML-RPC is buffered only up to the replay limit, then streamed.
    const bufferLimit = ex.xmlrpc ? xmlrpcLimit : config.replayBodyBytes;
    let body;
    try {
      body = await readBody(ex.req, ex.declaredLength, bufferLimit, ex.xmlrpc ? xmlrpcLimit : config.maxBodyBytes, budget, () => {
        ex.bodyStarted = true;
      });
    } catch (err) {
      if (err instanceof HttpError) {
        if (err.code === 'body_budget_exhausted') ex.outcome = 'body_budget_exhausted';
        throw err;
      }
      ex.outcome = 'client_aborted';
      throw new HttpError(400, 'request_aborted', 'The request body could not be read; send it again.', { connection: 'close' });
    }
    ex.bodyReserved = body.reserved;
    ex.body = body.buffered;
    ex.bodyStream = body.stream;
  };
  return (ex) => (ex.framing !== 'none' ? read(ex) : undefined);
}

export function authorizeClientByPrivateKey(keys: ClientKeys): Stage {
  return (ex) => {
    if (!ex.clientKeyInBody) return;
    const body = ex.body;
    const key = body !== undefined ? xmlrpc(() => readPrivateKey(body.whole())) : undefined;
    if (key === undefined || !keys.matches(key)) throw unauthorizedClient();
  };
}

export function obtainCredential(source: CredentialSource): Stage {
  const wait = async (ex: Exchange): Promise<void> => {
    ex.credential = await source.get();
  };
  return (ex) => {
    ex.credential = source.current();
    if (ex.credential === undefined) return wait(ex);
  };
}

/** Placeholder written over a client key that came in privateKey, so it never reaches Keap. */
const PRIVATE_KEY_PLACEHOLDER = 'keap-proxy';

/** Key mode: the key goes in every XML-RPC call's privateKey; OAuth mode: the client key is removed from it. */
export function rewriteXmlRpcKey(ex: Exchange): void {
  if (!ex.xmlrpc || ex.body === undefined) return;
  const key = ex.credential?.kind === 'key' ? ex.credential.key : ex.clientKeyInBody ? PRIVATE_KEY_PLACEHOLDER : undefined;
  if (key === undefined) return;
  const body = ex.body.whole();
  ex.body = Buffered.of(xmlrpc(() => rewritePrivateKey(body, key)));
}

function xmlrpc<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof XmlRpcError) throw new HttpError(400, 'malformed_xmlrpc', err.message);
    throw err;
  }
}

export function injectCredential(ex: Exchange): void {
  const credential = ex.credential;
  if (credential === undefined) return;
  if (credential.kind === 'bearer') ex.req.headers.authorization = `Bearer ${credential.token}`;
  else ex.req.headers['x-keap-api-key'] = credential.key;
}

/** How long this request may wait for Keap's rate limit: the configured deadline, or less if the client asks. */
export function setDeadline(deadlineMs: number): Stage {
  return (ex) => {
    const asked = Number(ex.req.headers[DEADLINE_HEADER]);
    ex.deadline = Date.now() + (asked > 0 && asked < deadlineMs ? asked : deadlineMs);
  };
}

/** Reference data many clients re-read is answered from the cache (saving Keap quota) when a rule allows. */
export function serveFromCache(cache: GetCache, credentials: CredentialSource): Stage {
  return (ex) => {
    // A GET with a body is not the request a cached answer was for.
    if (ex.framing !== 'none') return;
    const key = cache.keyFor(ex.req.method ?? 'GET', ex.req.url ?? '/', credentials.tenant(), ex.req.headers);
    if (key === undefined) return;
    const hit = cache.get(key.key);
    if (hit === undefined) {
      ex.cacheKey = key;
      ex.cache = 'MISS';
      return;
    }
    ex.cache = 'HIT';
    serveCached(ex.res, hit, ex.id);
    return 'done';
  };
}

export function pace(pacer: Pacer, metrics: Metrics, credentials: CredentialSource): Stage {
  return async (ex) => {
    const started = performance.now();
    await pacer.acquire(ex.deadline, 'new', clientSignal(ex));
    metrics.queueWait(credentials.tenant(), (performance.now() - started) / 1000);
  };
}

/**
 * The client's body was read in part, not to its end (an answer came first): its connection
 * cannot carry another request. A body not read at all is Node's to drop (it reads and
 * discards it once the answer is written), and the connection stays usable.
 */
export function bodyUnread(ex: Exchange): boolean {
  return ex.bodyStarted && !ex.req.complete;
}

/** Aborted when the client goes away: a queued request whose client is gone is never sent. */
export function clientSignal(ex: Exchange): AbortSignal {
  ex.abort ??= new AbortController();
  if (ex.clientGone) ex.abort.abort();
  return ex.abort.signal;
}

// ---------------------------------------------------------------------------------------

export interface Pipeline {
  handle(req: IncomingMessage, res: ServerResponse): void;
}

export function createPipeline(deps: PipelineDeps): Pipeline {
  const { config, logger } = deps;
  const requestLog = new RequestLog(logger);
  const clientKeys = new ClientKeys(config.proxyClientKeys);
  const stages: Stage[] = [
    assignRequestId,
    setDeadline(config.requestDeadlineMs),
    refuseForeignTargets,
    refuseAmbiguousPaths,
    decideFraming,
    routeXmlRpc,
    // Only the stages this configuration needs: one that would do nothing still costs a call per request.
    ...(clientKeys.enabled ? [authorizeClient(clientKeys)] : []),
    copyEndToEndHeaders,
    ...(deps.cache.enabled ? [serveFromCache(deps.cache, deps.credentials)] : []),
    addForwardedHeaders,
    bufferBody(config, deps.bodyBudget),
    ...(clientKeys.enabled ? [authorizeClientByPrivateKey(clientKeys)] : []),
    obtainCredential(deps.credentials),
    rewriteXmlRpcKey,
    injectCredential,
    ...(deps.pacer.enabled ? [pace(deps.pacer, deps.metrics, deps.credentials)] : []),
    forward({
      ...deps,
      maxBodyBytes: config.maxBodyBytes,
      replayBodyBytes: config.replayBodyBytes,
      rateLimitReplays: deps.rateLimitReplays ?? { ...RATE_LIMIT_REPLAYS, maxAttempts: config.rateLimitMaxAttempts },
    }),
  ];

  const rateLimitOutcome: Record<string, RateLimitOutcome | undefined> = { queue_full: 'rejected_full', daily_quota_exhausted: 'quota_spent', rate_limited: 'passed_on' };

  function fail(ex: Exchange, err: unknown): void {
    if (ex.clientGone) ex.outcome ??= 'client_closed';
    const outcome = err instanceof HttpError ? rateLimitOutcome[err.code] : undefined;
    if (outcome !== undefined) deps.metrics.rateLimited(deps.credentials.tenant(), outcome);
    if (!(err instanceof HttpError)) {
      logger.error({ event: 'internal_error', reqId: ex.id, err: err instanceof Error ? err.message : String(err) }, 'request failed inside the proxy');
      err = new HttpError(500, 'internal_error', 'The proxy failed to handle this request; see its log for the request id.');
    }
    if (ex.outcome === 'client_closed' || ex.res.destroyed) return;
    const httpError = err as HttpError;
    try {
      sendError(ex.res, bodyUnread(ex) && httpError.headers.connection === undefined ? new HttpError(httpError.status, httpError.code, httpError.message, { ...httpError.headers, connection: 'close' }) : httpError, ex.id);
    } catch (sendErr) {
      // The error answer itself failed (headers half-written): the client's connection goes, the process stays.
      logger.error({ event: 'internal_error', reqId: ex.id, err: sendErr instanceof Error ? sendErr.message : String(sendErr) }, 'an error answer could not be written');
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

  /** The exchange is over (answered, or the client gone): release what it holds, start the next one on its connection. */
  function end(ex: Exchange): void {
    if (!ex.res.writableFinished) {
      ex.clientGone = true;
      ex.abort?.abort();
    }
    deps.forwarder.finish(ex.req);
    if (ex.bodyReserved > 0) deps.bodyBudget.give(ex.bodyReserved);
    ex.bodyReserved = 0;
    ex.bodyStream?.destroy();
    deps.metrics.requestDone(ex.xmlrpc ? 'xmlrpc' : 'rest', ex.res.writableFinished ? ex.res.statusCode : 499);
    logExchange(requestLog, ex);
    nextOnConnection(ex);
  }

  return {
    handle(req, res) {
      const ex: Exchange = {
        req,
        res,
        startedAt: performance.now(),
        id: '',
        xmlrpc: false,
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
        rateLimited: 0,
        deadline: 0,
        upstreamStatus: undefined,
        outcome: undefined,
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
      assignRequestId(next);
      deps.metrics.requestDone(next.xmlrpc ? 'xmlrpc' : 'rest', 499);
      logExchange(requestLog, next);
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
  log.write({
    time: Date.now(),
    reqId: ex.id,
    method: ex.req.method ?? '',
    // The query string is left out: legacy clients put keys there.
    path: q < 0 ? url : url.slice(0, q),
    status: finished ? ex.res.statusCode : undefined,
    upstreamStatus: ex.upstreamStatus,
    attempts: ex.attempts,
    durationMs: Math.round((performance.now() - ex.startedAt) * 10) / 10,
    outcome: ex.outcome ?? (finished ? undefined : 'client_closed'),
    cache: ex.cache,
  });
}
