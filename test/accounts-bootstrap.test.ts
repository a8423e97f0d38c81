// Bootstrap per account (issue 12, point 5): `auth`, `token status|export|import` with
// --account, and /oauth/start?account=<id> with its callback, against the real simulator.
import { describe, it, expect, afterEach } from 'vitest';
import { createServer } from 'node:net';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { KeapSimulator } from './simulator/keap-simulator.js';
import {
  harnessPerTest,
  send,
  oauthEnv,
  tempDir,
  Out,
  SIM_CLIENT_ID,
  SIM_CLIENT_SECRET,
  SIM_TENANT,
  type Harness,
  runCommand,
} from './harness.js';
import { accountNamed, loadConfig, type Config } from '../src/config/config.js';
import { runAuth, type AuthResult } from '../src/cli/auth-command.js';
import { OAuthFlow, StateTable } from '../src/oauth/oauth-flow.js';
import { isGrant, type Grant } from '../src/tokens/grant.js';

const PROXY_REDIRECT = 'http://127.0.0.1:8080/oauth/callback';
/** Account b's own redirect URI: it names the account, which the callback checks against the state. */
const B_REDIRECT = 'http://127.0.0.1:8080/oauth/callback?account=b';
/** An https redirect URI: `auth` takes the code pasted (--code), no listener. */
const HTTPS_REDIRECT = 'https://proxy.example.com/oauth/callback';
const OTHER_APP = 'xy987';

const credentials = { KEAP_CLIENT_ID: SIM_CLIENT_ID, KEAP_CLIENT_SECRET: SIM_CLIENT_SECRET };

/** Writes ACCOUNTS_FILE into `dir`; returns its path. */
function accountsFile(dir: string, accounts: Record<string, Record<string, string>>): string {
  const file = path.join(dir, 'accounts.json');
  writeFileSync(file, JSON.stringify({ accounts }));
  return file;
}

/**
 * The process settings for a proxy (or command) serving ACCOUNTS_FILE's accounts: the
 * simulator's URLs and the process's token store, but no top-level credentials unless asked,
 * so there is no default account.
 */
function accountsEnv(
  sim: KeapSimulator,
  dir: string,
  accounts: Record<string, Record<string, string>>,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    ...oauthEnv(sim, dir),
    KEAP_CLIENT_ID: '',
    KEAP_CLIENT_SECRET: '',
    KEAP_REFRESH_TOKEN: '',
    ACCOUNTS_FILE: accountsFile(dir, accounts),
    ...extra,
  };
}

function storeOf(config: Config, id: string): string {
  const store = accountNamed(config, id).tokenStore;
  if (store.kind !== 'file') throw new Error('this test needs a file token store');
  return store.path;
}

function grantIn(file: string): Grant {
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!isGrant(parsed)) throw new Error(`${file} does not hold a grant`);
  return parsed;
}

const cli = (argv: string[], env: Record<string, string>, cwd: string, stdin = '') =>
  runCommand(argv, { env, cwd, stdin });

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('keap-proxy auth and token --account', () => {
  let sim: KeapSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  it("auth --account stores the grant in that account's store only; token status --account reads it", async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const env = accountsEnv(
      sim,
      dir,
      { a: { ...credentials }, b: { ...credentials } },
      { KEAP_REDIRECT_URI: HTTPS_REDIRECT },
    );
    const config = loadConfig({ env, cwd: dir });
    // Each account's grant goes beside the process's store, under accounts/<id>.json.
    expect(storeOf(config, 'a')).toBe(path.join(dir, 'store', 'accounts', 'a.json'));
    expect(storeOf(config, 'b')).toBe(path.join(dir, 'store', 'accounts', 'b.json'));

    const code = sim.issueAuthorizationCode(HTTPS_REDIRECT);
    const auth = await cli(['auth', '--account', 'a', `--code=${code}`], env, dir);
    expect(auth).toMatchObject({ code: 0, err: '' });
    expect(auth.out).toContain(`Authorized for ${SIM_TENANT}`);
    expect(auth.out).toContain(storeOf(config, 'a'));
    const grant = grantIn(storeOf(config, 'a'));
    expect(grant.refreshToken).toBe(sim.currentRefreshToken());
    expect(existsSync(storeOf(config, 'b'))).toBe(false);
    expect(existsSync(path.join(dir, 'store', 'tokens.json'))).toBe(false);

    const status = await cli(['token', 'status', '--account', 'a', '--json'], env, dir);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.out)).toMatchObject({
      account: 'a',
      store: storeOf(config, 'a'),
      grant: { tenant: SIM_TENANT, accessToken: { present: true, expired: false } },
    });
    const human = await cli(['token', 'status', '--account', 'a'], env, dir);
    expect(human.out).toContain(`Grant of account "a" in ${storeOf(config, 'a')}`);
    expect(human.out).not.toContain(grant.refreshToken);

    // b has none: status says how to authorize b, by name.
    const none = await cli(['token', 'status', '--account', 'b'], env, dir);
    expect(none.code).toBe(1);
    expect(none.out).toContain('No grant stored for account "b"');
    expect(none.out).toContain('keap-proxy auth --account b');
    expect(none.out).toContain('/oauth/start?account=b');

    // export --account: a's grant, and b's none.
    const exported = await cli(['token', 'export', '--account', 'a'], env, dir);
    expect(exported.code).toBe(0);
    expect(JSON.parse(exported.out)).toEqual(grant);
    expect((await cli(['token', 'export', '--account', 'b'], env, dir)).code).toBe(1);
    // import --account: a's grant into b's store, and no other.
    const imported = await cli(['token', 'import', '--account', 'b', '--from', '-'], env, dir, exported.out);
    expect(imported.code).toBe(0);
    expect(grantIn(storeOf(config, 'b'))).toEqual(grant);
    expect(grantIn(storeOf(config, 'a'))).toEqual(grant);
  });

  it("auth --account listens on that account's own KEAP_REDIRECT_URI; the others inherit the settings'", async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const port = await freePort();
    const own = `http://127.0.0.1:${port}/b/callback`;
    const env = accountsEnv(
      sim,
      dir,
      { a: { ...credentials }, b: { ...credentials, KEAP_REDIRECT_URI: own } },
      { KEAP_REDIRECT_URI: HTTPS_REDIRECT },
    );
    const config = loadConfig({ env, cwd: dir });
    const a = accountNamed(config, 'a').credentials;
    expect(a.mode === 'oauth' ? a.redirectUri : undefined).toBe(HTTPS_REDIRECT);

    let listening!: (info: { authorizeUrl: URL; state: string; callbackUrl: string }) => void;
    const ready = new Promise<{ authorizeUrl: URL; state: string; callbackUrl: string }>((r) => (listening = r));
    const result: Promise<AuthResult> = runAuth({
      config,
      out: new Out(),
      account: 'b',
      timeoutMs: 10_000,
      onListening: listening,
    });
    const info = await Promise.race([ready, result.then(() => Promise.reject(new Error('finished early')))]);
    expect(info.callbackUrl).toBe(own);
    expect(info.authorizeUrl.searchParams.get('redirect_uri')).toBe(own);
    const code = sim.issueAuthorizationCode(own);
    const page = await send(`http://127.0.0.1:${port}`, 'GET', `/b/callback?code=${code}&state=${info.state}`);
    expect(page.status).toBe(200);
    expect((await result).outcome).toBe('authorized');
    expect(grantIn(storeOf(config, 'b')).refreshToken).toBe(sim.currentRefreshToken());
    expect(existsSync(storeOf(config, 'a'))).toBe(false);
  });

  it('several accounts and no --account: each account command stops with exit 2 naming the accounts; so does an unknown id', async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const env = accountsEnv(
      sim,
      dir,
      { a: { ...credentials }, b: { ...credentials } },
      { KEAP_REDIRECT_URI: HTTPS_REDIRECT },
    );
    for (const argv of [
      ['auth'],
      ['auth', '--code', 'some-code'],
      ['token', 'status'],
      ['token', 'export'],
      ['token', 'import', '--from', '-'],
    ]) {
      const r = await cli(argv, env, dir, '{}');
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toBe(
        'keap-proxy: Invalid configuration:\n  - --account: 2 accounts are configured (ACCOUNTS_FILE) and none is the default; say which one this command is for with --account <id> (configured: a, b)\n',
      );
    }
    for (const argv of [
      ['auth', '--account', 'nope'],
      ['token', 'status', '--account', 'nope'],
      ['token', 'export', '--account=nope'],
      ['token', 'import', '--account', 'nope', '--from', '-'],
    ]) {
      const r = await cli(argv, env, dir, '{}');
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toContain('--account: no account "nope" is configured; name one of: a, b');
    }
    const empty = await cli(['token', 'status', '--account='], env, dir);
    expect(empty.code).toBe(2);
    expect(empty.err).toContain('--account needs an account id');
    // xmlrpc report reads logs, not an account's grant: it takes no --account.
    const report = await cli(['xmlrpc', 'report', '--account', 'a'], env, dir);
    expect(report.code).toBe(2);
    expect(report.err).toContain('unknown option "--account" for keap-proxy xmlrpc report');
    expect(sim.counters.tokenCalls).toBe(0);
    for (const id of ['a', 'b']) expect(existsSync(path.join(dir, 'store', 'accounts', `${id}.json`))).toBe(false);
  });

  it('auth --account and token import --account refuse a grant for another Keap app (KEAP_APP); the store keeps what it held', async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const env = accountsEnv(
      sim,
      dir,
      { a: { ...credentials, KEAP_APP: 'ab123' }, b: { ...credentials } },
      { KEAP_REDIRECT_URI: HTTPS_REDIRECT },
    );
    const config = loadConfig({ env, cwd: dir });
    const first = await cli(
      ['auth', '--account', 'a', `--code=${sim.issueAuthorizationCode(HTTPS_REDIRECT)}`],
      env,
      dir,
    );
    expect(first.code).toBe(0);
    const held = readFileSync(storeOf(config, 'a'), 'utf8');

    const other = sim.issueAuthorizationCode(HTTPS_REDIRECT, { tenant: OTHER_APP });
    const refused = await cli(['auth', '--account', 'a', `--code=${other}`], env, dir);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain(
      `the grant is for Keap app ${OTHER_APP}.infusionsoft.com, but this account is ab123.infusionsoft.com (KEAP_APP)`,
    );
    expect(refused.err).toContain('nothing was stored');
    expect(sim.counters.codeGrants).toBe(2);
    expect(readFileSync(storeOf(config, 'a'), 'utf8')).toBe(held);

    // The same grant imported: refused too. b names no app and takes any.
    const foreign: Grant = { ...grantIn(storeOf(config, 'a')), scope: `full|${OTHER_APP}.infusionsoft.com` };
    const imported = await cli(
      ['token', 'import', '--account', 'a', '--from', '-', '--force'],
      env,
      dir,
      JSON.stringify(foreign),
    );
    expect(imported.code).toBe(1);
    expect(imported.err).toContain(`not imported: the grant is for Keap app ${OTHER_APP}.infusionsoft.com`);
    expect(readFileSync(storeOf(config, 'a'), 'utf8')).toBe(held);
    expect(
      (await cli(['token', 'import', '--account', 'b', '--from', '-'], env, dir, JSON.stringify(foreign))).code,
    ).toBe(0);
  });
});

describe('/oauth/start?account=<id> and /oauth/callback', () => {
  const start = harnessPerTest(afterEach);

  /** A proxy serving accounts a and b of ACCOUNTS_FILE (no default one, unless `env` gives top-level credentials). */
  async function proxy(
    accounts: Record<string, Record<string, string>> = {
      a: { ...credentials },
      b: { ...credentials, KEAP_REDIRECT_URI: B_REDIRECT },
    },
    env: Record<string, string> = {},
  ): Promise<Harness> {
    const dir = tempDir();
    return start({
      mode: 'oauth',
      env: {
        KEAP_CLIENT_ID: '',
        KEAP_CLIENT_SECRET: '',
        KEAP_REFRESH_TOKEN: '',
        KEAP_REDIRECT_URI: PROXY_REDIRECT,
        TOKEN_STORE: path.join(dir, 'store', 'tokens.json'),
        ACCOUNTS_FILE: accountsFile(dir, accounts),
        ...env,
      },
    });
  }

  async function begin(
    h: Harness,
    query: string,
  ): Promise<{ location: URL; state: string; body: Record<string, unknown> }> {
    const r = await send(h.proxy.url, 'GET', `/oauth/start${query}`);
    expect(r.status, r.text()).toBe(302);
    const location = new URL(String(r.headers.location));
    return { location, state: location.searchParams.get('state') ?? '', body: r.json() };
  }

  function callback(h: Harness, query: Record<string, string>) {
    return send(h.proxy.url, 'GET', `/oauth/callback?${new URLSearchParams(query).toString()}`);
  }

  it("/oauth/start?account=a → callback: account a's grant, used under /accounts/a/; account b untouched", async () => {
    const h = await proxy();
    expect((await send(h.proxy.url, 'GET', '/accounts/a/crm/rest/v1/__echo')).status).toBe(503);

    const { location, state, body } = await begin(h, '?account=a');
    expect(body).toMatchObject({ account: 'a', authorizeUrl: location.href });
    // a's entry names no redirect URI: it inherits the settings'.
    expect(location.searchParams.get('redirect_uri')).toBe(PROXY_REDIRECT);
    expect(location.searchParams.get('client_id')).toBe(SIM_CLIENT_ID);
    // The idle account was started for the flow.
    expect(h.proxy.accounts.all().map((a) => a.id)).toContain('a');

    const code = h.sim.issueAuthorizationCode(PROXY_REDIRECT);
    const page = await callback(h, { code, state });
    expect(page.status).toBe(200);
    expect(page.text()).toContain('(account &#34;a&#34;)');
    expect(page.text()).toContain(SIM_TENANT);

    const grant = grantIn(storeOf(h.config, 'a'));
    expect(grant.refreshToken).toBe(h.sim.currentRefreshToken());
    expect(existsSync(storeOf(h.config, 'b'))).toBe(false);
    const echo = await send(h.proxy.url, 'GET', '/accounts/a/crm/rest/v1/__echo');
    expect(echo.status).toBe(200);
    expect(echo.json<{ headers: Record<string, string> }>().headers.authorization).toBe(`Bearer ${grant.accessToken}`);
    expect((await send(h.proxy.url, 'GET', '/readyz?account=a')).status).toBe(200);
    expect((await send(h.proxy.url, 'GET', '/accounts/b/crm/rest/v1/__echo')).status).toBe(503);
    expect(h.logs.entries.some((e) => e.event === 'oauth_authorized' && e.account === 'a')).toBe(true);
    expect(h.logs.text()).not.toContain(code);

    // b's flow uses b's own redirect URI.
    const b = await begin(h, '?account=b');
    expect(b.location.searchParams.get('redirect_uri')).toBe(B_REDIRECT);
  });

  it("/accounts/<id>/oauth/start is that account's own endpoint, never forwarded to Keap", async () => {
    const h = await proxy();
    const before = h.sim.counters.apiCalls;
    const { location, body } = await begin(h, '').catch(() => ({ location: undefined, body: undefined }));
    expect(location).toBeUndefined();
    expect(body).toBeUndefined();
    const r = await send(h.proxy.url, 'GET', '/accounts/b/oauth/start');
    expect(r.status).toBe(302);
    expect(r.json()).toMatchObject({ account: 'b' });
    expect(new URL(String(r.headers.location)).searchParams.get('redirect_uri')).toBe(B_REDIRECT);
    const bad = await send(h.proxy.url, 'GET', '/accounts/%E0/oauth/start');
    expect(bad.status).toBe(404);
    expect(bad.json()).toMatchObject({ error: 'unknown_account' });
    expect(h.sim.counters.apiCalls).toBe(before);
  });

  it('/oauth/start without a default account, or with an unknown one, answers JSON saying what to pass', async () => {
    const h = await proxy();
    const none = await send(h.proxy.url, 'GET', '/oauth/start');
    expect(none.status).toBe(400);
    expect(none.json()).toEqual({
      error: 'account_required',
      message:
        'This proxy serves several Keap accounts and none is the default: name one, /oauth/start?account=<id> (configured: a, b).',
    });
    const unknown = await send(h.proxy.url, 'GET', '/oauth/start?account=nope');
    expect(unknown.status).toBe(404);
    expect(unknown.json()).toMatchObject({ error: 'unknown_account', message: expect.stringContaining('"nope"') });
    // A callback with no state we know cannot be anyone's.
    const stray = await callback(h, { code: 'c', state: 'never-issued' });
    expect(stray.status).toBe(400);
    expect(stray.json()).toMatchObject({ error: 'invalid_state' });
    expect(h.sim.counters.tokenCalls).toBe(0);
  });

  it("/oauth/start without an account is the default account's, beside ACCOUNTS_FILE's", async () => {
    const h = await proxy({ a: { ...credentials } }, { ...credentials });
    const { state, body } = await begin(h, '');
    expect(body.account).toBeUndefined();
    const page = await callback(h, { code: h.sim.issueAuthorizationCode(PROXY_REDIRECT), state });
    expect(page.status).toBe(200);
    expect(grantIn(storeOf(h.config, 'default')).refreshToken).toBe(h.sim.currentRefreshToken());
    expect(existsSync(storeOf(h.config, 'a'))).toBe(false);
  });

  it("a state issued for account a cannot complete account b's flow, nor cancel a's", async () => {
    const h = await proxy();
    const a = await begin(h, '?account=a');
    await begin(h, '?account=b');
    // b's redirect URI carries account=b; a's state with it is refused before Keap is asked.
    const crossed = await callback(h, {
      account: 'b',
      code: h.sim.issueAuthorizationCode(B_REDIRECT),
      state: a.state,
    });
    expect(crossed.status).toBe(400);
    expect(crossed.json()).toMatchObject({ error: 'invalid_state' });
    expect(h.sim.counters.tokenCalls).toBe(0);
    expect(existsSync(storeOf(h.config, 'a'))).toBe(false);
    expect(existsSync(storeOf(h.config, 'b'))).toBe(false);

    // a's flow still waits for its own callback, and completes for a alone.
    const ok = await callback(h, { code: h.sim.issueAuthorizationCode(PROXY_REDIRECT), state: a.state });
    expect(ok.status).toBe(200);
    expect(existsSync(storeOf(h.config, 'a'))).toBe(true);
    expect(existsSync(storeOf(h.config, 'b'))).toBe(false);
    expect((await callback(h, { code: 'x', state: a.state })).status).toBe(400);
  });

  it("one state table, several flows: a flow takes only its own account's states", async () => {
    const states = new StateTable();
    const exchanged: string[] = [];
    const flow = (owner: string) =>
      new OAuthFlow({
        authorizeUrl: new URL('https://accounts.example.test/authorize'),
        clientId: 'id',
        redirectUri: PROXY_REDIRECT,
        client: {
          exchangeCode: (code) => {
            exchanged.push(`${owner}:${code}`);
            return Promise.reject(new Error('not reached in this test'));
          },
        },
        keep: () => Promise.resolve(),
        states,
        owner,
        restartHint: 'start again',
      });
    const [a, b] = [flow('a'), flow('b')];
    const { state } = a.begin();
    expect(states.ownerOf(state)).toBe('a');
    await expect(b.complete(new URLSearchParams({ code: 'c', state }))).rejects.toMatchObject({
      code: 'invalid_state',
    });
    expect(exchanged).toEqual([]);
    expect(states.ownerOf(state)).toBe('a');
    await expect(a.complete(new URLSearchParams({ code: 'c', state }))).rejects.toThrow('not reached');
    expect(exchanged).toEqual(['a:c']);
    expect(states.ownerOf(state)).toBeUndefined();
  });

  it('a grant for another Keap app (KEAP_APP) is refused at /oauth/callback with 409; the store and the grant in use stay', async () => {
    const h = await proxy({ a: { ...credentials, KEAP_APP: 'ab123' }, b: { ...credentials } });
    const first = await begin(h, '?account=a');
    expect((await callback(h, { code: h.sim.issueAuthorizationCode(PROXY_REDIRECT), state: first.state })).status).toBe(
      200,
    );
    const held = readFileSync(storeOf(h.config, 'a'), 'utf8');
    const inUse = grantIn(storeOf(h.config, 'a')).accessToken;

    const { state } = await begin(h, '?account=a');
    const refused = await callback(h, {
      code: h.sim.issueAuthorizationCode(PROXY_REDIRECT, { tenant: OTHER_APP }),
      state,
    });
    expect(refused.status).toBe(409);
    expect(refused.json()).toEqual({
      error: 'grant_for_another_app',
      message: `Refused: the grant is for Keap app ${OTHER_APP}.infusionsoft.com, but this account is ab123.infusionsoft.com (KEAP_APP); sign in to ab123.infusionsoft.com and authorize again (nothing was stored).`,
    });
    expect(h.sim.counters.codeGrants).toBe(2);
    expect(readFileSync(storeOf(h.config, 'a'), 'utf8')).toBe(held);
    const echo = await send(h.proxy.url, 'GET', '/accounts/a/crm/rest/v1/__echo');
    expect(echo.json<{ headers: Record<string, string> }>().headers.authorization).toBe(`Bearer ${inUse}`);
    expect(
      h.logs.entries.some((e) => e.event === 'oauth_callback_refused' && e.reason === 'grant_for_another_app'),
    ).toBe(true);

    // b names no app: the same kind of grant is taken.
    const b = await begin(h, '?account=b');
    const taken = await callback(h, {
      code: h.sim.issueAuthorizationCode(PROXY_REDIRECT, { tenant: OTHER_APP }),
      state: b.state,
    });
    expect(taken.status).toBe(200);
    expect(grantIn(storeOf(h.config, 'b')).scope).toBe(`full|${OTHER_APP}.infusionsoft.com`);
  });
});
