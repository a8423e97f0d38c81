import { describe, it, expect, afterEach, vi } from 'vitest';
import { createServer } from 'node:net';
import { readFileSync, statSync, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { KeapSimulator } from './simulator/keap-simulator.js';
import {
  startHarness,
  send,
  oauthEnv,
  tempDir,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_SCOPE,
  SIM_TENANT,
  type Harness,
  Out,
} from './harness.js';
import { ConfigError, loadConfig, type Config } from '../src/config/config.js';
import { AuthError, runAuth, type AuthOptions, type AuthResult } from '../src/cli/auth-command.js';
import { StateTable, buildAuthorizeUrl } from '../src/oauth/oauth-flow.js';
import { isGrant, type Grant } from '../src/tokens/grant.js';
import { storeFile } from './store-path.js';
import { unwritableDir, unwritableDirAvailable } from './unwritable-dir.js';

const CLIENT_KEY = 'client-key-oauth-0123456789';
const PROXY_REDIRECT = 'http://127.0.0.1:8080/oauth/callback';

/** A port nothing listens on right now, for a redirect URI the auth command then listens on. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function storedGrant(config: Config): Grant {
  const parsed: unknown = JSON.parse(readFileSync(storeFile(config), 'utf8'));
  if (!isGrant(parsed)) throw new Error('the store does not hold a grant');
  return parsed;
}

function expectNoSecret(text: string, secrets: string[]): void {
  for (const secret of secrets) expect(text, 'a secret was printed').not.toContain(secret);
}

describe('StateTable', () => {
  it('accepts each state it issued once, and none after expiry', () => {
    let now = 1_000_000;
    const table = new StateTable({ ttlMs: 600_000, now: () => now });
    const a = table.issue();
    const b = table.issue();
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(a).not.toBe(b);
    expect(table.consume('not-issued')).toBe(false);
    expect(table.consume(a)).toBe(true);
    expect(table.consume(a)).toBe(false);
    now += 600_001;
    expect(table.consume(b)).toBe(false);
  });

  it('keeps at most `max` outstanding, dropping the oldest', () => {
    const table = new StateTable({ max: 3 });
    const states = [table.issue(), table.issue(), table.issue(), table.issue()];
    expect(table.size).toBe(3);
    expect(table.consume(states[0] as string)).toBe(false);
    expect(states.slice(1).map((s) => table.consume(s))).toEqual([true, true, true]);
  });

  it('builds the authorize URL Keap documents', () => {
    const url = buildAuthorizeUrl(
      new URL('https://accounts.infusionsoft.com/app/oauth/authorize'),
      'the-id',
      'https://example.com/cb?x=1',
      'st',
    );
    expect(url.origin + url.pathname).toBe('https://accounts.infusionsoft.com/app/oauth/authorize');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      client_id: 'the-id',
      redirect_uri: 'https://example.com/cb?x=1',
      response_type: 'code',
      scope: 'full',
      state: 'st',
    });
  });
});

describe('keap-proxy auth', () => {
  let sim: KeapSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  async function setup(
    redirectUri: string | undefined,
    extra: Record<string, string> = {},
  ): Promise<{ sim: KeapSimulator; config: Config }> {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const env: Record<string, string> = { ...oauthEnv(sim, dir), KEAP_REFRESH_TOKEN: '', ...extra };
    if (redirectUri !== undefined) env.KEAP_REDIRECT_URI = redirectUri;
    return { sim, config: loadConfig({ env, cwd: dir }) };
  }

  interface Listening {
    authorizeUrl: URL;
    state: string;
    callbackUrl: string;
  }

  /** Starts the command in listener mode and waits until it listens (or fails first). */
  async function startListening(
    options: Omit<AuthOptions, 'onListening'>,
  ): Promise<{ result: Promise<AuthResult>; info: Listening }> {
    let listening!: (info: Listening) => void;
    const ready = new Promise<Listening>((resolve) => (listening = resolve));
    const result = runAuth({ ...options, onListening: listening });
    const info = await Promise.race([
      ready,
      result.then(() => Promise.reject(new Error('runAuth finished before listening'))),
    ]);
    return { result, info };
  }

  function callback(info: Listening, query: Record<string, string>) {
    const u = new URL(info.callbackUrl);
    return send(u.origin, 'GET', `${u.pathname}?${new URLSearchParams(query).toString()}`);
  }

  it('--code: exchanges the code with the client credentials in the body, stores the grant 0600, prints no secret', async () => {
    const redirect = 'https://app.example.com/keap/callback';
    const { sim, config } = await setup(redirect);
    const code = sim.issueAuthorizationCode(redirect);
    const out = new Out();
    const result = await runAuth({ config, out, code });

    expect(result).toEqual({
      outcome: 'authorized',
      summary: { tenant: SIM_TENANT, accessExpiresAt: expect.any(String), store: storeFile(config) },
    });
    expect(sim.counters.codeGrants).toBe(1);
    const request = sim.lastTokenRequests.at(-1);
    expect(request?.headers.authorization).toBeUndefined();
    expect(request?.headers['content-type']).toMatch(/^application\/x-www-form-urlencoded/);
    expect(Object.fromEntries(new URLSearchParams(request?.body.toString('utf8')))).toEqual({
      client_id: SIM_CLIENT_ID,
      client_secret: SIM_CLIENT_SECRET,
      code,
      grant_type: 'authorization_code',
      redirect_uri: redirect,
    });

    const grant = storedGrant(config);
    expect(grant.scope).toBe(SIM_SCOPE);
    expect(grant.refreshToken).toBe(sim.currentRefreshToken());
    expect(statSync(storeFile(config)).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(storeFile(config))).mode & 0o777).toBe(0o700);
    expect(out.text).toContain(`Authorized for ${SIM_TENANT}`);
    expect(out.text).toContain(new Date(grant.accessExpiresAt).toISOString());
    expect(out.text).toContain(storeFile(config));
    expectNoSecret(out.text, [grant.accessToken, grant.refreshToken, SIM_CLIENT_SECRET, code]);
  });

  it('--code with a code Keap refuses fails and stores nothing', async () => {
    const { config } = await setup('https://app.example.com/cb');
    const err = await runAuth({ config, out: new Out(), code: 'made-up-code' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/refused the authorization code/);
    expect(existsSync(storeFile(config))).toBe(false);
  });

  it('an https redirect URI: prints the URL and how to paste the code; --state is checked against it', async () => {
    const redirect = 'https://app.example.com/keap/callback';
    const { sim, config } = await setup(redirect);
    const out = new Out();
    const pending = await runAuth({ config, out });
    expect(pending.outcome).toBe('pending');
    const url = new URL(pending.outcome === 'pending' ? pending.authorizeUrl : '');
    const state = url.searchParams.get('state') ?? '';
    expect(out.text).toContain(url.href);
    expect(out.text).toContain('keap-proxy auth --code CODE --state STATE');
    expectNoSecret(out.text, [SIM_CLIENT_SECRET]);

    // A state that is not the printed one is refused before any code exchange.
    const wrong = await runAuth({
      config,
      out: new Out(),
      code: sim.issueAuthorizationCode(redirect),
      state: 'another-state',
    }).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(AuthError);
    expect((wrong as Error).message).toMatch(/does not match .* that login is still pending/);
    expect(sim.counters.tokenCalls).toBe(0);
    // A mistyped state does not cancel the pending login: the right one still passes.
    const ok = await runAuth({ config, out: new Out(), code: sim.issueAuthorizationCode(redirect), state });
    expect(ok.outcome).toBe('authorized');
    expect(sim.counters.codeGrants).toBe(1);
    // Its code was used: that state passes no more.
    const replayed = await runAuth({
      config,
      out: new Out(),
      code: sim.issueAuthorizationCode(redirect),
      state,
    }).catch((e: unknown) => e);
    expect(replayed).toBeInstanceOf(AuthError);
    expect((replayed as Error).message).toMatch(/--state: no login is pending/);
    expect(sim.counters.codeGrants).toBe(1);
  });

  it('a pending login expires: its state passes no more after 10 minutes', async () => {
    const redirect = 'https://app.example.com/keap/callback';
    const { sim, config } = await setup(redirect);
    let now = Date.parse('2026-11-20T12:00:00.000Z');
    const pending = await runAuth({ config, out: new Out(), now: () => now });
    const state = new URL(pending.outcome === 'pending' ? pending.authorizeUrl : '').searchParams.get('state') ?? '';
    now += 10 * 60_000;
    const late = await runAuth({
      config,
      out: new Out(),
      code: sim.issueAuthorizationCode(redirect),
      state,
      now: () => now,
    }).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(AuthError);
    expect((late as Error).message).toMatch(/no login is pending/);
    expect(sim.counters.tokenCalls).toBe(0);
  });

  it.each(['print the authorize URL', 'exchange a code'] as const)(
    'a token store that cannot be written fails before it would %s: nothing asked of Keap, the message names the store',
    async (what) => {
      const redirect = 'https://app.example.com/keap/callback';
      const blocker = path.join(tempDir(), 'a-file');
      writeFileSync(blocker, '');
      // The store's directory would have to be made inside a plain file: it cannot be (ENOTDIR), even as root.
      const { sim, config } = await setup(redirect, { TOKEN_STORE: path.join(blocker, 'store', 'tokens.json') });
      const out = new Out();
      const err = await runAuth({
        config,
        out,
        code: what === 'exchange a code' ? sim.issueAuthorizationCode(redirect) : undefined,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect((err as Error).message).toMatch(
        new RegExp(
          `^TOKEN_STORE: token store directory ${path.join(blocker, 'store')} cannot be created \\(ENOTDIR\\).*Nothing was asked of Keap`,
        ),
      );
      expect(out.text).not.toContain('Open this URL');
      expect(out.text).not.toContain(sim.url);
      expect(sim.counters.tokenCalls).toBe(0);
    },
  );

  it.runIf(unwritableDirAvailable())(
    'a token store directory this user cannot write: refused before the authorize URL, naming the directory and what to do',
    async () => {
      const redirect = 'https://app.example.com/keap/callback';
      const dir = unwritableDir();
      const { sim, config } = await setup(redirect, { TOKEN_STORE: path.join(dir, 'tokens.json') });
      const out = new Out();
      const err = await runAuth({ config, out }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect((err as Error).message).toMatch(
        new RegExp(
          `^TOKEN_STORE: token store directory ${dir} cannot be written by this process \\((EACCES|EPERM|EROFS)`,
        ),
      );
      expect((err as Error).message).toMatch(/point TOKEN_STORE into a writable directory/);
      expect(out.text).not.toContain('Open this URL');
      expect(sim.counters.tokenCalls).toBe(0);
    },
  );

  it('listens on the redirect URI, exchanges the callback with our state, answers the browser and stores the grant', async () => {
    const port = await freePort();
    const redirect = `http://127.0.0.1:${port}/keap/callback`;
    const { sim, config } = await setup(redirect, {
      KEAP_AUTHORIZE_URL: 'https://accounts.example.test/app/oauth/authorize',
    });
    const out = new Out();
    const { result, info } = await startListening({ config, out, timeoutMs: 10_000 });

    expect(info.callbackUrl).toBe(redirect);
    expect(info.authorizeUrl.origin + info.authorizeUrl.pathname).toBe(
      'https://accounts.example.test/app/oauth/authorize',
    );
    expect(Object.fromEntries(info.authorizeUrl.searchParams)).toEqual({
      client_id: SIM_CLIENT_ID,
      redirect_uri: redirect,
      response_type: 'code',
      scope: 'full',
      state: info.state,
    });
    expect(out.text).toContain(info.authorizeUrl.href);

    // Wrong path: not ours.
    expect((await send(`http://127.0.0.1:${port}`, 'GET', '/favicon.ico')).status).toBe(404);
    // The user logs in on Keap's page; Keap redirects the browser to us.
    const code = sim.issueAuthorizationCode(redirect);
    const page = await callback(info, { code, state: info.state });
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.text()).toContain('You can close this tab');

    const done = await result;
    expect(done.outcome).toBe('authorized');
    const grant = storedGrant(config);
    expect(grant.refreshToken).toBe(sim.currentRefreshToken());
    expect(sim.counters.codeGrants).toBe(1);
    expectNoSecret(out.text + page.text(), [grant.accessToken, grant.refreshToken, SIM_CLIENT_SECRET, code]);
    // The listener is gone.
    await expect(send(`http://127.0.0.1:${port}`, 'GET', '/keap/callback')).rejects.toThrow();
  });

  it('refuses a callback with a wrong state and keeps waiting for the right one', async () => {
    const port = await freePort();
    const redirect = `http://127.0.0.1:${port}/cb`;
    const { sim, config } = await setup(redirect);
    const out = new Out();
    const { result, info } = await startListening({ config, out, timeoutMs: 10_000 });

    const forged = await callback(info, { code: sim.issueAuthorizationCode(redirect), state: 'forged-state' });
    expect(forged.status).toBe(400);
    expect(forged.text()).toContain('still waiting');
    const noState = await callback(info, { code: sim.issueAuthorizationCode(redirect) });
    expect(noState.status).toBe(400);
    // A forged error callback cannot cancel the flow either.
    expect((await callback(info, { error: 'access_denied', state: 'forged-state' })).status).toBe(400);
    expect(sim.counters.tokenCalls).toBe(0);
    expect(existsSync(storeFile(config))).toBe(false);

    const ok = await callback(info, { code: sim.issueAuthorizationCode(redirect), state: info.state });
    expect(ok.status).toBe(200);
    expect((await result).outcome).toBe('authorized');
    expect(sim.counters.codeGrants).toBe(1);
  });

  it("an error=access_denied callback fails the command with Keap's error", async () => {
    const port = await freePort();
    const { config } = await setup(`http://127.0.0.1:${port}/cb`);
    const { result, info } = await startListening({ config, out: new Out(), timeoutMs: 10_000 });
    const page = await callback(info, {
      error: 'access_denied',
      error_description: 'The user denied access',
      state: info.state,
    });
    expect(page.status).toBe(400);
    const err = await result.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/access_denied \(The user denied access\)/);
    expect(existsSync(storeFile(config))).toBe(false);
  });

  it('gives up after the timeout, not before, and frees the port', async () => {
    const port = await freePort();
    const { config } = await setup(`http://127.0.0.1:${port}/cb`);
    // The timeout runs on fake time (setTimeout only); the listener and the requests are real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const { result, info } = await startListening({ config, out: new Out(), timeoutMs: 300_000 });
      let ended = false;
      void result.catch(() => undefined).finally(() => (ended = true));
      await vi.advanceTimersByTimeAsync(299_999);
      expect(ended).toBe(false);
      // Still listening a moment before the timeout: a stray callback is refused, and it waits on.
      expect((await callback(info, { code: 'c', state: 'not-this-one' })).status).toBe(400);
      await vi.advanceTimersByTimeAsync(1);
      const err = await result.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect((err as Error).message).toMatch(/No callback from Keap within 300 s/);
    } finally {
      vi.useRealTimers();
    }
    await expect(send(`http://127.0.0.1:${port}`, 'GET', '/cb')).rejects.toThrow();
  });

  it('a port already taken fails with a message, not a hang', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const { config } = await setup(`http://127.0.0.1:${port}/cb`);
      await expect(runAuth({ config, out: new Out(), timeoutMs: 10_000 })).rejects.toThrow(
        /Cannot listen for the callback on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/,
      );
    } finally {
      blocker.close();
    }
  });

  it('needs KEAP_REDIRECT_URI and OAuth mode, and says so', async () => {
    const { config } = await setup(undefined);
    await expect(runAuth({ config, out: new Out() })).rejects.toThrow(ConfigError);
    await expect(runAuth({ config, out: new Out() })).rejects.toThrow(/KEAP_REDIRECT_URI: required/);
    const keyConfig = loadConfig({
      env: { KEAP_API_KEY: 'KeapAK-x', KEAP_REDIRECT_URI: 'http://127.0.0.1:1/cb' },
      cwd: tempDir(),
    });
    await expect(runAuth({ config: keyConfig, out: new Out() })).rejects.toThrow(
      /needs OAuth mode: set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET/,
    );
  });
});

describe('/oauth/start and /oauth/callback', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  async function start(headers: Record<string, string> = {}): Promise<{ location: URL; state: string }> {
    const r = await send(h!.proxy.url, 'GET', '/oauth/start', { headers });
    expect(r.status).toBe(302);
    const location = new URL(String(r.headers.location));
    expect(r.json()).toMatchObject({ authorizeUrl: location.href });
    return { location, state: location.searchParams.get('state') ?? '' };
  }

  it('a proxy with no grant is authorized through the endpoints, and then serves with the new token', async () => {
    h = await startHarness({ mode: 'oauth', env: { KEAP_REFRESH_TOKEN: '', KEAP_REDIRECT_URI: PROXY_REDIRECT } });
    expect((await send(h.proxy.url, 'GET', '/readyz')).status).toBe(503);
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(503);

    const { location, state } = await start();
    expect(location.origin + location.pathname).toBe('https://accounts.infusionsoft.com/app/oauth/authorize');
    expect(Object.fromEntries(location.searchParams)).toEqual({
      client_id: SIM_CLIENT_ID,
      redirect_uri: PROXY_REDIRECT,
      response_type: 'code',
      scope: 'full',
      state,
    });
    expect(state).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const code = h.sim.issueAuthorizationCode(PROXY_REDIRECT);
    const page = await send(
      h.proxy.url,
      'GET',
      `/oauth/callback?code=${encodeURIComponent(code)}&state=${encodeURIComponent(state)}`,
    );
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.text()).toContain(SIM_TENANT);
    expect(h.sim.counters.codeGrants).toBe(1);
    expect(h.sim.lastTokenRequests.at(-1)?.body.toString()).toContain('grant_type=authorization_code');

    const ready = await send(h.proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'ready', tenant: SIM_TENANT });
    const grant = storedGrant(h.config);
    expect(grant.refreshToken).toBe(h.sim.currentRefreshToken());
    const echo = await send(h.proxy.url, 'GET', '/crm/rest/v1/__echo');
    expect(echo.status).toBe(200);
    expect(echo.json<{ headers: Record<string, string> }>().headers.authorization).toBe(`Bearer ${grant.accessToken}`);
    expect(h.sim.lastRequests.some((r) => r.url.startsWith('/oauth/'))).toBe(false);

    // One use: the same state again is refused, and Keap is not asked.
    const again = await send(
      h.proxy.url,
      'GET',
      `/oauth/callback?code=${encodeURIComponent(h.sim.issueAuthorizationCode(PROXY_REDIRECT))}&state=${encodeURIComponent(state)}`,
    );
    expect(again.status).toBe(400);
    expect(again.json()).toMatchObject({ error: 'invalid_state', message: expect.stringContaining('/oauth/start') });
    expect(h.sim.counters.codeGrants).toBe(1);
    // The log names the events, never the code or a token.
    const logs = h.logs.text();
    expect(h.logs.entries.some((e) => e.event === 'oauth_authorized')).toBe(true);
    expectNoSecret(logs, [code, grant.accessToken, grant.refreshToken, state]);
  });

  it('refuses unknown states, missing codes and Keap error callbacks with 400 JSON', async () => {
    h = await startHarness({ mode: 'oauth', env: { KEAP_REDIRECT_URI: PROXY_REDIRECT } });
    const unknown = await send(
      h.proxy.url,
      'GET',
      `/oauth/callback?code=${h.sim.issueAuthorizationCode(PROXY_REDIRECT)}&state=never-issued`,
    );
    expect(unknown.status).toBe(400);
    expect(unknown.json()).toMatchObject({ error: 'invalid_state' });
    expect((await send(h.proxy.url, 'GET', '/oauth/callback')).json()).toMatchObject({ error: 'invalid_state' });

    const { state } = await start();
    const noCode = await send(h.proxy.url, 'GET', `/oauth/callback?state=${state}`);
    expect(noCode.status).toBe(400);
    expect(noCode.json()).toMatchObject({ error: 'invalid_request' });

    const { state: s2 } = await start();
    const denied = await send(
      h.proxy.url,
      'GET',
      `/oauth/callback?error=access_denied&error_description=User+said+no&state=${s2}`,
    );
    expect(denied.status).toBe(400);
    expect(denied.json()).toMatchObject({
      error: 'authorization_denied',
      message: expect.stringContaining('access_denied (User said no)'),
    });

    const { state: s3 } = await start();
    const badCode = await send(h.proxy.url, 'GET', `/oauth/callback?code=not-a-code&state=${s3}`);
    expect(badCode.status).toBe(400);
    expect(badCode.json()).toMatchObject({ error: 'code_rejected' });
    expect(h.sim.counters.codeGrants).toBe(0);
    expect((await send(h.proxy.url, 'POST', '/oauth/start')).status).toBe(405);
  });

  it('/oauth/start needs a client key when PROXY_CLIENT_KEYS is set; the callback does not', async () => {
    h = await startHarness({
      mode: 'oauth',
      env: { KEAP_REFRESH_TOKEN: '', KEAP_REDIRECT_URI: PROXY_REDIRECT, PROXY_CLIENT_KEYS: CLIENT_KEY },
    });
    for (const headers of [
      {},
      { authorization: 'Bearer wrong-key-wrong-key-1' },
      { authorization: `Basic ${CLIENT_KEY}` },
    ]) {
      const r = await send(h.proxy.url, 'GET', '/oauth/start', { headers });
      expect(r.status).toBe(401);
      expect(r.json()).toMatchObject({ error: 'client_unauthorized' });
      expect(r.headers.location).toBeUndefined();
    }
    const { state } = await start({ authorization: `Bearer ${CLIENT_KEY}` });
    const page = await send(
      h.proxy.url,
      'GET',
      `/oauth/callback?code=${h.sim.issueAuthorizationCode(PROXY_REDIRECT)}&state=${state}`,
    );
    expect(page.status).toBe(200);
    expect((await send(h.proxy.url, 'GET', '/readyz')).status).toBe(200);
  });

  it('exist only in OAuth mode, and need KEAP_REDIRECT_URI', async () => {
    h = await startHarness({ mode: 'key' });
    for (const p of ['/oauth/start', '/oauth/callback?code=x&state=y']) {
      const r = await send(h.proxy.url, 'GET', p);
      expect(r.status).toBe(404);
      expect(r.json()).toMatchObject({ error: 'not_found', message: expect.stringContaining('OAuth mode') });
    }
    expect(h.sim.counters.apiCalls).toBe(0);
    await h.close();

    h = await startHarness({ mode: 'oauth' });
    for (const p of ['/oauth/start', '/oauth/callback?code=x&state=y']) {
      const r = await send(h.proxy.url, 'GET', p);
      expect(r.status).toBe(503);
      expect(r.json()).toMatchObject({
        error: 'redirect_uri_not_configured',
        message: expect.stringContaining('KEAP_REDIRECT_URI'),
      });
    }
  });
});
