// Why Keap could not be reached: each upstream failure is logged at warn with its cause and
// the upstream host, once per cause per window (the ones left out counted on the next line),
// and the request line carries the cause. Real upstreams on loopback: a closed port, a name
// that does not resolve, a socket reset, one that never answers, a certificate nobody signed.
import { execFileSync } from 'node:child_process';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/observability/log.js';
import { startProxy, type ProxyOverrides, type RunningProxy } from '../src/http/server.js';
import { causeOf, UpstreamFailureLog } from '../src/upstream/failure-log.js';
import { UpstreamError } from '../src/upstream/forwarder.js';
import { LogCapture, send, SIM_API_KEY, startRawRig, tempDir, type RawRig } from './harness.js';
import { MANUAL as MANUAL_ANSWER } from './raw-upstream.js';

const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

/** keap-proxy in key mode in front of `apiUrl`, its log lines captured. */
async function proxyTo(
  apiUrl: string,
  env: Record<string, string> = {},
  overrides: Omit<ProxyOverrides, 'logger'> = {},
): Promise<{ proxy: RunningProxy; logs: LogCapture }> {
  const logs = new LogCapture();
  const config = loadConfig({
    env: {
      KEAP_API_URL: apiUrl,
      KEAP_API_KEY: SIM_API_KEY,
      PORT: '0',
      RATE_LIMIT_PER_SECOND: '0',
      LOG_LEVEL: 'trace',
      ...env,
    },
    cwd: tempDir(),
  });
  const proxy = await startProxy(config, { ...overrides, logger: createLogger(config.logLevel, logs) });
  open.push(proxy);
  return { proxy, logs };
}

async function rawRig(env: Record<string, string> = {}): Promise<RawRig> {
  const rig = await startRawRig({ LOG_LEVEL: 'trace', ...env });
  open.push(rig);
  return rig;
}

/** A loopback port nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function warnings(logs: LogCapture, event: string): Record<string, unknown>[] {
  return logs.entries.filter((e) => e.event === event);
}

function requestLine(logs: LogCapture): Record<string, unknown> | undefined {
  return logs.entries.find((e) => e.event === 'request');
}

describe('upstream failures are logged with their cause', () => {
  it('a closed port: ECONNREFUSED and the host, at warn, and on the request line', async () => {
    const port = await closedPort();
    const { proxy, logs } = await proxyTo(`http://127.0.0.1:${port}`);
    const reply = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(reply.status).toBe(502);
    const [line, ...more] = warnings(logs, 'upstream_unreachable');
    expect(more).toEqual([]);
    expect(line).toMatchObject({ level: 'warn', cause: 'ECONNREFUSED', host: `127.0.0.1:${port}` });
    expect(requestLine(logs)).toMatchObject({ status: 502, outcome: 'unreachable', cause: 'ECONNREFUSED' });
    expect(logs.text()).not.toContain(SIM_API_KEY);
  });

  it('a name that does not resolve: ENOTFOUND', async () => {
    // .invalid never resolves (RFC 6761): the resolver answers at once, with no network.
    const { proxy, logs } = await proxyTo('http://keap-proxy-test.invalid');
    const reply = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(reply.status).toBe(502);
    expect(warnings(logs, 'upstream_unreachable')[0]).toMatchObject({
      cause: 'ENOTFOUND',
      host: 'keap-proxy-test.invalid',
    });
    expect(requestLine(logs)).toMatchObject({ cause: 'ENOTFOUND' });
  });

  it('a socket reset mid-request: ECONNRESET; the Authorization header and the key are never logged', async () => {
    const rig = await rawRig();
    rig.upstream.respond = (_req, socket) => {
      socket.resetAndDestroy();
      return MANUAL_ANSWER;
    };
    const reply = await send(rig.proxy.url, 'GET', '/crm/rest/v1/contacts', {
      headers: { authorization: 'Bearer client-secret-never-logged' },
    });
    expect(reply.status).toBe(502);
    expect(warnings(rig.logs, 'upstream_unreachable')[0]).toMatchObject({ level: 'warn', cause: 'ECONNRESET' });
    expect(requestLine(rig.logs)).toMatchObject({ cause: 'ECONNRESET' });
    expect(rig.logs.text()).not.toContain(SIM_API_KEY);
    expect(rig.logs.text()).not.toContain('client-secret-never-logged');
  });

  it('no answer within UPSTREAM_TIMEOUT_MS: a timeout, logged as upstream_timeout', async () => {
    const rig = await rawRig({ UPSTREAM_TIMEOUT_MS: '50' });
    rig.upstream.respond = () => MANUAL_ANSWER;
    const reply = await send(rig.proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(reply.status).toBe(504);
    expect(warnings(rig.logs, 'upstream_timeout')[0]).toMatchObject({ level: 'warn', cause: 'timeout' });
    expect(requestLine(rig.logs)).toMatchObject({ outcome: 'timeout', cause: 'timeout' });
  });

  it.skipIf(!hasOpenssl())('a certificate nobody signed: DEPTH_ZERO_SELF_SIGNED_CERT', async () => {
    const dir = tempDir();
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost'].concat([
        '-keyout',
        path.join(dir, 'key.pem'),
        '-out',
        path.join(dir, 'cert.pem'),
      ]),
      { stdio: 'ignore' },
    );
    const server = https.createServer(
      { key: readFileSync(path.join(dir, 'key.pem')), cert: readFileSync(path.join(dir, 'cert.pem')) },
      (_req, res) => res.end('{}'),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    open.push({ close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
    const { proxy, logs } = await proxyTo(`https://localhost:${(server.address() as AddressInfo).port}`);
    const reply = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(reply.status).toBe(502);
    expect(warnings(logs, 'upstream_unreachable')[0]).toMatchObject({ cause: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  });

  it('a cause that repeats is logged once per window, the next line counting the ones left out', async () => {
    let now = 1_000_000;
    const port = await closedPort();
    const { proxy, logs } = await proxyTo(`http://127.0.0.1:${port}`, {}, { now: () => now });
    for (let i = 0; i < 3; i++) expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(502);
    expect(warnings(logs, 'upstream_unreachable')).toHaveLength(1);
    // Every request line still says why.
    expect(logs.entries.filter((e) => e.event === 'request').map((e) => e.cause)).toEqual([
      'ECONNREFUSED',
      'ECONNREFUSED',
      'ECONNREFUSED',
    ]);
    now += 9_999;
    await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(warnings(logs, 'upstream_unreachable')).toHaveLength(1);
    now += 1;
    await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    const lines = warnings(logs, 'upstream_unreachable');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ cause: 'ECONNREFUSED', suppressed: 3 });
  });

  it('each cause has its own window (UpstreamFailureLog with a fake clock)', () => {
    const logs = new LogCapture();
    let now = 0;
    const log = new UpstreamFailureLog(createLogger('info', logs), 'api.example.com', () => now);
    const refused = new UpstreamError('unreachable', Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
    const expired = new UpstreamError(
      'unreachable',
      Object.assign(new Error('certificate has expired'), { code: 'CERT_HAS_EXPIRED' }),
    );
    expect(log.failed(refused, 'a')).toBe('ECONNREFUSED');
    expect(log.failed(expired, 'b')).toBe('CERT_HAS_EXPIRED');
    expect(log.failed(refused, 'c')).toBe('ECONNREFUSED');
    expect(log.failed(new UpstreamError('timeout'), 'd')).toBe('timeout');
    // Not Keap's failures: a client that went, another error.
    expect(log.failed(new UpstreamError('client_closed'), 'e')).toBeUndefined();
    expect(log.failed(new Error('boom'), 'f')).toBeUndefined();
    expect(logs.entries.map((e) => [e.event, e.cause, e.host])).toEqual([
      ['upstream_unreachable', 'ECONNREFUSED', 'api.example.com'],
      ['upstream_unreachable', 'CERT_HAS_EXPIRED', 'api.example.com'],
      ['upstream_timeout', 'timeout', 'api.example.com'],
    ]);
    now += 10_000;
    log.failed(refused, 'g');
    expect(logs.entries.at(-1)).toMatchObject({ cause: 'ECONNREFUSED', suppressed: 1, reqId: 'g' });
  });

  it('causeOf finds the code inside wrapped errors', () => {
    const inner = Object.assign(new Error('connect ECONNREFUSED ::1:443'), { code: 'ECONNREFUSED' });
    expect(causeOf(new UpstreamError('unreachable', new AggregateError([inner])))).toBe('ECONNREFUSED');
    expect(causeOf(new UpstreamError('unreachable', new Error('x', { cause: inner })))).toBe('ECONNREFUSED');
    expect(causeOf(new UpstreamError('unreachable', new Error('no code')))).toBe('unknown');
  });
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
