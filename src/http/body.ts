// Request bodies: small ones are buffered (so a gateway 401 or 429 can be replayed
// byte-identical, and XML-RPC can be rewritten); larger ones stream, still capped.
//
// A buffered body is held once: the chunks as the parser delivered them, never joined into
// a second copy (XML-RPC alone needs one contiguous buffer, and its bodies are small). The
// sum of buffered bodies has a budget: past it a request is refused at once, so a burst of
// uploads cannot take the process past its memory limit.
import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { HttpError } from './http-error.js';

/** How the client framed its body, read once from the parsed request (never from headers a Connection header can name). */
export type Framing = 'none' | 'length' | 'chunked';

export interface RequestFraming {
  framing: Framing;
  /** The declared Content-Length ('length' framing only). */
  length: number | undefined;
}

/**
 * Node's parser has already framed the request by the time we see it: it refuses both
 * Content-Length and Transfer-Encoding together, and a Transfer-Encoding that does not end
 * in chunked. A coding before chunked (`gzip, chunked`) is parsed but not undone, and
 * forwarding those bytes under plain chunked framing would change what they mean: refused.
 */
export function framingOf(req: IncomingMessage): RequestFraming {
  const te = req.headers['transfer-encoding'];
  if (te !== undefined) {
    if (te.trim().toLowerCase() !== 'chunked') {
      throw new HttpError(
        501,
        'unsupported_transfer_encoding',
        'Only "Transfer-Encoding: chunked" is supported; send the body with Content-Length or plain chunked framing.',
        { connection: 'close' },
      );
    }
    return CHUNKED;
  }
  // The parser has checked it is a number (and refused differing duplicates).
  const length = req.headers['content-length'];
  return length === undefined || length === '0' ? NONE : { framing: 'length', length: Number(length) };
}

const NONE: RequestFraming = { framing: 'none', length: undefined };
const CHUNKED: RequestFraming = { framing: 'chunked', length: undefined };

export function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    'body_too_large',
    `Request body is larger than ${maxBytes} bytes (MAX_BODY_BYTES); send a smaller body.`,
    { connection: 'close' },
  );
}

/**
 * The memory all buffered request bodies may hold at once (BODY_BUFFER_BUDGET_BYTES). A
 * reservation is taken as bytes arrive and given back when the exchange ends.
 */
export class BodyBudget {
  private used = 0;

  constructor(readonly limit: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Takes `bytes` if they fit; false when they do not (nothing is taken then). */
  take(bytes: number): boolean {
    if (this.used + bytes > this.limit) return false;
    this.used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
  }

  exhausted(): HttpError {
    return new HttpError(
      503,
      'body_budget_exhausted',
      `The proxy is holding as many request bodies in memory as it may (BODY_BUFFER_BUDGET_BYTES ${this.limit}). Retry after the indicated time.`,
      // No "connection: close": refused before a byte of the body is read, the rest of it is
      // read and dropped by Node (nothing is held), and the client, still sending, reads this
      // answer instead of a reset. pipeline.ts closes a connection whose body was half read.
      { 'retry-after': '2' },
    );
  }
}

/** A body read whole: the parser's chunks, held once. */
export class BufferedBody {
  constructor(
    private chunks: Buffer[],
    readonly length: number,
  ) {}

  /** The chunks to send, in order; the same on every replay. */
  parts(): readonly Buffer[] {
    return this.chunks;
  }

  /** One contiguous buffer (XML-RPC parsing); the chunks are replaced by it, so the body is still held once. */
  whole(): Buffer {
    if (this.chunks.length !== 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
    return this.chunks[0] as Buffer;
  }

  static of(buffer: Buffer): BufferedBody {
    return new BufferedBody([buffer], buffer.length);
  }
}

export interface Body {
  /** The whole body, when it fitted the buffer. */
  buffered?: BufferedBody;
  /** The body as a stream (what was read so far, then the rest), when it did not. */
  stream?: Readable;
  /** Bytes of the budget this body holds until the exchange ends. */
  reserved: number;
}

/** Thrown by a streamed body that outgrows MAX_BODY_BYTES (as against a client that went away). */
export const BODY_TOO_LARGE = 'BODY_TOO_LARGE';

/**
 * Reads up to `bufferLimit` bytes into memory (within the budget); past that hands back a
 * stream that fails past `maxBytes`. On failure every byte taken from the budget is given back.
 * `declared`: the Content-Length the parser framed the body by (from `framingOf`, not from
 * headers a stage may have rewritten). `onFirstRead` is called once reading begins: a refusal
 * before it leaves the body unread.
 */
export async function readBody(
  req: IncomingMessage,
  declared: number | undefined,
  bufferLimit: number,
  maxBytes: number,
  budget: BodyBudget,
  onFirstRead: () => void,
): Promise<Body> {
  if (declared !== undefined && declared > maxBytes) throw tooLarge(maxBytes);
  // A declared length is reserved before a byte is read: a refusal comes at once.
  // What is held is at most the buffer's worth (then the body streams): that is what is reserved.
  let reserved = declared !== undefined ? Math.min(declared, bufferLimit) : 0;
  if (!budget.take(reserved)) throw budget.exhausted();
  onFirstRead();
  const chunks: Buffer[] = [];
  let size = 0;
  const it = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  try {
    for (;;) {
      const next = await it.next();
      if (next.done === true) return { buffered: new BufferedBody(chunks, size), reserved };
      size += next.value.length;
      if (size > maxBytes) throw tooLarge(maxBytes);
      const held = Math.min(size, bufferLimit);
      if (held > reserved) {
        if (!budget.take(held - reserved)) throw budget.exhausted();
        reserved = held;
      }
      chunks.push(next.value);
      if (size > bufferLimit)
        return { stream: Readable.from(rest(chunks, it, size, maxBytes), { objectMode: false }), reserved };
    }
  } catch (err) {
    budget.give(reserved);
    throw err;
  }
}

async function* rest(
  head: Buffer[],
  it: AsyncIterator<Buffer>,
  sizeSoFar: number,
  maxBytes: number,
): AsyncGenerator<Buffer> {
  // Handed on and forgotten: once sent, the head is garbage.
  while (head.length > 0) yield head.shift() as Buffer;
  let size = sizeSoFar;
  for (;;) {
    const next = await it.next();
    if (next.done === true) return;
    size += next.value.length;
    if (size > maxBytes) throw Object.assign(new Error('request body over MAX_BODY_BYTES'), { code: BODY_TOO_LARGE });
    yield next.value;
  }
}
