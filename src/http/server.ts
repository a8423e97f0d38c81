// Builds the components from a Config and serves them. Every collaborator is made here
// and passed in, so tests build real ones the same way.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { configSummary, DEFAULT_ACCOUNT, isLoopback, type Config } from '../config/config.js';
import { createLogger, logWriterOf, type Logger } from '../observability/log.js';
import type { CredentialSource, Readiness } from '../tokens/credentials.js';
import type { TokenStore } from '../tokens/token-store.js';
import { Forwarder } from '../upstream/forwarder.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { answeredClosing, sendJson } from './http-error.js';
import { OAuthEndpoints } from '../oauth/oauth-endpoints.js';
import { Metrics } from '../observability/metrics.js';
import { GetCache } from '../cache/get-cache.js';
import { BodyBudget } from './body.js';
import type { RateLimitReplayPolicy } from '../upstream/back-off-on-rate-limit.js';
import { AccountRegistry, decodeURIComponentSafe } from '../accounts/registry.js';
import { openAccount } from '../accounts/open-account.js';
import { ClientPacers } from '../accounts/client-pacers.js';
import { accountsReadiness } from './readiness.js';
import { AllowedHosts } from './host-check.js';

export interface ProxyOverrides {
  logger?: Logger;
  store?: TokenStore;
  /** Keap 429 replays (tests shorten the delays; the defaults are in upstream/back-off-on-rate-limit.ts). */
  rateLimitReplays?: RateLimitReplayPolicy;
  /**
   * The clock of the token broker, of XMLRPC_MODE=fallback's down window and of the warnings
   * that are rate-limited (tests cross the refresh floor, token lifetimes and the windows
   * without waiting).
   */
  now?: () => number;
}

export interface RunningProxy {
  readonly url: string;
  readonly server: http.Server;
  /** The default account's credential source (the one the settings configure). */
  readonly credentials: CredentialSource;
  readonly accounts: AccountRegistry;
  readonly logger: Logger;
  /**
   * Serves the accounts of a configuration read again (SIGHUP): added ones from now on,
   * removed or changed ones let go after their requests in flight. Process-wide settings and
   * account ports keep their values until the next start.
   */
  reloadAccounts(next: Config): { added: string[]; removed: string[]; changed: string[] };
  /** Stops serving; requests in flight get up to `graceMs` (default 0) to finish first. */
  close(graceMs?: number): Promise<void>;
  /**
   * The stop a pod needs: /readyz answers 503 at once, and every answer says
   * `connection: close`; new connections are still accepted for `delayMs` (while the
   * endpoints learn that this one is going), then none; requests in flight get up to
   * `graceMs` to finish, and whatever is left is cut (and logged as cut by the proxy).
   */
  shutdown(options: { delayMs: number; graceMs: number }): Promise<ShutdownCounts>;
}

export interface ShutdownCounts {
  /** Requests proxied since the start (local endpoints are not counted). */
  requests: number;
  /** Of those, requests the shutdown cut before they were answered. */
  cut: number;
}

export async function startProxy(config: Config, overrides: ProxyOverrides = {}): Promise<RunningProxy> {
  const logger = overrides.logger ?? createLogger(config.logLevel);
  const metrics = new Metrics({ version: config.version });
  const logWriter = logWriterOf(logger);
  if (logWriter !== undefined) metrics.onLogDrops(() => logWriter.dropped);
  const clientPacers = new ClientPacers(config, logger);
  const accounts = new AccountRegistry(config.accounts, {
    maxActive: config.activeAccountsMax,
    logger,
    open: (spec) =>
      openAccount(spec, {
        config,
        logger,
        metrics,
        store: spec.id === DEFAULT_ACCOUNT ? overrides.store : undefined,
        now: overrides.now,
        pacer: clientPacers.pacerFor(spec),
      }),
  });
  const primary = accounts.primary;
  const oauth = new OAuthEndpoints({ config, accounts, logger });
  metrics.onQueueDepth(() =>
    accounts.all().map((a) => ({
      account: a.id,
      tenant: a.label(),
      depth: a.pacer.depth(),
      pacePerSecond: a.pacer.pacePerSecond(),
    })),
  );
  // One memory for every account's answers; each account's own rules decide what of its GETs goes in.
  const cache = new GetCache({
    maxBytes: config.cacheMaxBytes,
    relayCorsHeaders: config.relayCorsHeaders,
  });
  const forwarder = new Forwarder({
    target: config.keapApiUrl,
    timeoutMs: config.upstreamTimeoutMs,
    relayCorsHeaders: config.relayCorsHeaders,
  });
  const bodyBudget = new BodyBudget(config.bodyBufferBudgetBytes);
  metrics.onBodyBuffer(() => bodyBudget);
  const pipeline = createPipeline({
    config,
    logger,
    accounts,
    forwarder,
    metrics,
    cache,
    bodyBudget,
    rateLimitReplays: overrides.rateLimitReplays,
    now: overrides.now,
  });
  // An account's own host names are addressed on purpose: they are allowed like ALLOWED_HOSTS.
  const hostsOf = (c: Config): string[] => [...c.allowedHosts, ...c.accounts.flatMap((a) => a.hosts)];
  let allowedHosts = new AllowedHosts(hostsOf(config));
  const refuseHost = hostRefusal(logger);

  let stopping = false;
  const readiness = (query: URLSearchParams): Readiness => accountsReadiness(accounts, config, query);
  const probes: Probes = { readiness, stopping: () => stopping, version: config.version };
  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    // A stopping proxy closes each connection after its answer: clients reconnect elsewhere.
    if (stopping) res.shouldKeepAlive = false;
    // Before everything, local endpoints included: a DNS-rebinding page must reach nothing.
    if (!allowedHosts.allows(req.headers.host) && !isProbe(req.url)) {
      refuseHost(req, res);
      return;
    }
    routeAccountOAuth(req, accounts);
    if (serveLocal(req, res, probes, oauth, metrics)) return;
    pipeline.handle(req, res);
  };
  const server = http.createServer(handle);
  // A listener per account that has a port of its own, for legacy apps whose base URL cannot
  // carry a path: the registry knows the account by the port a request came in on.
  const accountServers = accounts.ports().map((port) => ({ port, server: http.createServer(handle) }));
  // The kubelet probes the pod's address, which a loopback listener never sees: this one
  // listens on all interfaces and answers the probes alone (they show no secret).
  const probeServer =
    config.probePort > 0
      ? http.createServer((req, res) => {
          res.shouldKeepAlive = false;
          if (!answerProbe(req, res, probes))
            sendJson(res, 404, { error: 'not_found', message: 'This port answers /healthz and /readyz only.' });
        })
      : undefined;
  for (const listener of [server, ...accountServers.map((a) => a.server)]) {
    listener.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(err, socket, logger));
    // CONNECT would tunnel to any host: refused, never forwarded.
    listener.on('connect', (req: http.IncomingMessage, socket: Duplex) => {
      logger.warn({ event: 'connect_refused', target: String(req.url).slice(0, 100) }, 'CONNECT refused');
      writeRaw(socket, 405, {
        error: 'method_not_allowed',
        message: 'CONNECT is not supported: this proxy forwards only to the configured Keap API.',
      });
    });
  }

  logger.info(
    { event: 'starting', version: config.version, node: process.version, config: configSummary(config) },
    `keap-proxy ${config.version} starting`,
  );
  if (config.inContainer && isLoopback(config.host)) {
    logger.warn(
      { event: 'loopback_in_container', host: config.host, port: config.port },
      `listening on ${config.host} inside a container: clients outside it (docker run -p ${config.port}:${config.port}, another container, a Service) cannot reach the proxy, their connections are reset; to serve them set HOST=0.0.0.0 together with PROXY_CLIENT_KEYS (a sidecar sharing the pod's loopback needs neither)`,
    );
  }
  for (const warning of config.warnings) logger.warn({ event: 'config_warning', warning }, warning);
  if (!isLoopback(config.host) && config.proxyClientKeys.length === 0) {
    logger.warn(
      { event: 'open_listener', host: config.host },
      `listening on ${config.host} without PROXY_CLIENT_KEYS: anyone who can reach this port uses the Keap account; set PROXY_CLIENT_KEYS or HOST=127.0.0.1`,
    );
  }

  await Promise.all(accounts.all().map((a) => a.start()));
  try {
    await listen(server, config.port, config.host);
    for (const a of accountServers) await listen(a.server, a.port, config.host);
    if (probeServer !== undefined) await listen(probeServer, config.probePort, '0.0.0.0');
  } catch (err) {
    // Nothing of a proxy that could not listen may keep running (timers, the queue, sockets).
    server.close();
    for (const a of accountServers) a.server.close();
    probeServer?.close();
    await accounts.stop();
    await clientPacers.stop();
    forwarder.close();
    throw err;
  }
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.info(
    { event: 'listening', url, mode: primary?.credentials.mode ?? 'accounts' },
    `keap-proxy listening on ${url}`,
  );

  return {
    url,
    server,
    get credentials(): CredentialSource {
      if (primary === undefined) throw new Error('no default account: this proxy serves ACCOUNTS_FILE accounts only');
      return primary.credentials;
    },
    accounts,
    logger,
    reloadAccounts(next: Config) {
      clientPacers.configure(next.accounts);
      const changes = accounts.reload(next.accounts);
      allowedHosts = new AllowedHosts(hostsOf(next));
      const ports = new Set(accounts.ports());
      const listening = new Set(accountServers.map((a) => a.port));
      const portsChanged = ports.size !== listening.size || [...ports].some((p) => !listening.has(p));
      logger.info(
        { event: 'accounts_reloaded', ...changes, configured: accounts.ids().length },
        `accounts reloaded: ${changes.added.length} added, ${changes.removed.length} removed, ${changes.changed.length} changed`,
      );
      if (portsChanged)
        logger.warn(
          { event: 'account_ports_unchanged', ports: [...ports], listening: [...listening] },
          'account ports take effect at the next start: the listeners stay as they were',
        );
      return changes;
    },
    close(graceMs = 0) {
      return shutdown({ delayMs: 0, graceMs }).then(() => undefined);
    },
    shutdown,
  };

  async function shutdown({ delayMs, graceMs }: { delayMs: number; graceMs: number }): Promise<ShutdownCounts> {
    stopping = true;
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    // No new connections; requests in flight get up to graceMs to finish (a deploy should
    // not cut a client off mid-answer), then whatever is left is cut.
    const listeners = [server, ...accountServers.map((a) => a.server)];
    const closed = Promise.all(listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve()))));
    for (const l of listeners) l.closeIdleConnections();
    if (graceMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([pipeline.drained(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    pipeline.cutting();
    for (const l of listeners) l.closeAllConnections();
    await closed;
    // Each cut request ends (and is counted) on its response's 'close', a tick after its socket's.
    await pipeline.drained();
    await accounts.stop();
    await clientPacers.stop();
    forwarder.close();
    if (probeServer !== undefined) {
      probeServer.closeAllConnections();
      await new Promise((resolve) => probeServer.close(resolve));
    }
    const { requests, cut } = pipeline.counts();
    return { requests, cut };
  }
}

/**
 * Kubernetes' httpGet probes send `Host: <pod IP>:<port>`, which no setting could list ahead
 * of time. /healthz and /readyz expose no secret, so they answer whatever the Host.
 */
function isProbe(url = ''): boolean {
  const path = url.split('?', 1)[0];
  return path === '/healthz' || path === '/readyz';
}

function hostRefusal(logger: Logger): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  const logged = new Set<string>();
  return (req, res) => {
    const host = String(req.headers.host).slice(0, 100);
    // Once per Host value, and for at most 100 of them: a rebinding page may call in a loop.
    if (logged.size < 100 && !logged.has(host)) {
      logged.add(host);
      const url = req.url ?? '';
      const q = url.indexOf('?');
      // The path without the query: legacy clients put keys there.
      logger.warn(
        { event: 'host_refused', host, path: (q < 0 ? url : url.slice(0, q)).slice(0, 200) },
        `request addressed to ${host} refused (421): add the host name to ALLOWED_HOSTS if clients really use it`,
      );
    }
    sendJson(res, 421, {
      error: 'misdirected_request',
      message: `This proxy serves requests addressed to 127.0.0.1, localhost, [::1] or a host name in ALLOWED_HOSTS; the Host header says "${host}". Call the proxy via http://127.0.0.1:<port> (or localhost), or, if clients reach it by that name, add the name to ALLOWED_HOSTS.`,
    });
  };
}

function listen(server: http.Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

interface Probes {
  readiness(query: URLSearchParams): Readiness;
  stopping(): boolean;
  /** keap-proxy's version: every /readyz answer carries it. */
  version: string;
}

const ACCOUNT_OAUTH = /^\/accounts\/([^/?]+)(\/oauth\/(?:start|callback))(?:\?(.*))?$/;

/**
 * The authorization endpoints are the proxy's own, never Keap's: `/accounts/<id>/oauth/start`
 * is `/oauth/start?account=<id>`, and /oauth/start reached on an account's own port or host
 * name is that account's. Nothing under /oauth/ goes down the pipeline to Keap.
 */
function routeAccountOAuth(req: http.IncomingMessage, accounts: AccountRegistry): void {
  const url = req.url ?? '';
  const prefixed = url.startsWith('/accounts/') ? ACCOUNT_OAUTH.exec(url) : null;
  if (prefixed !== null) {
    // A segment that is not valid percent-encoding is no account's id: answered as unknown.
    const segment = prefixed[1] ?? '';
    const id = decodeURIComponentSafe(segment) ?? segment;
    const query = new URLSearchParams(prefixed[3] ?? '');
    query.set('account', id);
    req.url = `${prefixed[2]}?${query.toString()}`;
    return;
  }
  if (!url.startsWith('/oauth/start')) return;
  const own = accounts.listenerAccount(req);
  if (own === undefined) return;
  const q = url.indexOf('?');
  const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  if (query.has('account')) return;
  query.set('account', own);
  req.url = `${q < 0 ? url : url.slice(0, q)}?${query.toString()}`;
}

/** Endpoints answered here, never forwarded. */
function serveLocal(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  probes: Probes,
  oauth: OAuthEndpoints,
  metrics: Metrics,
): boolean {
  const url = req.url ?? '';
  // Cheap tests first: this runs before every proxied request.
  if (url.startsWith('/oauth/')) return oauth.handle(req, res);
  if (url === '/metrics' && req.method === 'GET') {
    metrics.render().then(
      ({ contentType, body }) => {
        res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' }).end(body);
      },
      () => sendJson(res, 500, { error: 'metrics_failed', message: 'Metrics could not be collected; see the log.' }),
    );
    return true;
  }
  return answerProbe(req, res, probes);
}

/** /healthz (the process serves) and /readyz (it can serve Keap now); false for any other path. */
function answerProbe(req: http.IncomingMessage, res: http.ServerResponse, probes: Probes): boolean {
  const url = req.url ?? '';
  if (!url.startsWith('/healthz') && !url.startsWith('/readyz')) return false;
  const path = url.split('?', 1)[0];
  if (path !== '/healthz' && path !== '/readyz') return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendJson(res, 405, { error: 'method_not_allowed', message: `${path} answers GET only.` }, { allow: 'GET, HEAD' });
    return true;
  }
  if (path === '/healthz') {
    sendJson(res, 200, { status: 'ok' });
    return true;
  }
  const { version } = probes;
  if (probes.stopping()) {
    sendJson(res, 503, {
      error: 'shutting_down',
      message: 'This proxy is shutting down and takes no new work; send requests to another replica.',
      version,
    });
    return true;
  }
  const q = url.indexOf('?');
  const readiness = probes.readiness(new URLSearchParams(q < 0 ? '' : url.slice(q + 1)));
  if (readiness.ready) sendJson(res, 200, { status: 'ready', version, ...readiness.details });
  else
    sendJson(
      res,
      503,
      {
        error: readiness.code ?? 'not_ready',
        message: readiness.message ?? 'not ready',
        version,
        details: readiness.details,
      },
      { 'retry-after': '5' },
    );
  return true;
}

function answerClientError(err: NodeJS.ErrnoException & { reason?: string }, socket: Duplex, logger: Logger): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  // A request on this connection was already answered with "connection: close" (e.g. 501 for
  // its Transfer-Encoding) and the parser has now tripped over its body: that answer stands
  // alone; the connection closes once it is written.
  if (answeredClosing(socket)) {
    (socket as Socket).destroySoon();
    return;
  }
  const answer = clientErrorAnswer(err);
  logger.warn({ event: 'bad_request', code: err.code }, 'malformed request refused');
  writeRaw(socket, answer.status, { error: answer.error, message: answer.message });
}

function clientErrorAnswer(err: NodeJS.ErrnoException & { reason?: string }): {
  status: number;
  error: string;
  message: string;
} {
  if (
    err.code === 'HPE_UNEXPECTED_CONTENT_LENGTH' ||
    (err.code === 'HPE_INVALID_TRANSFER_ENCODING' && /content-length/i.test(err.reason ?? ''))
  ) {
    // Both Content-Length and Transfer-Encoding is the classic request-smuggling shape.
    return {
      status: 400,
      error: 'ambiguous_body_length',
      message: 'The request has both Content-Length and Transfer-Encoding; send only one.',
    };
  }
  if (err.code === 'HPE_INVALID_TRANSFER_ENCODING') {
    return {
      status: 400,
      error: 'unsupported_transfer_encoding',
      message:
        'Only "Transfer-Encoding: chunked" is supported, and chunked must be the last coding; send the body with Content-Length or plain chunked framing.',
    };
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  return {
    status,
    error: 'bad_request',
    message: `The request is not valid HTTP/1.1 (${err.code ?? 'parse error'}); fix the client.`,
  };
}

function writeRaw(socket: Duplex, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  const reason = http.STATUS_CODES[status] ?? 'Error';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
  (socket as Socket).destroySoon?.();
}
