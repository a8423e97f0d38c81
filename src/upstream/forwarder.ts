// The one place that talks to Keap's API host. http-proxy-3 sends the request; we keep
// the response in hand (selfHandleResponse) so the pipeline can look at a 401 or 429
// before anything reaches the client, and replay the request when that is safe.
// This is the hot path: no per-call options object (http-proxy-3 merges it on every call),
// headers go straight onto the request, and response headers are relayed as raw pairs.
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';
import { BODY_TOO_LARGE, type BufferedBody } from '../http/body.js';
import { endsInEmptyQuery, sendKeepingEmptyQuery } from './exact-target.js';

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
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

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

/**
 * One attempt: settles once, with Keap's response head or the reason there is none. It stays
 * on the request after settling, until the next attempt or the end of the exchange, so that
 * a client that goes away mid-answer, or an exchange that ends unclean, frees its socket.
 */
class InFlight {
  proxyReq: http.ClientRequest | undefined;
  /** Set when the attempt was abandoned before http-proxy-3 handed us its request. */
  abortWith: Error | undefined;
  private settled = false;
  readonly timer: NodeJS.Timeout;

  constructor(
    private readonly res: ServerResponse,
    private readonly resolve: (res: IncomingMessage) => void,
    private readonly reject: (err: UpstreamError) => void,
    timeoutMs: number,
  ) {
    this.timer = setTimeout(abandonOnTimeout, timeoutMs, this);
  }

  onResponse(proxyRes: IncomingMessage): void {
    if (!this.settle()) {
      proxyRes.resume();
      return;
    }
    const proxyReq = this.proxyReq;
    // Keap answered before the whole body was sent (an early 4xx, a gateway refusing a big
    // body): the connection is mid-request and can never carry another one. It is destroyed
    // once the answer has been read, never handed back to the pool.
    if (proxyReq !== undefined && !proxyReq.writableFinished) {
      proxyRes.once('end', () => {
        if (!proxyReq.writableFinished) proxyReq.destroy();
      });
    }
    this.resolve(proxyRes);
  }

  /** The upstream socket closed; unless the attempt has settled (the common case: nothing to do, nothing allocated), it failed. */
  onClosed(): void {
    if (!this.settled)
      this.onError(
        Object.assign(new Error('upstream closed the connection without an answer'), { code: 'closed_without_answer' }),
        'unreachable',
      );
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

  /** The exchange is over: a request or response still on the wire is cut, so its socket cannot be reused half-done. */
  finish(): void {
    const proxyReq = this.proxyReq;
    if (proxyReq === undefined) {
      this.abandon('client_closed');
      return;
    }
    // Node sets `res` on the request once Keap's answer starts (null before).
    const proxyRes = (proxyReq as http.ClientRequest & { res?: IncomingMessage | null }).res;
    if (!proxyReq.writableFinished || proxyRes == null || !proxyRes.complete) proxyReq.destroy();
    if (this.settle()) this.reject(new UpstreamError('client_closed'));
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    return true;
  }
}

/**
 * Some ends raise no error: to a 101 answering a plain request Node just drops the socket,
 * and the attempt would wait for UPSTREAM_TIMEOUT_MS. So a closing upstream socket fails the
 * attempt on it (a no-op once answered). One listener per socket, which keep-alive reuses for
 * many requests, and the attempt found on it: a listener per request cost measurably more.
 */
function watchSocket(socket: Socket, flight: InFlight): void {
  const watched = socket as WatchedSocket;
  if (watched[FLIGHT] === undefined) socket.on('close', onUpstreamSocketClosed);
  watched[FLIGHT] = flight;
}

type WatchedSocket = Socket & { [FLIGHT]?: InFlight | undefined };

function onUpstreamSocketClosed(this: WatchedSocket): void {
  this[FLIGHT]?.onClosed();
}

function abandonOnTimeout(flight: InFlight): void {
  flight.abandon('timeout');
}

/** Methods whose bodiless requests still say so (some servers answer 411 to a POST without a length). */
const BODY_EXPECTED = new Set(['POST', 'PUT', 'PATCH']);

/**
 * The framing of what goes to Keap, decided here and only here, from what is actually sent:
 * Content-Length for a buffered body, chunked for a streamed one, nothing for none. No
 * header a client sent (or named in Connection) has a say.
 */
function frame(req: IncomingMessage, body: BufferedBody | undefined, stream: Readable | undefined): void {
  const headers = req.headers;
  // copyEndToEndHeaders never copies the client's framing headers, so the deletes below only
  // run if an earlier stage set one by mistake (a delete makes the header object slow).
  if (stream !== undefined) {
    headers['transfer-encoding'] = 'chunked';
    if (headers['content-length'] !== undefined) delete headers['content-length'];
  } else {
    if (body !== undefined) headers['content-length'] = String(body.length);
    else if (BODY_EXPECTED.has(req.method ?? '')) headers['content-length'] = '0';
    else if (headers['content-length'] !== undefined) delete headers['content-length'];
    if (headers['transfer-encoding'] !== undefined) delete headers['transfer-encoding'];
  }
}

/**
 * What http-proxy-3 pipes to the upstream request for a body we hold (or for none): it only
 * ever calls `.pipe(proxyReq)` on its `buffer` option. Writing the held chunks directly costs
 * no Readable per attempt, and the same chunks go out on every replay (a bodiless replay
 * sends NO_BODY). The upstream request keeps references, not copies.
 */
class HeldBody {
  constructor(private readonly parts: readonly Buffer[]) {}

  pipe<T extends NodeJS.WritableStream>(dest: T): T {
    for (const part of this.parts) dest.write(part);
    dest.end();
    return dest;
  }
}

const NO_BODY = new HeldBody([]);

export interface ForwarderOptions {
  target: URL;
  timeoutMs: number;
  /** Upstream connections kept open between requests; http-proxy-3 uses none by default. */
  maxSockets?: number;
  /** Pass Keap's CORS response headers on (RELAY_CORS_HEADERS); dropped by default. */
  relayCorsHeaders?: boolean;
}

/** Why a relay could not be made: the client gets 502 instead. */
export class UnusableResponse extends Error {
  constructor(readonly reason: string) {
    super(`unusable upstream response: ${reason}`);
    this.name = 'UnusableResponse';
  }
}

export class Forwarder {
  private readonly proxy: ProxyServer;
  /** Keap's connections, shared with the calls the proxy makes itself (XML-RPC translation). */
  readonly agent: http.Agent;

  constructor(readonly options: ForwarderOptions) {
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
    withoutDeleteLength(this.proxy);
    this.proxy.on(
      'proxyReq',
      (proxyReq: http.ClientRequest, req: IncomingMessage, _res: unknown, _options: unknown, socket: Socket) => {
        const flight = flightOf(req);
        if (flight === undefined) return;
        flight.proxyReq = proxyReq;
        if (flight.abortWith !== undefined) proxyReq.destroy(flight.abortWith);
        watchSocket(socket, flight);
      },
    );
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
   * Sends one attempt (headers as they are on `req`, framing set here) and resolves with
   * Keap's response head. `body`: a buffered body; `stream`: a body that outgrew the buffer
   * (sent once); neither: no body. The client's own stream is piped only when the parser
   * framed the request with no body: only bytes it framed as this request's body, which we
   * hold, can reach Keap.
   */
  send(
    req: IncomingMessage,
    res: ServerResponse,
    body: BufferedBody | undefined,
    stream: Readable | undefined,
  ): Promise<IncomingMessage> {
    frame(req, body, stream);
    return new Promise<IncomingMessage>((resolve, reject) => {
      const replay = flightOf(req) !== undefined;
      const flight = new InFlight(res, resolve, reject, this.options.timeoutMs);
      (req as WithFlight)[FLIGHT] = flight;
      let source: Readable | HeldBody | undefined;
      if (stream !== undefined) {
        source = stream;
        stream.once('error', (err: NodeJS.ErrnoException) =>
          flight.abandon(err.code === BODY_TOO_LARGE ? 'body_too_large' : 'client_closed', err),
        );
      } else if (body !== undefined) {
        source = new HeldBody(body.parts());
      } else if (req.readableEnded) {
        // A replay of a bodiless request: the client's stream has ended and would never end ours.
        source = NO_BODY;
      } else {
        // The hot path: a bodiless request's first attempt pipes its own stream, which the
        // parser framed with no body, so nothing but its end can come of it. Passing no options
        // also spares http-proxy-3 a merge of per-call options (measured: its setupOutgoing and
        // stream passes took twice the time with one).
        source = undefined;
      }
      if (endsInEmptyQuery(req.url)) sendKeepingEmptyQuery(this.agent, () => web(this.proxy, req, res, source, replay));
      else web(this.proxy, req, res, source, replay);
    });
  }

  /** The exchange is over (answered, or the client went away): whatever is still on the wire for it is cut. */
  finish(req: IncomingMessage): void {
    // The flight stays on the request: an attempt whose upstream request is not yet made is cut when it is.
    flightOf(req)?.finish();
  }

  /** Streams Keap's response to the client, minus hop-by-hop headers; throws UnusableResponse before anything is written. */
  relay(proxyRes: IncomingMessage, res: ServerResponse, requestId: string, extraHeaders?: readonly string[]): void {
    const headers = endToEndHeaders(proxyRes.rawHeaders, requestId, this.options.relayCorsHeaders);
    if (extraHeaders !== undefined) headers.push(...extraHeaders);
    writeHead(res, proxyRes.statusCode, headers);
    proxyRes.on('error', () => res.destroy());
    proxyRes.pipe(res);
  }

  /** Sends a response whose body was already read (to look at it) to the client. */
  relayBuffered(
    proxyRes: IncomingMessage,
    body: Buffer,
    res: ServerResponse,
    requestId: string,
    extraHeaders?: readonly string[],
  ): void {
    const headers = endToEndHeaders(proxyRes.rawHeaders, requestId, this.options.relayCorsHeaders);
    const pairs: string[] = [];
    for (let i = 0; i < headers.length; i += 2)
      if ((headers[i] as string).toLowerCase() !== 'content-length')
        pairs.push(headers[i] as string, headers[i + 1] as string);
    pairs.push('content-length', String(body.length));
    if (extraHeaders !== undefined) pairs.push(...extraHeaders);
    writeHead(res, proxyRes.statusCode, pairs);
    res.end(body);
  }

  close(): void {
    this.agent.destroy();
    this.proxy.close();
  }
}

/**
 * Keap's status with our headers. The reason phrase is not relayed: Node writes the standard
 * one, and an upstream's own (`200 O\x7fK`) could make writeHead throw. A header value
 * Node will not write makes the whole response unusable: the client gets 502, and no header
 * is silently dropped. Nothing has been written when this throws.
 */
function writeHead(res: ServerResponse, status: number | undefined, headers: string[]): void {
  if (status === undefined || status < 200 || status > 999) throw new UnusableResponse(`status ${String(status)}`);
  try {
    res.writeHead(status, headers);
  } catch (err) {
    throw new UnusableResponse((err as NodeJS.ErrnoException).code ?? 'invalid header');
  }
}

/**
 * http-proxy-3's deleteLength pass turns a DELETE or OPTIONS without Content-Length into
 * `content-length: 0`, even when the body is streamed with chunked framing: the body would
 * then reach Keap as a second request. Framing is ours (frame() above), so the pass goes.
 */
function withoutDeleteLength(proxy: ProxyServer): void {
  const inner = proxy as unknown as { webPasses: Array<(...args: unknown[]) => unknown> };
  const kept = inner.webPasses.filter((pass) => pass.name !== 'deleteLength');
  // An upgrade of http-proxy-3 that renames or reshapes its passes must fail loudly, not smuggle.
  if (kept.length !== inner.webPasses.length - 1)
    throw new Error(
      'http-proxy-3: the deleteLength pass was not found; check the framing code in src/upstream/forwarder.ts against this version',
    );
  inner.webPasses = kept;
}

/**
 * http-proxy-3 adds a 'close' listener to the response and an 'error' listener to the
 * request on every call, so every replay would add two more (MaxListenersExceededWarning
 * after ten). A replay's are taken off at once: ours are attached once per exchange (the
 * pipeline's close handler calls finish()), and a replay never pipes the client's stream.
 * The first attempt's stay, as they are harmless, and finding them costs on every request.
 */
function web(
  proxy: ProxyServer,
  req: IncomingMessage,
  res: ServerResponse,
  source: Readable | HeldBody | undefined,
  replay: boolean,
): void {
  if (!replay) {
    if (source === undefined) proxy.web(req, res);
    else proxy.web(req, res, { buffer: source as Readable });
    return;
  }
  const resListeners = res.listenerCount('close');
  const reqListeners = req.listenerCount('error');
  proxy.web(req, res, { buffer: source as Readable });
  removeAddedListeners(res, 'close', resListeners);
  removeAddedListeners(req, 'error', reqListeners);
}

function removeAddedListeners(emitter: NodeJS.EventEmitter, event: string, before: number): void {
  const listeners = emitter.listeners(event);
  for (let i = before; i < listeners.length; i++)
    emitter.removeListener(event, listeners[i] as (...args: unknown[]) => void);
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
    if (!relayCors && name.length >= CORS_MIN_LENGTH && (name.charCodeAt(0) | 0x20) === 97 && CORS_RESPONSE.test(name))
      continue;
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
    for (let i = 0; i < out.length; i += 2)
      if (!listed.has((out[i] as string).toLowerCase())) kept.push(out[i] as string, out[i + 1] as string);
    out = kept;
  }
  if (requestId !== undefined) out.push('x-request-id', requestId);
  return out;
}

/** Header names listed in a Connection header are hop-by-hop too. */
export function parseConnection(value: string | string[] | undefined): Set<string> | undefined {
  // Nearly every message says just keep-alive or close: no list to parse.
  if (value === undefined || value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Close')
    return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  const names = text
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '' && t !== 'close' && t !== 'keep-alive');
  return names.length > 0 ? new Set(names) : undefined;
}
