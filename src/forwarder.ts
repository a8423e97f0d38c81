// The one place that talks to Keap's API host. http-proxy-3 sends the request; we keep
// the response in hand (selfHandleResponse) so the pipeline can look at a 401 or 429
// before anything reaches the client, and replay the request when that is safe.
// This is the hot path: no per-call options object (http-proxy-3 merges it on every call),
// headers go straight onto the request, and response headers are relayed as raw pairs.
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';
import { keepEmptyQuery } from './exact-target.js';

export type UpstreamFailure = 'unreachable' | 'timeout' | 'client_closed' | 'body_too_large';

export class UpstreamError extends Error {
  constructor(
    readonly failure: UpstreamFailure,
    override readonly cause?: unknown,
  ) {
    super(`upstream ${failure}`);
    this.name = 'UpstreamError';
  }
}

/** Headers that belong to one connection, not to the message. */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

const INSPECTED_LENGTHS = new Set([...HOP_BY_HOP, 'x-request-id'].map((n) => n.length));

/** The shortest CORS response header name, `access-control-max-age`: shorter ones need no look. */
const CORS_MIN_LENGTH = 22;
const CORS_RESPONSE = /^access-control-(?:allow-|expose-headers$|max-age$)/i;

/**
 * Where a request's attempt in flight is kept, on the request itself: http-proxy-3's events
 * hand us the request, and a property read is cheaper than a WeakMap lookup (whose entries
 * also make every garbage collection work harder).
 */
const FLIGHT = Symbol('keap-proxy.flight');
type WithFlight = IncomingMessage & { [FLIGHT]?: InFlight | undefined };

function flightOf(req: IncomingMessage): InFlight | undefined {
  return (req as WithFlight)[FLIGHT];
}

/** One attempt in flight: settles once, with Keap's response head or the reason there is none. */
class InFlight {
  proxyReq: http.ClientRequest | undefined;
  /** Set when the attempt was abandoned before http-proxy-3 handed us its request. */
  abortWith: Error | undefined;
  private settled = false;
  readonly timer: NodeJS.Timeout;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly resolve: (res: IncomingMessage) => void,
    private readonly reject: (err: UpstreamError) => void,
    timeoutMs: number,
  ) {
    this.timer = setTimeout(abandonOnTimeout, timeoutMs, this);
    (req as WithFlight)[FLIGHT] = this;
  }

  onResponse(proxyRes: IncomingMessage): void {
    if (this.settle()) this.resolve(proxyRes);
    else proxyRes.resume();
  }

  onError(err: Error, failure: UpstreamFailure): void {
    if (this.settle()) this.reject(new UpstreamError(this.res.destroyed ? 'client_closed' : failure, err));
  }

  /** An abandoned attempt must not keep an upstream socket busy. */
  abandon(failure: UpstreamFailure, err?: unknown): void {
    const cause = new UpstreamError(failure, err);
    if (this.proxyReq !== undefined) this.proxyReq.destroy();
    else this.abortWith = cause;
    if (this.settle()) this.reject(cause);
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    if (flightOf(this.req) === this) (this.req as WithFlight)[FLIGHT] = undefined;
    return true;
  }
}

function abandonOnTimeout(flight: InFlight): void {
  flight.abandon('timeout');
}

export interface ForwarderOptions {
  target: URL;
  timeoutMs: number;
  /** Upstream connections kept open between requests; http-proxy-3 uses none by default. */
  maxSockets?: number;
  /** Pass Keap's CORS response headers on (RELAY_CORS_HEADERS); dropped by default. */
  relayCorsHeaders?: boolean;
}

export class Forwarder {
  private readonly proxy: ProxyServer;
  private readonly agent: http.Agent;

  constructor(private readonly options: ForwarderOptions) {
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 256, scheduling: 'lifo' as const };
    this.agent = options.target.protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.proxy = createProxyServer({
      // A URL object, not a string: http-proxy-3 would parse a string on every request.
      target: options.target,
      agent: this.agent,
      changeOrigin: true,
      // The request target goes to Keap as the client sent it: http-proxy-3 would otherwise run
      // it through WHATWG URL, which resolves dot-segments and re-encodes quotes and braces, so
      // Keap would answer a different path than the one the pipeline (cache, routing) judged.
      toProxy: true,
      selfHandleResponse: true,
      // Socket inactivity once the response has started; the time to first byte is ours (below).
      proxyTimeout: options.timeoutMs,
    });
    keepEmptyQuery(this.proxy, this.agent);
    this.proxy.on('proxyReq', (proxyReq: http.ClientRequest, req: IncomingMessage) => {
      const flight = flightOf(req);
      if (flight === undefined) return;
      flight.proxyReq = proxyReq;
      if (flight.abortWith !== undefined) proxyReq.destroy(flight.abortWith);
    });
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => {
      const flight = flightOf(req);
      if (flight !== undefined) flight.onResponse(proxyRes);
      else proxyRes.resume();
    });
    // The one error handler: every failure of a live attempt rejects that attempt.
    this.proxy.on('error', (err: Error, req: IncomingMessage) => {
      flightOf(req)?.onError(err, 'unreachable');
    });
    // http-proxy-3 destroys the upstream request when the client goes away and reports it here.
    this.proxy.on('econnreset', (err: Error, req: IncomingMessage) => {
      flightOf(req)?.onError(err, 'client_closed');
    });
  }

  /**
   * Sends one attempt (headers as they are on `req`) and resolves with Keap's response head.
   * `body`: a buffered body to send; `stream`: a stream to send instead (a body that outgrew
   * the buffer); with neither, the client's own stream is sent (once).
   */
  send(req: IncomingMessage, res: ServerResponse, body: Buffer | undefined, stream: Readable | undefined): Promise<IncomingMessage> {
    return new Promise<IncomingMessage>((resolve, reject) => {
      const flight = new InFlight(req, res, resolve, reject, this.options.timeoutMs);
      if (stream !== undefined) {
        stream.once('error', (err) => flight.abandon('body_too_large', err));
        this.proxy.web(req, res, { buffer: stream });
      } else if (body !== undefined) {
        this.proxy.web(req, res, { buffer: Readable.from([body]) });
      } else if (req.readableEnded) {
        // A replay of a bodiless request: the client's stream has ended and would never end ours.
        this.proxy.web(req, res, { buffer: Readable.from([]) });
      } else {
        this.proxy.web(req, res);
      }
    });
  }

  /** Streams Keap's response to the client, minus hop-by-hop headers. */
  relay(proxyRes: IncomingMessage, res: ServerResponse, requestId: string, extraHeaders?: readonly string[]): void {
    const headers = endToEndHeaders(proxyRes.rawHeaders, requestId, this.options.relayCorsHeaders);
    if (extraHeaders !== undefined) headers.push(...extraHeaders);
    res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, headers);
    proxyRes.on('error', () => res.destroy());
    proxyRes.pipe(res);
  }

  /** Sends a response whose body was already read (to look at it) to the client. */
  relayBuffered(proxyRes: IncomingMessage, body: Buffer, res: ServerResponse, requestId: string): void {
    const headers = endToEndHeaders(proxyRes.rawHeaders, requestId, this.options.relayCorsHeaders);
    const pairs: string[] = [];
    for (let i = 0; i < headers.length; i += 2) if ((headers[i] as string).toLowerCase() !== 'content-length') pairs.push(headers[i] as string, headers[i + 1] as string);
    pairs.push('content-length', String(body.length));
    res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, pairs);
    res.end(body);
  }

  close(): void {
    this.agent.destroy();
    this.proxy.close();
  }
}

/**
 * Raw header pairs without hop-by-hop ones (and those a Connection header names), Keap's
 * request id renamed, plus our request id when one is given. Keap's CORS headers go only
 * when `relayCors`: with them a browser would let any web page read Keap's answers through
 * the proxy.
 */
export function endToEndHeaders(raw: string[], requestId?: string, relayCors = false): string[] {
  let out: string[] = [];
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    // Only a name that starts with "a" and is as long as the shortest CORS one needs the pattern.
    if (!relayCors && name.length >= CORS_MIN_LENGTH && (name.charCodeAt(0) | 0x20) === 97 && CORS_RESPONSE.test(name)) continue;
    // Only names as long as a hop-by-hop one or x-request-id need a closer look.
    if (!INSPECTED_LENGTHS.has(name.length)) {
      out.push(name, raw[i + 1] as string);
      continue;
    }
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'connection') listed = parseConnection(raw[i + 1]);
      continue;
    }
    // Keap's own request id is kept for support tickets, under another name: ours is the one clients correlate.
    if (lower === 'x-request-id') {
      if (raw[i + 1] !== requestId) out.push('x-upstream-request-id', raw[i + 1] as string);
      continue;
    }
    out.push(name, raw[i + 1] as string);
  }
  if (listed !== undefined) {
    const kept: string[] = [];
    for (let i = 0; i < out.length; i += 2) if (!listed.has((out[i] as string).toLowerCase())) kept.push(out[i] as string, out[i + 1] as string);
    out = kept;
  }
  if (requestId !== undefined) out.push('x-request-id', requestId);
  return out;
}

/** Header names listed in a Connection header are hop-by-hop too. */
export function parseConnection(value: string | string[] | undefined): Set<string> | undefined {
  // Nearly every message says just keep-alive or close: no list to parse.
  if (value === undefined || value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Close') return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  const names = text.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '' && t !== 'close' && t !== 'keep-alive');
  return names.length > 0 ? new Set(names) : undefined;
}
