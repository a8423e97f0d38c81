// The one place that talks to Keap's API host. http-proxy-3 sends the request; we keep
// the response in hand (selfHandleResponse) so the pipeline can look at a 401 or 429
// before anything reaches the client, and replay the request when that is safe.
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse, OutgoingHttpHeaders } from 'node:http';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';

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

export interface Attempt {
  /** Headers set on top of the (already cleaned) client headers. */
  headers: OutgoingHttpHeaders;
  /** A buffered body to send; undefined sends the client's stream (once). */
  body: Buffer | undefined;
  /** A stream to send instead of the request itself (a body that outgrew the buffer). */
  stream?: Readable | undefined;
}

/** Response headers that belong to one connection, not to the message. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

interface InFlight {
  onResponse: (res: IncomingMessage) => void;
  proxyReq?: http.ClientRequest;
  /** Set when the attempt was abandoned before http-proxy-3 handed us its request. */
  abortWith?: Error;
}

export interface ForwarderOptions {
  target: URL;
  timeoutMs: number;
  /** Upstream connections kept open between requests; http-proxy-3 uses none by default. */
  maxSockets?: number;
}

export class Forwarder {
  private readonly proxy: ProxyServer;
  private readonly agent: http.Agent;
  private readonly inFlight = new WeakMap<IncomingMessage, InFlight>();

  constructor(private readonly options: ForwarderOptions) {
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 256, scheduling: 'lifo' as const };
    this.agent = options.target.protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.proxy = createProxyServer({
      target: options.target.href,
      agent: this.agent,
      changeOrigin: true,
      xfwd: true,
      selfHandleResponse: true,
      // Socket inactivity after the response started; the time to first byte is ours (below).
      proxyTimeout: options.timeoutMs,
    });
    this.proxy.on('proxyReq', (proxyReq: http.ClientRequest, req: IncomingMessage) => {
      const flight = this.inFlight.get(req);
      if (flight === undefined) return;
      flight.proxyReq = proxyReq;
      if (flight.abortWith !== undefined) proxyReq.destroy(flight.abortWith);
    });
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => {
      const flight = this.inFlight.get(req);
      if (flight !== undefined) flight.onResponse(proxyRes);
      else proxyRes.resume();
    });
    // Every call passes its own callback; this catches anything else instead of crashing.
    this.proxy.on('error', () => {});
  }

  /** Sends one attempt and resolves with Keap's response head; the body is not read yet. */
  send(req: IncomingMessage, res: ServerResponse, attempt: Attempt): Promise<IncomingMessage> {
    return new Promise<IncomingMessage>((resolve, reject) => {
      let settled = false;
      const flight: InFlight = {
        onResponse: (proxyRes) => {
          if (settled) proxyRes.resume();
          else settle(() => resolve(proxyRes));
        },
      };
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        res.off('close', onClientClose);
        if (this.inFlight.get(req) === flight) this.inFlight.delete(req);
        fn();
      };
      // An abandoned attempt must not keep an upstream socket busy.
      const abandon = (failure: UpstreamFailure, err?: unknown): void => {
        const cause = new UpstreamError(failure, err);
        if (flight.proxyReq !== undefined) flight.proxyReq.destroy();
        else flight.abortWith = cause;
        settle(() => reject(cause));
      };
      const onClientClose = (): void => abandon('client_closed');
      const timer = setTimeout(() => abandon('timeout'), this.options.timeoutMs);
      res.once('close', onClientClose);
      this.inFlight.set(req, flight);
      attempt.stream?.once('error', (err) => abandon('body_too_large', err));
      const buffer = attempt.stream ?? (attempt.body !== undefined ? Readable.from([attempt.body]) : undefined);
      this.proxy.web(req, res, { headers: attempt.headers as Record<string, string>, buffer }, (err) => {
        settle(() => reject(new UpstreamError('unreachable', err)));
      });
    });
  }

  /** Streams Keap's response to the client, minus hop-by-hop headers. */
  relay(proxyRes: IncomingMessage, res: ServerResponse, extraHeaders: OutgoingHttpHeaders): void {
    const headers: OutgoingHttpHeaders = {};
    const connectionTokens = parseConnection(proxyRes.headers.connection);
    for (const [name, value] of Object.entries(proxyRes.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || connectionTokens?.has(name)) continue;
      headers[name] = value;
    }
    Object.assign(headers, extraHeaders);
    res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, headers);
    proxyRes.on('error', () => res.destroy());
    proxyRes.pipe(res);
  }

  close(): void {
    this.agent.destroy();
    this.proxy.close();
  }
}

/** Header names listed in a Connection header are hop-by-hop too. */
export function parseConnection(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  const names = text.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '' && t !== 'close' && t !== 'keep-alive');
  return names.length > 0 ? new Set(names) : undefined;
}
