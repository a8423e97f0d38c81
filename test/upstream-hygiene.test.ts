// What Keap (or anything posing as it) sends back must never wedge a socket, leak memory
// or take the process down.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { createLogger } from '../src/observability/log.js';
import type { RunningProxy } from '../src/http/server.js';
import { installLastResortGuard } from '../src/observability/last-resort.js';
import { LogCapture, metric, send, startRawRig, until, type RawRig } from './harness.js';
import { MANUAL, ok, rawClient, rawExchange, type RawUpstream } from './raw-upstream.js';

let upstream: RawUpstream;
let proxy: RunningProxy;
let rig: RawRig;
beforeAll(async () => {
  rig = await startRawRig({ REPLAY_BODY_BYTES: '1024' });
  ({ upstream, proxy } = rig);
});
afterAll(async () => {
  await rig.close();
});
afterEach(() => {
  upstream.respond = () => ok();
  upstream.early = undefined;
});

/** A client that starts a streamed upload and never finishes it; resolves with the head of the answer. */
async function unfinishedUpload(path: string): Promise<{ head: string; socket: Socket }> {
  const piece = Buffer.alloc(4096, 0x61);
  const c = rawClient(
    proxy.url,
    Buffer.concat([
      Buffer.from(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n`),
      Buffer.from(`${piece.length.toString(16)}\r\n`),
      piece,
      Buffer.from('\r\n'),
    ]),
  );
  const text = await until(`an answer to the upload to ${path}`, () => c.text().includes('\r\n\r\n') && c.text());
  return { head: text.slice(0, text.indexOf('\r\n\r\n')), socket: c.socket };
}

describe('an answer before the upload is done', () => {
  it("the client gets Keap's answer, the upstream socket is destroyed, never pooled, and the memory is given back", async () => {
    upstream.early = (head) =>
      head.target.startsWith('/crm/rest/v1/upload')
        ? 'HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{"error":"large"}'
        : undefined;
    const connectionsBefore = upstream.connections;
    for (let i = 0; i < 5; i++) {
      const { head, socket } = await unfinishedUpload(`/crm/rest/v1/upload/${i}`);
      expect(head.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
      // The client's body was not read to its end: its connection cannot carry another request.
      expect(head.toLowerCase()).toContain('connection: close');
      socket.destroy();
    }
    // Each refused upload had its own upstream connection, and each was closed by the proxy, not kept.
    await until('the proxy to close its upstream connections', () => upstream.openConnections === 0);
    expect(upstream.connections - connectionsBefore).toBe(5);
    await until(
      'buffered bodies to be released',
      async () => (await metric(proxy.url, 'keap_proxy_body_buffer_bytes', { kind: 'in_use' })) === 0,
    );
    // Traffic still flows (a pooled wedged socket would take a request and never answer).
    const r = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(r.status).toBe(200);
  });

  it("the proxy's own answer to an upload Keap refused early also closes the connection", async () => {
    upstream.early = () => 'HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n';
    const { head, socket } = await unfinishedUpload('/crm/rest/v1/upload429');
    socket.destroy();
    // A streamed body cannot be replayed: the client gets the proxy's 429, and the connection is not reused.
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 429 Too Many Requests');
    expect(head.toLowerCase()).toContain('connection: close');
    await until('the upstream connection to close', () => upstream.openConnections === 0);
  });

  it('a complete exchange keeps its upstream connection for the next request', async () => {
    const connectionsBefore = upstream.connections;
    for (let i = 0; i < 3; i++)
      expect((await send(proxy.url, 'POST', '/crm/rest/v1/contacts', { body: '{"a":1}' })).status).toBe(200);
    expect(upstream.connections - connectionsBefore).toBeLessThanOrEqual(1);
  });
});

describe('anything an upstream sends', () => {
  const cases: Array<{ name: string; response: string; status: number }> = [
    {
      name: 'a reason phrase with a control character',
      response: 'HTTP/1.1 200 O\x7fK\r\ncontent-length: 2\r\n\r\nok',
      status: 200,
    },
    {
      name: 'a reason phrase with NUL-free binary',
      response: 'HTTP/1.1 404 N\x01\x02t\r\ncontent-length: 0\r\n\r\n',
      status: 404,
    },
    {
      name: 'a header value with a control character',
      response: 'HTTP/1.1 200 OK\r\nx-a: b\x01c\r\ncontent-length: 2\r\n\r\nok',
      status: 502,
    },
    {
      name: 'a header name that is no token',
      response: 'HTTP/1.1 200 OK\r\nx a: b\r\ncontent-length: 2\r\n\r\nok',
      status: 502,
    },
    { name: 'a status below 100', response: 'HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n', status: 502 },
    {
      name: 'a 101 to a plain request',
      response: 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n',
      status: 502,
    },
    { name: 'not HTTP at all', response: 'SSH-2.0-OpenSSH_9.6\r\n', status: 502 },
    {
      name: 'a body shorter than its length',
      response: 'HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort',
      status: -1,
    },
    {
      name: 'a 429 with a control character in its reason',
      response: 'HTTP/1.1 429 T\x7foo many\r\ncontent-length: 0\r\nretry-after: 3600\r\n\r\n',
      status: 429,
    },
  ];

  it.each(cases)('$name: the client gets an answer and the proxy keeps serving', async ({ response, status }) => {
    upstream.respond = (req, socket) => {
      if (!req.target.startsWith('/crm/rest/v1/odd')) return ok();
      socket.end(response);
      return MANUAL;
    };
    const reply = await rawExchange(
      proxy.url,
      'GET /crm/rest/v1/odd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
    );
    const statusLine = reply.split('\r\n')[0] ?? '';
    if (status === -1) {
      // Keap cut its body short: the client sees the head, then the connection cut; nothing more.
      expect(statusLine).toBe('HTTP/1.1 200 OK');
    } else {
      expect(statusLine).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      // The reason phrase is always Node's own.
      expect(statusLine).toMatch(/^HTTP\/1\.1 \d{3} [A-Za-z ]+$/);
    }
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
  });
});

describe('the last-resort guard', () => {
  it('logs a fault that escaped its request, without its secrets, and keeps the process', () => {
    const proc = new EventEmitter();
    const captured = new LogCapture();
    installLastResortGuard(proc, createLogger('info', captured));
    proc.emit('uncaughtException', new Error('writeHead failed'), 'uncaughtException');
    proc.emit('unhandledRejection', new Error('a lost promise'));
    const entries = captured.entries;
    expect(entries.map((e) => e.event)).toEqual(['uncaught_exception', 'unhandled_rejection']);
    expect((entries[0]?.err as { message: string }).message).toBe('writeHead failed');
    // With the guard's listeners attached, Node does not end the process on an uncaught exception.
    expect(proc.listenerCount('uncaughtException')).toBe(1);
  });
});
