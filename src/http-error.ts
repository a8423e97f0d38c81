import type { ServerResponse, OutgoingHttpHeaders } from 'node:http';

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

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

export function sendError(res: ServerResponse, err: HttpError, requestId?: string): void {
  sendJson(res, err.status, { error: err.code, message: err.message }, requestId === undefined || requestId === '' ? err.headers : { ...err.headers, 'x-request-id': requestId });
}
