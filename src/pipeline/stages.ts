// The request stages, in the order createPipeline (pipeline.ts) runs them: tiny named
// functions, each one concern.
import { randomUUID, createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Config } from '../config/config.js';
import type { Account } from '../accounts/account.js';
import type { AccountRegistry, NoAccount } from '../accounts/registry.js';
import { HOP_BY_HOP, parseConnection } from '../upstream/forwarder.js';
import type { Metrics } from '../observability/metrics.js';
import { type GetCache, serveCached } from '../cache/get-cache.js';
import { HttpError } from '../http/http-error.js';
import { framingOf, readBody, type BodyBudget, BufferedBody } from '../http/body.js';
import { readMethodName, readPrivateKey, rewritePrivateKey, XmlRpcError } from '../keap/xmlrpc.js';
import { accountOf, clientSignal, type Exchange, type Stage } from './exchange.js';

/** Only Keap is ever contacted: absolute-form targets and `//host` paths never pass. */
export function refuseForeignTargets(ex: Exchange): void {
  const url = ex.req.url ?? '';
  if (url.charCodeAt(0) !== 47 /* / */) {
    throw new HttpError(
      400,
      'absolute_form_refused',
      'This proxy forwards only to the configured Keap API. Send an origin-form request, e.g. "GET /crm/rest/v1/contacts", to this proxy\'s base URL.',
    );
  }
  if (url.charCodeAt(1) === 47 || url.charCodeAt(1) === 92 /* \ */) {
    throw new HttpError(
      400,
      'invalid_path',
      'Paths must not start with "//": this proxy forwards only to the configured Keap API. Remove the extra slash.',
    );
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
    throw new HttpError(
      400,
      'invalid_path',
      'The path contains a backslash ("\\"), which some servers read as "/". Percent-encode it as %5C, or use "/".',
    );
  }
  if (((dot >= 0 && dot < end) || (pct >= 0 && pct < end)) && hasDotSegment(url, end)) {
    throw new HttpError(
      400,
      'invalid_path',
      'The path contains a "." or ".." segment (plain or percent-encoded, e.g. %2e%2e). This proxy passes paths to Keap unchanged, so send the path with those segments resolved, e.g. /crm/rest/v1/contacts rather than /crm/rest/v1/tags/../contacts.',
    );
  }
}

/** The query parameter older Keap SDKs put the OAuth token in. */
const QUERY_TOKEN = 'access_token';

/**
 * Older SDKs send the OAuth token as `?access_token=…`: like an Authorization header, it is the
 * client's and never goes to Keap (the proxy's own credential goes in the header). Every
 * `access_token` parameter is taken out; the rest of the query stays byte for byte, and a query
 * left empty goes with its `?`. (The request log and warn lines never show the query at all.)
 */
export function removeQueryToken(ex: Exchange): void {
  const url = ex.req.url ?? '';
  // Nearly every target has none: one native scan, and done.
  if (url.indexOf(QUERY_TOKEN) < 0) return;
  const q = url.indexOf('?');
  if (q < 0) return;
  const hash = url.indexOf('#', q);
  const end = hash < 0 ? url.length : hash;
  const pairs = url.slice(q + 1, end).split('&');
  const kept = pairs.filter((pair) => {
    const eq = pair.indexOf('=');
    return (eq < 0 ? pair : pair.slice(0, eq)) !== QUERY_TOKEN;
  });
  // Only a query the token was taken from changes: `?a&&b` without one stays as it came.
  if (kept.length === pairs.length) return;
  const query = kept.join('&');
  const path = url.slice(0, q);
  const rest = url.slice(end);
  ex.req.url = (query === '' ? path : `${path}?${query}`) + rest;
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

/** Which Keap account the request is for: everything per account is reached through it from here on. */
export function resolveAccount(registry: AccountRegistry): Stage {
  const held = (ex: Exchange, account: Account): undefined => {
    ex.account = account;
    account.inFlight += 1;
    return undefined;
  };
  return (ex) => {
    const found = registry.resolve(ex.req);
    if (found instanceof Promise) return found.then((account) => held(ex, account));
    if ('kind' in found) {
      // An XML-RPC app reads faults, not JSON, even from a base URL that names no account.
      ex.xmlrpc = ex.req.method === 'POST' && XMLRPC_PATHS.has(xmlrpcPathOf(ex.req.url ?? '/'));
      throw noAccount(found);
    }
    return held(ex, found);
  };
}

/** The path without query, trailing slash or an `/accounts/<id>` prefix: what routeXmlRpc compares. */
function xmlrpcPathOf(url: string): string {
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);
  const prefixed = /^\/accounts\/[^/]*(\/.*)?$/.exec(pathname);
  return withoutTrailingSlash(prefixed ? (prefixed[1] ?? '/') : pathname);
}

/** `/api/xmlrpc/` and `/api/xmlrpc` are one XML-RPC path. */
function withoutTrailingSlash(pathname: string): string {
  return pathname.length > 1 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
}

function noAccount(why: NoAccount): HttpError {
  return why.kind === 'unknown'
    ? new HttpError(
        404,
        'unknown_account',
        `No Keap account "${why.id.slice(0, 64)}" is configured here; check the account id in the base URL (/accounts/<id>/...).`,
      )
    : new HttpError(
        404,
        'unknown_account',
        "This proxy serves several Keap accounts and this request names none: use the base URL /accounts/<id>/ (or an account's own host name or port).",
      );
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

/** Honour a sane X-Request-Id, else make one; it goes upstream and back to the client. */
export function assignRequestId(ex: Exchange): void {
  const given = ex.req.headers['x-request-id'];
  ex.id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/** Where Keap serves XML-RPC. */
const XMLRPC_PATH = '/crm/xmlrpc/v1';
/** Keap's own pages also show /crm/xmlrpc, which Keap serves as it is. */
const XMLRPC_PATHS_KEAP_SERVES = new Set([XMLRPC_PATH, '/crm/xmlrpc']);
/** Old per-account apps call /api/xmlrpc, and Keap's help pages write it /api/xmlrpc/v1. */
const XMLRPC_PATHS = new Set([...XMLRPC_PATHS_KEAP_SERVES, '/api/xmlrpc', '/api/xmlrpc/v1']);

/**
 * XML-RPC calls are POSTs to one of XMLRPC_PATHS, with or without a trailing slash. Those Keap
 * does not serve as they are (the old /api/xmlrpc and /api/xmlrpc/v1, and any with a trailing
 * slash) go to Keap's /crm/xmlrpc/v1, the query kept.
 */
export function routeXmlRpc(ex: Exchange): void {
  const url = ex.req.url ?? '/';
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);
  ex.xmlrpc = ex.req.method === 'POST' && XMLRPC_PATHS.has(withoutTrailingSlash(pathname));
  if (ex.xmlrpc && !XMLRPC_PATHS_KEAP_SERVES.has(pathname)) ex.req.url = XMLRPC_PATH + (q < 0 ? '' : url.slice(q));
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
  return new HttpError(
    401,
    'client_unauthorized',
    'Send `Authorization: Bearer <client key>` with one of the keys in PROXY_CLIENT_KEYS (XML-RPC clients may send it as the privateKey parameter).',
    {
      'www-authenticate': 'Bearer realm="keap-proxy"',
    },
  );
}

export function bufferBody(config: Config, budget: BodyBudget): Stage {
  // XML-RPC must be rewritten whole, so it is held whole, within what the budget can ever hold.
  const xmlrpcLimit = Math.min(config.maxBodyBytes, budget.limit);
  const read = async (ex: Exchange): Promise<void> => {
    // Everything but XML-RPC is buffered only up to the replay limit, then streamed.
    const bufferLimit = ex.xmlrpc ? xmlrpcLimit : config.replayBodyBytes;
    let body;
    try {
      body = await readBody(
        ex.req,
        ex.declaredLength,
        bufferLimit,
        ex.xmlrpc ? xmlrpcLimit : config.maxBodyBytes,
        budget,
        () => {
          ex.bodyStarted = true;
        },
      );
    } catch (err) {
      if (err instanceof HttpError) {
        if (err.code === 'body_budget_exhausted') ex.outcome = 'body_budget_exhausted';
        throw err;
      }
      ex.outcome = 'client_aborted';
      throw new HttpError(400, 'request_aborted', 'The request body could not be read; send it again.', {
        connection: 'close',
      });
    }
    ex.bodyReserved = body.reserved;
    ex.body = body.buffered;
    ex.bodyStream = body.stream;
  };
  return (ex) => (ex.framing !== 'none' ? read(ex) : undefined);
}

/** Longest methodName kept for the log and the inventory: Keap's are under 60 characters. */
const METHOD_NAME_MAX = 128;

/** An XML-RPC call's methodName, for its log line and the migration inventory; a malformed call is refused here. */
export function nameXmlRpcCall(ex: Exchange): void {
  if (!ex.xmlrpc) return;
  // A POST with no body is no methodCall either: refused like any malformed call, in every
  // mode, rather than spent on Keap for its own parse fault.
  if (ex.body === undefined && ex.bodyStream === undefined)
    throw new HttpError(400, 'malformed_xmlrpc', 'The XML-RPC call has no body; send a methodCall.');
  if (ex.body === undefined) return;
  const body = ex.body.whole();
  ex.xmlrpcMethod = xmlrpc(() => readMethodName(body)).slice(0, METHOD_NAME_MAX);
}

export function authorizeClientByPrivateKey(keys: ClientKeys): Stage {
  return (ex) => {
    if (!ex.clientKeyInBody) return;
    const body = ex.body;
    const key = body !== undefined ? xmlrpc(() => readPrivateKey(body.whole())) : undefined;
    if (key === undefined || !keys.matches(key)) throw unauthorizedClient();
  };
}

export function obtainCredential(ex: Exchange): void | Promise<void> {
  const source = accountOf(ex).credentials;
  ex.credential = source.current();
  if (ex.credential === undefined) return waitForCredential(ex);
}

async function waitForCredential(ex: Exchange): Promise<void> {
  ex.credential = await accountOf(ex).credentials.get();
}

/**
 * Where calls may be translated (XMLRPC_MODE translate or fallback), the call as the client
 * sent it is kept before rewriteXmlRpcKey splices the key in: a translation reads that one.
 * Passthrough keeps nothing (in key mode each XML-RPC body would be held twice).
 */
export function keepClientXmlRpcCall(ex: Exchange): void {
  if (ex.xmlrpc && ex.body !== undefined) ex.clientCall = ex.body.whole();
}

/** Placeholder written over a client key that came in privateKey, so it never reaches Keap. */
const PRIVATE_KEY_PLACEHOLDER = 'keap-proxy';

/** Key mode: the key goes in every XML-RPC call's privateKey; OAuth mode: the client key is removed from it. */
export function rewriteXmlRpcKey(ex: Exchange): void {
  if (!ex.xmlrpc || ex.body === undefined) return;
  const key =
    ex.credential?.kind === 'key' ? ex.credential.key : ex.clientKeyInBody ? PRIVATE_KEY_PLACEHOLDER : undefined;
  if (key === undefined) return;
  const body = ex.body.whole();
  ex.body = BufferedBody.of(xmlrpc(() => rewritePrivateKey(body, key)));
}

function xmlrpc<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof XmlRpcError) throw new HttpError(400, 'malformed_xmlrpc', err.message);
    throw err;
  }
}

/** How long this request may wait for Keap's rate limit: the configured deadline, or less if the client asks. */
export function setDeadline(deadlineMs: number): Stage {
  return (ex) => {
    const asked = Number(ex.req.headers[DEADLINE_HEADER]);
    ex.deadline = Date.now() + (asked > 0 && asked < deadlineMs ? asked : deadlineMs);
  };
}

/** Reference data many clients re-read is answered from the cache (saving Keap quota) when the account's rule allows. */
export function serveFromCache(cache: GetCache): Stage {
  return (ex) => {
    // A GET with a body is not the request a cached answer was for.
    if (ex.framing !== 'none') return;
    const account = accountOf(ex);
    // The exchange's account's own rules: an account without any caches nothing.
    if (!account.cacheRules.enabled) return;
    const key = account.cacheRules.keyFor(
      ex.req.method ?? 'GET',
      ex.req.url ?? '/',
      account.cacheNamespace(),
      ex.req.headers,
    );
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

export function pace(metrics: Metrics): Stage {
  const wait = async (ex: Exchange): Promise<void> => {
    const account = accountOf(ex);
    const started = performance.now();
    await account.pacer.acquire(ex.deadline, 'new', clientSignal(ex));
    metrics.queueWait(account.id, account.label(), (performance.now() - started) / 1000);
  };
  // An account whose pacing is off costs no promise.
  return (ex) => (accountOf(ex).pacer.enabled ? wait(ex) : undefined);
}
