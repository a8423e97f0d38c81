// A stand-in for Keap made of raw sockets: it records the exact bytes each request arrives
// with and frames them the strict way (Content-Length, chunked, or no body), so a body that
// reached it unframed shows up as a second, garbage "request". Tests script its answers.
import net, { connect, type AddressInfo, type Socket } from 'node:net';

export interface RecordedRequest {
  /** Index of the upstream connection it came on (0, 1, ...). */
  connection: number;
  /** The head exactly as received, request line to the blank line. */
  head: string;
  method: string;
  target: string;
  /** Header lines in order, names lower-cased. */
  headers: Array<[string, string]>;
  framing: 'none' | 'length' | 'chunked';
  /** The body as framed (chunked decoded). */
  body: Buffer;
  /** The whole request as received, head and (still chunk-encoded) body. */
  raw: Buffer;
}

/** A responder's answer meaning "I took the socket and answer (or not) myself". */
export const MANUAL = Symbol('manual');

/** What to do with a request: answer it (bytes to write), or take the socket and do it yourself. */
export type Responder = (req: RecordedRequest, socket: Socket) => string | Buffer | typeof MANUAL;

/** Answer once the head is in, before (and without) reading the body: a gateway refusing an upload. */
export type EarlyResponder = (head: RecordedRequest, socket: Socket) => string | Buffer | undefined;

export function ok(body = '{"ok":true}', extra = ''): string {
  return `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

export class RawUpstream {
  readonly requests: RecordedRequest[] = [];
  /** Requests whose head was not valid: bytes that were never meant to be one (smuggled body bytes). */
  readonly garbage: Buffer[] = [];
  connections = 0;
  openConnections = 0;
  respond: Responder = () => ok();
  early: EarlyResponder | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: net.Server) {}

  static async start(): Promise<RawUpstream> {
    const server = net.createServer();
    const upstream = new RawUpstream(server);
    server.on('connection', (socket: Socket) => upstream.accept(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return upstream;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Forgets the requests and connections so far (for a file that shares one upstream between tests). */
  reset(): void {
    this.requests.length = 0;
    this.garbage.length = 0;
    this.connections = 0;
  }

  header(req: RecordedRequest, name: string): string[] {
    return req.headers.filter(([n]) => n === name).map(([, v]) => v);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    const connection = this.connections++;
    this.openConnections += 1;
    this.sockets.add(socket);
    socket.on('close', () => {
      this.openConnections -= 1;
      this.sockets.delete(socket);
    });
    socket.on('error', () => undefined);
    let buffered = Buffer.alloc(0);
    let answeredEarly = false;
    socket.on('data', (chunk: Buffer) => {
      if (answeredEarly) return;
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        const parsed = parseOne(buffered, connection);
        if (parsed === 'incomplete') {
          const head = parseHeadOnly(buffered, connection);
          if (head !== undefined && this.early !== undefined) {
            const answer = this.early(head, socket);
            if (answer !== undefined) {
              this.requests.push(head);
              answeredEarly = true;
              socket.write(answer);
              // A gateway that answered stops reading the upload and keeps the connection open.
              socket.pause();
            }
          }
          return;
        }
        if (parsed === 'garbage') {
          this.garbage.push(buffered);
          socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
          return;
        }
        buffered = buffered.subarray(parsed.raw.length);
        this.requests.push(parsed);
        const answer = this.respond(parsed, socket);
        if (answer !== MANUAL) socket.write(answer);
      }
    });
  }
}

const REQUEST_LINE = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/;

function parseHeadOnly(buf: Buffer, connection: number): RecordedRequest | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const head = buf.subarray(0, end + 4).toString('latin1');
  const lines = head.slice(0, -4).split('\r\n');
  const m = REQUEST_LINE.exec(lines[0] ?? '');
  if (m === null) return undefined;
  const headers = lines.slice(1).map((l): [string, string] => {
    const i = l.indexOf(':');
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
  });
  const te = headers.find(([n]) => n === 'transfer-encoding');
  const cl = headers.find(([n]) => n === 'content-length');
  return {
    connection,
    head,
    method: m[1] as string,
    target: m[2] as string,
    headers,
    framing: te ? 'chunked' : cl ? 'length' : 'none',
    body: Buffer.alloc(0),
    raw: buf.subarray(0, end + 4),
  };
}

/** One request off the front of `buf`: framed strictly, as a careful server would. */
function parseOne(buf: Buffer, connection: number): RecordedRequest | 'incomplete' | 'garbage' {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) {
    // A line that is no request line is garbage as soon as it is complete.
    const firstLine = buf.indexOf('\r\n');
    if (firstLine >= 0 && !REQUEST_LINE.test(buf.subarray(0, firstLine).toString('latin1'))) return 'garbage';
    return 'incomplete';
  }
  const req = parseHeadOnly(buf, connection);
  if (req === undefined) return 'garbage';
  const bodyStart = end + 4;
  if (req.framing === 'chunked') {
    const chunks: Buffer[] = [];
    let at = bodyStart;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', at);
      if (lineEnd < 0) return 'incomplete';
      const size = parseInt(buf.subarray(at, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) return 'garbage';
      if (size === 0) {
        // No trailers are sent by the proxy: the last chunk is followed by one CRLF.
        if (buf.length < lineEnd + 4) return 'incomplete';
        if (buf.subarray(lineEnd + 2, lineEnd + 4).toString('latin1') !== '\r\n') return 'garbage';
        return { ...req, body: Buffer.concat(chunks), raw: buf.subarray(0, lineEnd + 4) };
      }
      if (buf.length < lineEnd + 2 + size + 2) return 'incomplete';
      chunks.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  const length = req.framing === 'length' ? Number(req.headers.find(([n]) => n === 'content-length')?.[1]) : 0;
  if (buf.length < bodyStart + length) return 'incomplete';
  return { ...req, body: buf.subarray(bodyStart, bodyStart + length), raw: buf.subarray(0, bodyStart + length) };
}

/**
 * A client on a raw socket: writes `bytes` once connected and leaves the connection open
 * (no half-close: a client's FIN makes Node drop a request still in flight); `text()` is
 * what came back so far.
 */
export function rawClient(baseUrl: string, bytes: Buffer | string): { socket: Socket; text(): string } {
  const u = new URL(baseUrl);
  const socket = connect(Number(u.port), u.hostname, () => socket.write(bytes));
  socket.on('error', () => undefined);
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return { socket, text: () => Buffer.concat(chunks).toString('latin1') };
}

/** Writes raw bytes to a server and returns everything it answered until it closed. */
export function rawExchange(baseUrl: string, bytes: Buffer | string): Promise<string> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname, () => socket.write(bytes));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}
