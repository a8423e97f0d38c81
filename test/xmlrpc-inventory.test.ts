// The XML-RPC migration inventory: each call's methodName in its request log line and in a
// metric by method and outcome, and `keap-proxy xmlrpc report` reading the log lines back.
import { describe, it, expect, afterEach } from 'vitest';
import { Readable } from 'node:stream';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from '../src/cli/cli-run.js';
import { parseArgs, UsageError } from '../src/cli/cli-args.js';
import { Metrics, XMLRPC_METHODS_MAX } from '../src/observability/metrics.js';
import { harnessPerTest, Out, send, tempDir } from './harness.js';
import { sample } from './prometheus.js';

const startHarness = harnessPerTest(afterEach);

function call(method: string): string {
  return `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params><param><value><string>k</string></value></param></params></methodCall>`;
}

async function report(
  argv: string[],
  stdin: string[] = [],
  cwd = tempDir(),
): Promise<{ code: number | undefined; out: string; err: string }> {
  const stdout = new Out();
  const stderr = new Out();
  const code = await runCli({
    argv: ['xmlrpc', 'report', ...argv],
    env: {},
    stdout,
    stderr,
    cwd,
    stdinStream: () => Readable.from(stdin.map((l) => l + '\n')),
    serve: () => Promise.reject(new Error('not a serve test')),
  });
  return { code, out: stdout.text, err: stderr.text };
}

describe('the XML-RPC inventory', () => {
  it('names each call in its log line and counts it by method and outcome; `xmlrpc report` reads the lines back', async () => {
    const h = await startHarness({ mode: 'key', env: { LOG_LEVEL: 'info' } });
    for (const m of ['ContactService.load', 'ContactService.load', 'DataService.query'])
      expect((await send(h.proxy.url, 'POST', '/api/xmlrpc', { body: call(m) })).status).toBe(200);
    // A malformed call: the proxy's own fault, counted under what could be read of it.
    await send(h.proxy.url, 'POST', '/crm/xmlrpc/v1', { body: '<methodCall><methodName>Broken.call' });
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);

    const lines = h.logs.entries.filter((e) => e.event === 'request');
    expect(lines.map((e) => e.xmlrpcMethod)).toEqual([
      'ContactService.load',
      'ContactService.load',
      'DataService.query',
      undefined,
      undefined,
    ]);
    // The message says what happened, for people reading the log; the method is in it (the
    // path is the one forwarded, as in `path`: /api/xmlrpc is routed to /crm/xmlrpc/v1).
    expect(lines.map((e) => String(e.msg).replace(/ \d+ms$/, ' <n>ms'))).toEqual([
      'POST /crm/xmlrpc/v1 ContactService.load 200 <n>ms',
      'POST /crm/xmlrpc/v1 ContactService.load 200 <n>ms',
      'POST /crm/xmlrpc/v1 DataService.query 200 <n>ms',
      'POST /crm/xmlrpc/v1 200 <n>ms',
      'GET /crm/rest/v1/contacts 200 <n>ms',
    ]);
    const metrics = (await send(h.proxy.url, 'GET', '/metrics')).text();
    const count = (method: string, outcome: string): number | undefined =>
      sample(metrics, 'keap_proxy_xmlrpc_calls_total', { method, outcome });
    expect(count('ContactService.load', 'relayed')).toBe(2);
    expect(count('DataService.query', 'relayed')).toBe(1);
    expect(count('unread', 'malformed_xmlrpc')).toBe(1);

    const r = await report([], h.logs.lines);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^XML-RPC calls in \d+ log lines: 2 methods, 3 calls\.\n/);
    const rows = r.out.split('\n').filter((l) => /^ +\d/.test(l));
    expect(
      rows.map((l) =>
        l
          .trim()
          .split(/\s+/)
          .filter((_, i) => i === 0 || i === 3 || i === 4),
      ),
    ).toEqual([
      ['2', 'yes', 'ContactService.load'],
      ['1', 'partly', 'DataService.query'],
    ]);
    expect(r.out).toContain(
      '2 of 2 can be answered by the proxy from REST v2 (XMLRPC_MODE=translate), 1 of them in part',
    );
    expect(r.out).toContain(
      '  DataService.query: translated on the Contact, ContactGroup, ContactGroupAssign and ContactGroupCategory tables only.\n',
    );
    const json = await report(['--json'], h.logs.lines);
    expect(JSON.parse(json.out)).toMatchObject({
      methods: [
        { method: 'ContactService.load', calls: 2, relayed: 2 },
        { method: 'DataService.query', calls: 1, relayed: 1 },
      ],
      unreadable: 0,
    });
  });

  it('reads log files, skips lines that are not JSON, and names a file it cannot read', async () => {
    const dir = tempDir();
    const line = (method: string, time: number): string =>
      JSON.stringify({
        level: 30,
        time,
        event: 'request',
        method: 'POST',
        path: '/api/xmlrpc',
        upstreamStatus: 200,
        xmlrpcMethod: method,
      });
    writeFileSync(
      path.join(dir, 'a.log'),
      [line('APIEmailService.optIn', 1000), 'not json', line('APIEmailService.optIn', 3000)].join('\n'),
    );
    writeFileSync(path.join(dir, 'b.log'), line('ContactService.add', 2000) + '\n');
    const r = await report(['--log', 'a.log', '--log', 'b.log', '--json'], [], dir);
    expect(JSON.parse(r.out)).toEqual({
      methods: [
        {
          method: 'APIEmailService.optIn',
          calls: 2,
          relayed: 2,
          translatable: true,
          firstSeen: new Date(1000).toISOString(),
          lastSeen: new Date(3000).toISOString(),
        },
        {
          method: 'ContactService.add',
          calls: 1,
          relayed: 1,
          translatable: true,
          firstSeen: new Date(2000).toISOString(),
          lastSeen: new Date(2000).toISOString(),
        },
      ],
      lines: 4,
      unreadable: 1,
    });
    const missing = await report(['--log', 'none.log'], [], dir);
    expect(missing.code).toBe(1);
    expect(missing.err).toBe(`keap-proxy: ${path.join(dir, 'none.log')} cannot be read (ENOENT)\n`);
    const empty = await report([], []);
    expect(empty.out).toMatch(/No XML-RPC call in these logs/);
  });

  it('parses its options', () => {
    expect(parseArgs(['xmlrpc', 'report', '--log', 'x', '--log', 'y'])).toEqual({
      kind: 'xmlrpc-report',
      logs: ['x', 'y'],
      json: false,
    });
    expect(() => parseArgs(['xmlrpc', 'list'])).toThrow(UsageError);
    expect(() => parseArgs(['xmlrpc', 'report', '--config', 'c'])).toThrow(
      /unknown option "--config" for keap-proxy xmlrpc report/,
    );
  });
});

describe('the method label is bounded', () => {
  it('a name that is not Service.method is `invalid`; past the limit of distinct names, `other`', async () => {
    const metrics = new Metrics();
    metrics.xmlrpcCall('Not a method<>', 'relayed');
    for (let i = 0; i < XMLRPC_METHODS_MAX + 5; i++) metrics.xmlrpcCall(`Service.m${i}`, 'relayed');
    const text = (await metrics.render()).body;
    expect(sample(text, 'keap_proxy_xmlrpc_calls_total', { method: 'invalid', outcome: 'relayed' })).toBe(1);
    expect(sample(text, 'keap_proxy_xmlrpc_calls_total', { method: 'other', outcome: 'relayed' })).toBe(6);
    expect(text.match(/^keap_proxy_xmlrpc_calls_total\{/gm)?.length).toBe(XMLRPC_METHODS_MAX + 1);
  });
});
