// Request bodies: small ones are buffered (so a gateway 401 or 429 can be replayed
// byte-identical, and XML-RPC can be rewritten); larger ones stream, still capped.
import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { HttpError } from './http-error.js';

export interface Body {
  /** The whole body, when it fitted the buffer. */
  buffer?: Buffer;
  /** The body as a stream (what was read so far, then the rest), when it did not. */
  stream?: Readable;
}

export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return length !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

export function tooLarge(maxBytes: number): HttpError {
  return new HttpError(413, 'body_too_large', `Request body is larger than ${maxBytes} bytes (MAX_BODY_BYTES); send a smaller body.`, { connection: 'close' });
}

/** Reads up to `bufferLimit` bytes into memory; past that hands back a stream that fails past `maxBytes`. */
export async function readBody(req: IncomingMessage, bufferLimit: number, maxBytes: number): Promise<Body> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  const it = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  for (;;) {
    const next = await it.next();
    if (next.done === true) return { buffer: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size) };
    size += next.value.length;
    if (size > maxBytes) throw tooLarge(maxBytes);
    chunks.push(next.value);
    if (size > bufferLimit) return { stream: Readable.from(rest(chunks, it, size, maxBytes), { objectMode: false }) };
  }
}

async function* rest(head: Buffer[], it: AsyncIterator<Buffer>, sizeSoFar: number, maxBytes: number): AsyncGenerator<Buffer> {
  yield* head;
  let size = sizeSoFar;
  for (;;) {
    const next = await it.next();
    if (next.done === true) return;
    size += next.value.length;
    if (size > maxBytes) throw Object.assign(new Error('request body over MAX_BODY_BYTES'), { code: 'BODY_TOO_LARGE' });
    yield next.value;
  }
}
