import { describe, it, expect } from 'vitest';
import { startHarness, send, tempDir, LogCapture, SIM_CLIENT_SECRET, SIM_SEED, SIM_API_KEY } from './harness.js';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createLogger, RequestLog, type RequestRecord } from '../src/observability/log.js';
import { LogWriter } from '../src/observability/log-writer.js';

const CLIENT_KEY = 'client-key-must-not-be-logged-0001';

describe('logs', () => {
  it('one JSON line per request with id, method, path, status, upstream status, attempts and duration', async () => {
    const h = await startHarness({ mode: 'key' });
    try {
      await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts?secret_query=1', {
        headers: { 'x-request-id': 'req-log-1' },
      });
      await h.proxy.close();
      const line = h.logs.entries.find((e) => e.event === 'request' && e.reqId === 'req-log-1');
      expect(line).toMatchObject({
        level: 'info',
        method: 'GET',
        path: '/crm/rest/v1/contacts',
        status: 200,
        upstreamStatus: 200,
        attempts: 1,
      });
      expect(typeof line?.durationMs).toBe('number');
      // The message says what happened: method, path without the query, status, whole ms.
      expect(line?.msg).toBe(`GET /crm/rest/v1/contacts 200 ${Math.round(line?.durationMs as number)}ms`);
      expect(JSON.stringify(line)).not.toContain('secret_query');
      const start = h.logs.entries.find((e) => e.event === 'starting');
      expect(start).toMatchObject({ config: { mode: 'key', pacing: { perSecond: 0 } } });
    } finally {
      await h.sim.close();
    }
  });

  it('no secret appears in any log line of a full run, at trace level', async () => {
    const h = await startHarness({ mode: 'oauth', env: { PROXY_CLIENT_KEYS: CLIENT_KEY, LOG_LEVEL: 'trace' } });
    const secrets = new Set<string>([SIM_CLIENT_SECRET, SIM_SEED, CLIENT_KEY]);
    try {
      const auth = { authorization: `Bearer ${CLIENT_KEY}` };
      const echo = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo', { headers: auth });
      secrets.add(String(echo.json<{ headers: Record<string, string> }>().headers.authorization).slice(7));
      await send(h.proxy.url, 'POST', '/crm/rest/v1/contacts', {
        headers: { ...auth, 'content-type': 'application/json' },
        body: '{"given_name":"Ada"}',
      });
      await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', {
        body: `<methodCall><methodName>x</methodName><params><param><value><string>${CLIENT_KEY}</string></value></param></params></methodCall>`,
      });
      await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts', {
        headers: { authorization: 'Bearer wrong-key-wrong-key' },
      });
      await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { headers: auth, body: '<methodCall><params><param>' });
      await send(h.proxy.url, 'GET', '/readyz');
      const live = h.sim.currentRefreshToken();
      if (live !== undefined) secrets.add(live);
      await h.sim.close();
      await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts', { headers: auth });
    } finally {
      await h.proxy.close();
    }
    // Key mode too: the API key must never be logged.
    const k = await startHarness({ mode: 'key', env: { LOG_LEVEL: 'trace' } });
    await send(k.proxy.url, 'POST', '/crm/xmlrpc/v1', { body: '<methodCall><methodName>x</methodName></methodCall>' });
    await send(k.proxy.url, 'GET', '/crm/rest/v1/contacts');
    await k.close();

    const all = h.logs.text() + '\n' + k.logs.text();
    expect(h.logs.lines.length).toBeGreaterThan(8);
    expect(secrets.size).toBeGreaterThanOrEqual(5);
    for (const secret of [...secrets, SIM_API_KEY]) expect(all, 'a secret leaked into the logs').not.toContain(secret);
    for (const line of h.logs.lines) expect(() => JSON.parse(line) as unknown).not.toThrow();
  });

  it('warns at start when listening beyond loopback without client keys', async () => {
    const open = await startHarness({ mode: 'key', env: { HOST: '0.0.0.0' } });
    await open.close();
    expect(open.logs.entries.find((e) => e.event === 'open_listener')).toMatchObject({
      level: 'warn',
      host: '0.0.0.0',
    });
    const gated = await startHarness({ mode: 'key', env: { HOST: '0.0.0.0', PROXY_CLIENT_KEYS: CLIENT_KEY } });
    await gated.close();
    expect(gated.logs.entries.some((e) => e.event === 'open_listener')).toBe(false);
    const loopback = await startHarness({ mode: 'key' });
    await loopback.close();
    expect(loopback.logs.entries.some((e) => e.event === 'open_listener')).toBe(false);
  });

  it("the request line, built by its own template, reads exactly as pino's own serializer would write it", () => {
    const capture = new LogCapture();
    const logger = createLogger('info', capture);
    const requestLog = new RequestLog(logger);
    const records: RequestRecord[] = [
      {
        time: 1_763_900_000_123,
        reqId: 'req-1',
        method: 'GET',
        path: '/crm/rest/v1/contacts',
        status: 200,
        upstreamStatus: 200,
        attempts: 1,
        durationMs: 12.3,
        outcome: undefined,
        cache: undefined,
      },
      {
        time: 1_763_900_000_124,
        reqId: 'r:2.x-y_z',
        method: 'POST',
        path: '/a"quote\\back\u0001ctl/zażółć/😀',
        status: undefined,
        upstreamStatus: undefined,
        attempts: 0,
        durationMs: 0,
        outcome: 'client_closed',
        cache: 'MISS',
      },
      {
        time: 1_763_900_000_125,
        reqId: 'req-3',
        method: 'DELETE',
        path: '/x',
        status: 504,
        upstreamStatus: undefined,
        attempts: 2,
        durationMs: 60000.5,
        outcome: 'timeout',
        cache: undefined,
      },
      {
        time: 1_763_900_000_126,
        reqId: 'req-4',
        method: 'POST',
        path: '/crm/xmlrpc/v1',
        status: 200,
        upstreamStatus: 200,
        attempts: 1,
        durationMs: 9.4,
        outcome: undefined,
        cache: undefined,
        xmlrpcMethod: 'ContactService.load',
      },
      {
        time: 1_763_900_000_127,
        reqId: 'req-5',
        method: 'POST',
        path: '/api/xmlrpc',
        status: 200,
        upstreamStatus: undefined,
        attempts: 0,
        durationMs: 0.4,
        outcome: 'malformed_xmlrpc',
        cache: undefined,
        xmlrpcMethod: 'Odd"name\\\n',
      },
    ];
    // What each line's message says (pino is given it as its msg, to compare with ours).
    const messages = [
      'GET /crm/rest/v1/contacts 200 12ms',
      'POST /a"quote\\back\u0001ctl/zażółć/😀 client_closed 0ms',
      'DELETE /x 504 60001ms',
      'POST /crm/xmlrpc/v1 ContactService.load 200 9ms',
      'POST /api/xmlrpc Odd"name\\\n 200 0ms',
    ];
    records.forEach((r, i) => {
      requestLog.write(r);
      const { time: _time, ...fields } = r;
      logger.info({ event: 'request', ...fields }, messages[i]);
    });
    const entries = capture.entries;
    expect(entries).toHaveLength(records.length * 2);
    for (let i = 0; i < records.length; i++) {
      const ours = { ...entries[2 * i], time: 0 };
      const pinos = { ...entries[2 * i + 1], time: 0 };
      expect(ours).toEqual(pinos);
      expect(Object.keys(ours)).toEqual(Object.keys(pinos));
      expect(entries[2 * i]?.time).toBe(records[i]?.time);
    }

    // Below info the line is not written at all.
    logger.level = 'warn';
    requestLog.write(records[0] as RequestRecord);
    expect(capture.lines).toHaveLength(records.length * 2);
  });

  it('through a LogWriter, request lines are formatted when their batch is written and keep their place among the other lines', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'out.log');
    const writer = new LogWriter({ dest: file, minLength: 4096, flushIntervalMs: 60_000 });
    const logger = createLogger('info', writer);
    const requestLog = new RequestLog(logger);
    const expected: string[] = [];
    for (let i = 0; i < 200; i++) {
      if (i % 7 === 0) {
        logger.info({ event: 'other', i }, 'other');
        expected.push(`other ${i}`);
      }
      requestLog.write({
        time: 1000 + i,
        reqId: `req-${i}`,
        method: 'GET',
        path: `/p/${i}`,
        status: 200,
        upstreamStatus: 200,
        attempts: 1,
        durationMs: i / 10,
        outcome: undefined,
        cache: undefined,
      });
      expected.push(`request ${i}`);
    }
    await writer.close();
    const entries = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(
      entries.map((e) => (e.event === 'other' ? `other ${String(e.i)}` : `request ${String(e.reqId).slice(4)}`)),
    ).toEqual(expected);
    expect(entries.find((e) => e.reqId === 'req-42')).toMatchObject({
      level: 'info',
      time: 1042,
      name: 'keap-proxy',
      path: '/p/42',
      status: 200,
      durationMs: 4.2,
      msg: 'GET /p/42 200 4ms',
    });
    rmSync(dir, { recursive: true, force: true });
  });
});
