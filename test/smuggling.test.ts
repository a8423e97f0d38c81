// Request smuggling through the proxy: whatever a client puts in Connection, however it
// frames its body, Keap must receive exactly the request the client meant, framed by us,
// plus our credential, and nothing after it.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { RunningProxy } from '../src/http/server.js';
import { startRawRig, SIM_API_KEY, type RawRig } from './harness.js';
import { MANUAL, ok, rawExchange, type RawUpstream, type RecordedRequest } from './raw-upstream.js';

const REPLAY_LIMIT = 1024;

let upstream: RawUpstream;
let proxy: RunningProxy;
let rig: RawRig;
beforeAll(async () => {
  rig = await startRawRig({ LOG_LEVEL: 'warn', REPLAY_BODY_BYTES: String(REPLAY_LIMIT) });
  ({ upstream, proxy } = rig);
  upstream.respond = answer;
});
afterAll(async () => {
  await rig.close();
});

/** A HEAD answer has no body; every other one says which request it answers. */
function answer(req: RecordedRequest): string {
  if (req.method === 'HEAD') return 'HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n';
  return ok(JSON.stringify({ target: req.target }));
}

function chunked(body: Buffer, pieces = 3): Buffer {
  const parts: Buffer[] = [];
  const size = Math.ceil(body.length / pieces);
  for (let i = 0; i < body.length; i += size) {
    const piece = body.subarray(i, i + size);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

type Framing = 'none' | 'length' | 'chunked' | 'length-streamed' | 'chunked-streamed';

const METHODS = ['GET', 'HEAD', 'DELETE', 'OPTIONS', 'POST', 'PUT', 'PATCH'];
const FRAMINGS: Framing[] = ['none', 'length', 'chunked', 'length-streamed', 'chunked-streamed'];
/** What a client may list in Connection to have framing (or our headers) dropped. */
const CONNECTION_TRICKS = [
  'close',
  'close, content-length',
  'close, transfer-encoding',
  'Content-Length, Transfer-Encoding, close',
  'close, host, x-keap-api-key, x-request-id',
];

function requestBytes(method: string, target: string, framing: Framing, connection: string, body: Buffer): Buffer {
  const head = [
    `${method} ${target} HTTP/1.1`,
    'Host: 127.0.0.1',
    `Connection: ${connection}`,
    'X-Keap-API-Key: client-sent-key-must-not-pass',
  ];
  if (framing === 'length' || framing === 'length-streamed') head.push(`Content-Length: ${body.length}`);
  if (framing === 'chunked' || framing === 'chunked-streamed') head.push('Transfer-Encoding: chunked');
  const start = Buffer.from(head.join('\r\n') + '\r\n\r\n', 'latin1');
  if (framing === 'none') return start;
  return Buffer.concat([start, framing.startsWith('chunked') ? chunked(body) : body]);
}

describe('framing of what reaches Keap', () => {
  const cases = METHODS.flatMap((method) =>
    FRAMINGS.flatMap((framing) => CONNECTION_TRICKS.map((connection) => ({ method, framing, connection }))),
  );
  let n = 0;

  it.each(cases)('$method, body $framing, Connection: $connection', async ({ method, framing, connection }) => {
    const target = `/crm/rest/v1/case/${n++}?q=1`;
    const body =
      framing === 'none' ? Buffer.alloc(0) : randomBytes(framing.endsWith('streamed') ? REPLAY_LIMIT * 5 + 7 : 100);
    const before = upstream.requests.length;
    const reply = await rawExchange(proxy.url, requestBytes(method, target, framing, connection, body));
    expect(reply.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');

    // Exactly this one request reached Keap, and nothing after it.
    expect(upstream.garbage).toEqual([]);
    const got = upstream.requests.slice(before);
    expect(got.map((r) => `${r.method} ${r.target}`)).toEqual([`${method} ${target}`]);
    const req = got[0] as RecordedRequest;
    expect(req.body.equals(body)).toBe(true);

    // Framed by us, from the body we hold: one framing header at most, never both.
    const lengths = upstream.header(req, 'content-length');
    const encodings = upstream.header(req, 'transfer-encoding');
    if (framing.endsWith('streamed')) {
      expect(encodings).toEqual(['chunked']);
      expect(lengths).toEqual([]);
    } else if (framing === 'none') {
      expect(encodings).toEqual([]);
      expect(lengths).toEqual(['POST', 'PUT', 'PATCH'].includes(method) ? ['0'] : []);
    } else {
      expect(lengths).toEqual([String(body.length)]);
      expect(encodings).toEqual([]);
    }
    // Our credential, once; never the client's; one Host, Keap's.
    expect(upstream.header(req, 'x-keap-api-key')).toEqual([SIM_API_KEY]);
    expect(upstream.header(req, 'host')).toEqual([new URL(upstream.url).host]);
    expect(upstream.header(req, 'connection')).not.toContain('content-length');
  });
});

describe('refused framings', () => {
  it.each([
    ['gzip, chunked', 501, 'unsupported_transfer_encoding'],
    ['chunked, gzip', 400, 'unsupported_transfer_encoding'],
    ['gzip', 501, 'unsupported_transfer_encoding'],
    ['identity', 501, 'unsupported_transfer_encoding'],
  ])('Transfer-Encoding: %s gets one answer (%d %s) and never reaches Keap', async (te, status, error) => {
    const before = upstream.requests.length;
    const reply = await rawExchange(
      proxy.url,
      `POST /crm/rest/v1/te HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: ${te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    );
    expect(reply.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    // One answer only: the parser tripping over the body afterwards adds nothing to it.
    expect(reply.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    expect(reply).toContain(`"error":"${error}"`);
    expect(upstream.requests.length).toBe(before);
    expect(upstream.garbage).toEqual([]);
  });

  it('Content-Length together with Transfer-Encoding never reaches Keap', async () => {
    const before = upstream.requests.length;
    const reply = await rawExchange(
      proxy.url,
      'POST /crm/rest/v1/both HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
    );
    expect(reply.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(reply).toContain('"error":"ambiguous_body_length"');
    expect(upstream.requests.length).toBe(before);
  });
});

describe('pipelining', () => {
  it('requests pipelined on one connection reach Keap in order, bodies intact, answers in order', async () => {
    const streamedBody = randomBytes(REPLAY_LIMIT * 3);
    // The first answer is slow: a proxy that handled pipelined requests at once would send the rest first.
    upstream.respond = (req, socket) => {
      if (req.target.endsWith('/p1')) {
        setTimeout(() => socket.write(answer(req)), 150);
        return MANUAL;
      }
      return answer(req);
    };
    const before = upstream.requests.length;
    const bytes = Buffer.concat([
      Buffer.from('POST /crm/rest/v1/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello'),
      Buffer.from('GET /crm/rest/v1/p2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'),
      Buffer.from('DELETE /crm/rest/v1/p3 HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n'),
      chunked(Buffer.from('abc')),
      Buffer.from(
        `PATCH /crm/rest/v1/p4 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: content-length\r\nContent-Length: ${streamedBody.length}\r\n\r\n`,
      ),
      streamedBody,
      Buffer.from('GET /crm/rest/v1/p5 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'),
    ]);
    try {
      const reply = await rawExchange(proxy.url, bytes);
      const got = upstream.requests.slice(before);
      expect(got.map((r) => r.target)).toEqual([
        '/crm/rest/v1/p1',
        '/crm/rest/v1/p2',
        '/crm/rest/v1/p3',
        '/crm/rest/v1/p4',
        '/crm/rest/v1/p5',
      ]);
      expect(got.map((r) => r.body.length)).toEqual([5, 0, 3, streamedBody.length, 0]);
      expect(got[3]?.body.equals(streamedBody)).toBe(true);
      expect(upstream.garbage).toEqual([]);
      const answered = [...reply.matchAll(/"target":"([^"]+)"/g)].map((m) => m[1]);
      expect(answered).toEqual([
        '/crm/rest/v1/p1',
        '/crm/rest/v1/p2',
        '/crm/rest/v1/p3',
        '/crm/rest/v1/p4',
        '/crm/rest/v1/p5',
      ]);
    } finally {
      upstream.respond = answer;
    }
  });
});
