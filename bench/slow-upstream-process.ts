// A slow Keap for the uploads scenario, in a child process of its own (as the simulator is),
// so neither its memory nor its CPU is billed to the server under test. It reads every
// request body to the end without keeping it (counting bytes only), then holds the answer
// for BENCH_UPSTREAM_HOLD_MS before saying 200: the proxy in front must keep each upload's
// exchange open that long, as it would for a Keap slow to store a file.
//
// Protocol: the child says { type: 'ready', url }; { type: 'counters', id } is answered with
// { type: 'counters', id, counters }; { type: 'close' } ends it.
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { UPSTREAM_HOLD_ENV } from './processes.js';

export interface UpstreamCounters {
  /** Requests whose body arrived whole. */
  requests: number;
  /** Body bytes read, over all requests. */
  bytes: number;
  /** Requests whose connection went before their body was whole. */
  aborted: number;
}
export type UpstreamRequest = { type: 'counters'; id: number } | { type: 'close' };
export type UpstreamMessage =
  { type: 'ready'; url: string } | { type: 'counters'; id: number; counters: UpstreamCounters };

const holdMs = Number(process.env[UPSTREAM_HOLD_ENV] ?? '2000');
const counters: UpstreamCounters = { requests: 0, bytes: 0, aborted: 0 };
const ANSWER = Buffer.from('{"ok":true}');

const server = http.createServer((req, res) => {
  let complete = false;
  req.on('data', (chunk: Buffer) => {
    counters.bytes += chunk.length;
  });
  req.once('end', () => {
    complete = true;
    counters.requests += 1;
    const timer = setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': ANSWER.length }).end(ANSWER);
    }, holdMs);
    res.once('close', () => clearTimeout(timer));
  });
  req.once('close', () => {
    if (!complete) counters.aborted += 1;
  });
});
// Uploads can take a while to arrive through a proxy holding back; never cut them short here.
server.requestTimeout = 0;
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const { port } = server.address() as AddressInfo;

const reply = (msg: UpstreamMessage): void => {
  process.send?.(msg);
};
process.on('message', (msg: UpstreamRequest) => {
  if (msg.type === 'counters') reply({ type: 'counters', id: msg.id, counters: { ...counters } });
  else {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  }
});
reply({ type: 'ready', url: `http://127.0.0.1:${port}` });
