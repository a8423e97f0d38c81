import { pino, type Logger, type DestinationStream } from 'pino';
import { LogWriter } from './log-writer.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type { Logger };

/**
 * Secrets never enter log objects by design (nothing logs a header map, a token
 * response or the config). Redaction is the second guard, for the day someone does.
 */
// Exact paths only: wildcard paths make pino copy and scan every log object, which costs
// more than the whole per-request log line otherwise does.
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'headers["x-keap-api-key"]',
  'access_token',
  'refresh_token',
  'client_secret',
  'accessToken',
  'refreshToken',
  'clientSecret',
  'apiKey',
  'privateKey',
  'grant.accessToken',
  'grant.refreshToken',
];

/** Where log lines go: stdout by default, or a file; batched (see LogWriter). */
export function createLogDestination(dest: number | string = 1): LogWriter {
  // 32 KiB: each write is a thread-pool round trip (tens of µs), so fewer, larger ones cost less per line.
  return new LogWriter({ dest, minLength: 32 * 1024, flushIntervalMs: 250 });
}

/**
 * Each logger's destination, as createLogger was given it. pino keeps it under a symbol of
 * its own (pino.symbols.streamSym), which is its private state; so this module remembers it.
 */
const destinations = new WeakMap<Logger, DestinationStream>();

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const stream = destination ?? createLogDestination();
  const logger = pino(
    {
      level,
      base: { name: 'keap-proxy' },
      // pino's default epoch-ms "time": an ISO string costs a Date round trip on every line.
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
  destinations.set(logger, stream);
  return logger;
}

/** Where a logger made by createLogger writes its lines. */
function streamOf(logger: Logger): DestinationStream {
  const stream = destinations.get(logger);
  if (stream === undefined) throw new Error('the logger was not made by createLogger (a child logger?)');
  return stream;
}

/** The batching writer behind a logger, when it has one (not in tests that capture lines). */
export function logWriterOf(logger: Logger): LogWriter | undefined {
  const stream = destinations.get(logger);
  return stream instanceof LogWriter ? stream : undefined;
}

/** What the per-request line says; fields left undefined are left out, as pino does. */
export interface RequestRecord {
  /** When the request ended (epoch ms): the line's `time`. */
  time: number;
  reqId: string;
  /** The account's id, for every account but the default one (whose lines stay as they were with one account). */
  account?: string | undefined;
  method: string;
  /** Without the query string: legacy clients put keys there. */
  path: string;
  status: number | undefined;
  upstreamStatus: number | undefined;
  attempts: number;
  durationMs: number;
  outcome: string | undefined;
  /** Why Keap could not be reached: an error code (ECONNREFUSED, ENOTFOUND, CERT_HAS_EXPIRED, …) or `timeout`. */
  cause?: string | undefined;
  cache: string | undefined;
  /** An XML-RPC call's methodName (the migration inventory reads it). */
  xmlrpcMethod?: string | undefined;
  /** Where the proxy may translate XML-RPC: whether Keap's XML-RPC (`keap`) or the translation answered. */
  xmlrpcServedBy?: string | undefined;
  /** The REST calls a translated XML-RPC call made, with their statuses. */
  rest?: string | undefined;
}

/**
 * The line every request writes, at `info`. It is built from a fixed template rather than
 * by pino's generic serializer (which walks the object and costs about 5x as much: a few
 * percent of the proxy's throughput), and goes to the logger's own stream, so it lands in
 * order with every other line and has their shape: level, time, the logger's bindings,
 * the fields, msg. Through a LogWriter it is formatted when its batch is written. No field
 * can hold a secret, so redaction has nothing to do here.
 */
export class RequestLog {
  private readonly stream: DestinationStream;
  private readonly writer: LogWriter | undefined;
  private readonly format: (r: RequestRecord) => string;

  constructor(private readonly logger: Logger) {
    this.stream = streamOf(logger);
    this.writer = logWriterOf(logger);
    // e.g. `,"name":"keap-proxy"`: the logger's bindings (its base), as pino writes them after "time".
    const bindings = Object.entries(logger.bindings())
      .map(([key, value]) => `,${JSON.stringify(key)}:${JSON.stringify(value)}`)
      .join('');
    this.format = (r) => formatRequestLine(r, bindings);
  }

  write(r: RequestRecord): void {
    if (!this.logger.isLevelEnabled('info')) return;
    if (this.writer !== undefined) this.writer.writeDeferred(this.format, r);
    else this.stream.write(this.format(r));
  }
}

function formatRequestLine(r: RequestRecord, bindings: string): string {
  // Each text once, escaped for JSON (nearly always as it is), used in its field and in the
  // message, e.g. `GET /crm/rest/v1/contacts 200 12ms` or `POST /crm/xmlrpc/v1 ContactService.load
  // 200 9ms`: the parts go into the line's one template, no message string of its own. The path
  // is without its query (legacy clients put tokens there).
  const method = inner(r.method);
  const path = inner(r.path);
  const xmlrpcMethod = r.xmlrpcMethod === undefined ? undefined : inner(r.xmlrpcMethod);
  const outcome = r.outcome === undefined ? undefined : inner(r.outcome);
  return (
    // Where a child logger's `account` binding goes, so the line reads as the account's other lines do.
    `{"level":"info","time":${r.time}${bindings}${r.account === undefined ? '' : `,"account":${str(r.account)}`},"event":"request","reqId":${str(r.reqId)},"method":"${method}","path":"${path}"` +
    (r.status === undefined ? '' : `,"status":${r.status}`) +
    (r.upstreamStatus === undefined ? '' : `,"upstreamStatus":${r.upstreamStatus}`) +
    `,"attempts":${r.attempts},"durationMs":${r.durationMs}` +
    (outcome === undefined ? '' : `,"outcome":"${outcome}"`) +
    (r.cause === undefined ? '' : `,"cause":${str(r.cause)}`) +
    (r.cache === undefined ? '' : `,"cache":${str(r.cache)}`) +
    (xmlrpcMethod === undefined ? '' : `,"xmlrpcMethod":"${xmlrpcMethod}"`) +
    (r.xmlrpcServedBy === undefined ? '' : `,"xmlrpcServedBy":${str(r.xmlrpcServedBy)}`) +
    (r.rest === undefined ? '' : `,"rest":${str(r.rest)}`) +
    // Without a status (the client went away first), the outcome says what became of it.
    `,"msg":"${method} ${path}${xmlrpcMethod === undefined ? '' : ` ${xmlrpcMethod}`} ${r.status ?? outcome ?? '-'} ${Math.round(r.durationMs)}ms"}\n`
  );
}

/** Printable ASCII without a quote or a backslash needs no escaping; anything else goes through JSON.stringify. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

function str(s: string): string {
  return PLAIN.test(s) ? `"${s}"` : JSON.stringify(s);
}

/** `s` escaped for use between a JSON string's quotes: itself when it is plain. */
function inner(s: string): string {
  return PLAIN.test(s) ? s : JSON.stringify(s).slice(1, -1);
}
