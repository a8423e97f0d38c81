// The token endpoint's 3xx is never followed: following it would send the refresh token
// (and on a code exchange the client secret) to whatever host the Location names. Real
// loopback servers: a "token endpoint" that redirects, and a trap it redirects to that
// records every connection and request it gets.
import { describe, it, expect, afterEach } from 'vitest';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { LogCapture, send, startHarness, tempDir, type Harness } from './harness.js';
import { createLogger } from '../src/observability/log.js';
import { TokenClient, TokenEndpointError } from '../src/tokens/token-client.js';
import { FileTokenStore } from '../src/tokens/token-store.js';
import { TokenBroker } from '../src/tokens/token-broker.js';

const CLIENT_ID = 'redirect-test-client-id';
const CLIENT_SECRET = 'redirect-test-client-secret-5f2c9a';
const REFRESH_TOKEN = 'redirect-test-refresh-token-8d41e7';
const CODE = 'redirect-test-authorization-code-b3a6';
/** In the Location's query: an attacker's URL may carry anything there, and none of it is ours to log. */
const LOCATION_QUERY = 'collect=redirect-test-query-marker';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface Recording {
  server: Server;
  url: string;
  host: string;
  requests: Recorded[];
  connections: number;
}

async function recordingServer(answer: (res: import('node:http').ServerResponse) => void): Promise<Recording> {
  const server = createServer();
  const rec: Recording = { server, url: '', host: '', requests: [], connections: 0 };
  server.on('connection', () => (rec.connections += 1));
  server.on('request', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      rec.requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      answer(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  rec.host = `127.0.0.1:${port}`;
  rec.url = `http://${rec.host}`;
  return rec;
}

const open: Server[] = [];
const harnesses: Harness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close();
  for (const s of open.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

/** A trap that would hand out a grant if asked, and a token endpoint that redirects to it with `status`. */
async function redirectingEndpoint(status: number): Promise<{ endpoint: Recording; trap: Recording }> {
  const trap = await recordingServer((res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        access_token: 'trap-access',
        refresh_token: 'trap-refresh',
        expires_in: 86400,
        token_type: 'bearer',
        scope: 'full|trap.infusionsoft.com',
      }),
    );
  });
  const endpoint = await recordingServer((res) => {
    res.writeHead(status, { location: `${trap.url}/token?${LOCATION_QUERY}`, 'content-type': 'text/plain' });
    res.end('moved');
  });
  open.push(trap.server, endpoint.server);
  return { endpoint, trap };
}

function expectNoSecret(text: string, secrets: string[]): void {
  for (const secret of secrets) expect(text, 'a secret was written out').not.toContain(secret);
}

const basic = Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64');
const SECRETS = [CLIENT_SECRET, REFRESH_TOKEN, CODE, basic, LOCATION_QUERY];

describe('the token endpoint answers a redirect', () => {
  for (const status of [307, 302, 308]) {
    it(`${status} on refresh: not followed, the broker logs the Location host and no secret`, async () => {
      const { endpoint, trap } = await redirectingEndpoint(status);
      const logs = new LogCapture();
      const broker = new TokenBroker({
        client: new TokenClient({
          tokenUrl: new URL(`${endpoint.url}/token`),
          clientId: CLIENT_ID,
          clientSecret: CLIENT_SECRET,
        }),
        store: new FileTokenStore(path.join(tempDir(), 'store', 'tokens.json')),
        logger: createLogger('trace', logs),
        seedRefreshToken: REFRESH_TOKEN,
      });
      // With only a seed, start() refreshes at once.
      await broker.start();
      broker.stop();

      expect(endpoint.requests).toHaveLength(1);
      expect(endpoint.requests[0]?.body).toContain('grant_type=refresh_token');
      expect(trap.connections).toBe(0);
      expect(trap.requests).toHaveLength(0);

      const failed = logs.entries.find((e) => e.event === 'token_refresh_failed');
      expect(failed).toMatchObject({ level: 'warn', failure: 'unavailable', redirectHost: trap.host });
      expect(String(failed?.msg)).toContain(`answered ${status}`);
      expect(String(failed?.msg)).toContain(trap.host);
      expect(broker.current()).toBeUndefined();
      expect(broker.readiness()).toMatchObject({ ready: false, code: 'token_unavailable' });
      expectNoSecret(logs.text(), SECRETS);
      expectNoSecret(JSON.stringify(broker.readiness()), SECRETS);
    });

    it(`${status} on code exchange: not followed, the error names the Location host and no secret`, async () => {
      const { endpoint, trap } = await redirectingEndpoint(status);
      const client = new TokenClient({
        tokenUrl: new URL(`${endpoint.url}/token`),
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
      });
      const err = await client.exchangeCode(CODE, 'https://app.example.com/cb').catch((e: unknown) => e);

      expect(err).toBeInstanceOf(TokenEndpointError);
      expect(err).toMatchObject({ failure: 'unavailable', status, redirectHost: trap.host });
      expect((err as Error).message).toContain(trap.host);
      expectNoSecret((err as Error).message, SECRETS);
      expect(endpoint.requests).toHaveLength(1);
      expect(endpoint.requests[0]?.body).toContain('grant_type=authorization_code');
      expect(trap.connections).toBe(0);
      expect(trap.requests).toHaveLength(0);
    });
  }

  it('a 3xx without a Location is a failure too, and nothing is followed', async () => {
    const endpoint = await recordingServer((res) => {
      res.writeHead(303);
      res.end();
    });
    open.push(endpoint.server);
    const client = new TokenClient({
      tokenUrl: new URL(`${endpoint.url}/token`),
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
    });
    const err = await client.refresh(REFRESH_TOKEN).catch((e: unknown) => e);
    expect(err).toMatchObject({ failure: 'unavailable', status: 303, redirectHost: undefined });
    expect((err as Error).message).toMatch(/303, a redirect without a Location/);
    expect(endpoint.requests).toHaveLength(1);
  });

  it('through the proxy: the startup refresh and /oauth/callback both stop at the redirect; the browser and the log name the host, never a secret', async () => {
    const { endpoint, trap } = await redirectingEndpoint(307);
    const redirectUri = 'http://127.0.0.1:8080/oauth/callback';
    const h = await startHarness({
      mode: 'oauth',
      env: {
        KEAP_TOKEN_URL: `${endpoint.url}/token`,
        KEAP_CLIENT_ID: CLIENT_ID,
        KEAP_CLIENT_SECRET: CLIENT_SECRET,
        KEAP_REFRESH_TOKEN: REFRESH_TOKEN,
        KEAP_REDIRECT_URI: redirectUri,
      },
    });
    harnesses.push(h);
    expect(h.logs.entries.find((e) => e.event === 'token_refresh_failed')).toMatchObject({ redirectHost: trap.host });

    const start = await send(h.proxy.url, 'GET', '/oauth/start');
    const state = new URL(String(start.headers.location)).searchParams.get('state') ?? '';
    const page = await send(h.proxy.url, 'GET', `/oauth/callback?code=${CODE}&state=${state}`);
    expect(page.status).toBe(502);
    expect(page.json()).toMatchObject({ error: 'token_endpoint_unavailable' });
    expect(page.json<{ message: string }>().message).toContain(trap.host);

    expect(endpoint.requests.map((r) => new URLSearchParams(r.body).get('grant_type'))).toEqual([
      'refresh_token',
      'authorization_code',
    ]);
    expect(trap.connections).toBe(0);
    expect(trap.requests).toHaveLength(0);
    expectNoSecret(page.text() + h.logs.text(), SECRETS);
    // The sim's token endpoint was never asked either.
    expect(h.sim.counters.tokenCalls).toBe(0);
  });
});
