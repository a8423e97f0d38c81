import type { ServerResponse, OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** A request that ends here with a clear answer: an HTTP status and `{ error, message }`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: OutgoingHttpHeaders = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** Set on a connection whose answer says "connection: close": nothing more is written to it. */
const ANSWERED_CLOSING = Symbol('keap-proxy.answered-closing');

export function markAnsweredClosing(socket: Socket | null): void {
  if (socket !== null) (socket as Socket & { [ANSWERED_CLOSING]?: boolean })[ANSWERED_CLOSING] = true;
}

export function answeredClosing(socket: Duplex): boolean {
  return (socket as Duplex & { [ANSWERED_CLOSING]?: boolean })[ANSWERED_CLOSING] === true;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (headers.connection === 'close') markAnsweredClosing(res.socket);
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/** `extraHeaders` go with this answer only (e.g. connection: close for a connection that cannot be reused). */
export function sendError(
  res: ServerResponse,
  err: HttpError,
  requestId?: string,
  extraHeaders?: OutgoingHttpHeaders,
): void {
  const headers = extraHeaders === undefined ? err.headers : { ...extraHeaders, ...err.headers };
  sendJson(
    res,
    err.status,
    { error: err.code, message: err.message },
    requestId === undefined || requestId === '' ? headers : { ...headers, 'x-request-id': requestId },
  );
}
