// The exchange: one client request on its way through the pipeline and the response
// handlers, and the few things any stage or handler may do with it. Stages (stages.ts) and
// the response side (upstream/) both depend on this module, and it on neither.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Account } from '../accounts/account.js';
import type { Logger } from '../observability/log.js';
import type { Credential } from '../tokens/credentials.js';
import type { BufferedBody, Framing } from '../http/body.js';

/** One client request on its way through the pipeline. */
export interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly startedAt: number;
  id: string;
  /** The Keap account this request is for, set by the resolveAccount stage. */
  account: Account | undefined;
  /** XML-RPC calls have their body rewritten; REST calls pass through. */
  xmlrpc: boolean;
  /** An XML-RPC call's methodName, once its body is read. */
  xmlrpcMethod: string | undefined;
  /**
   * An XML-RPC call's body as the client sent it, before rewriteXmlRpcKey spliced the key in:
   * what a translation reads (kept only where calls may be translated; see clientXmlRpcCall).
   */
  clientCall: Buffer | undefined;
  /** Who answered an XML-RPC call where the proxy may translate: Keap's XML-RPC, or the translation. */
  xmlrpcServedBy: 'keap' | 'translation' | undefined;
  /** The REST calls a translated XML-RPC call made, `METHOD /path status` each, for its log line. */
  restCalls: string[] | undefined;
  /** The code of the error the proxy answered with, if it did (for the XML-RPC inventory). */
  errorCode: string | undefined;
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
  /** New tokens this request asked for after Keap's 401s. */
  refreshes: number;
  /** Keap 429s this request met. */
  rateLimited: number;
  /** When the client stops waiting for the rate limit (epoch ms). */
  deadline: number;
  upstreamStatus: number | undefined;
  /** Why the request ended without Keap's answer, for the log line. */
  outcome: string | undefined;
  /** Why Keap could not be reached (an error code such as ECONNREFUSED, or `timeout`), for the log line. */
  cause: string | undefined;
  /** Set when a 200 answer to this GET may be cached. */
  cacheKey: { key: string; ttlMs: number } | undefined;
  /** 'HIT' when served from the cache. */
  cache: 'HIT' | 'MISS' | undefined;
}

/** A stage returns nothing (go on), 'done' (it answered the client), or a promise of either; it throws HttpError to answer with an error. */
export type Stage = (ex: Exchange) => StageResult | Promise<StageResult>;
export type StageResult = void | 'done';

/** The exchange's account; only the stages before resolveAccount run without one. */
export function accountOf(ex: Exchange): Account {
  const account = ex.account;
  if (account === undefined) throw new Error('no account resolved for this request');
  return account;
}

/** The logger for what happens to this request: its account's (which names the account), else `fallback`. */
export function loggerOf(ex: Exchange, fallback: Logger): Logger {
  return ex.account?.parts.logger ?? fallback;
}

export function injectCredential(ex: Exchange): void {
  const credential = ex.credential;
  if (credential === undefined) return;
  if (credential.kind === 'bearer') ex.req.headers.authorization = `Bearer ${credential.token}`;
  else ex.req.headers['x-keap-api-key'] = credential.key;
}

/**
 * The client's body was read in part, not to its end (an answer came first): its connection
 * cannot carry another request. A body not read at all is Node's to drop (it reads and
 * discards it once the answer is written), and the connection stays usable.
 */
export function bodyUnread(ex: Exchange): boolean {
  return ex.bodyStarted && !ex.req.complete;
}

/**
 * The XML-RPC call as the client sent it: never the body with Keap's key spliced into its
 * privateKey, so nothing a translation reads, answers or logs can carry the key.
 */
export function clientXmlRpcCall(ex: Exchange): Buffer | undefined {
  return ex.clientCall ?? ex.body?.whole();
}

/** Aborted when the client goes away: a queued request whose client is gone is never sent. */
export function clientSignal(ex: Exchange): AbortSignal {
  ex.abort ??= new AbortController();
  if (ex.clientGone) ex.abort.abort();
  return ex.abort.signal;
}
