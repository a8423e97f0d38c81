// Several Keap accounts behind one proxy (ACCOUNTS_FILE): which account a request is for (its
// path prefix, its host name, the port it came in on), what an unknown one gets, the checks
// the file gets at start, per-account readiness, accounts made on first use and let go
// beyond ACCOUNTS_ACTIVE_MAX, and a reload that drains what it removes.
import { describe, it, expect, afterEach } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { readAccountsFile } from '../src/config/accounts-file.js';
import { SETTINGS } from '../src/config/settings.js';
import net from 'node:net';
import path from 'node:path';
import { ConfigError, loadConfig } from '../src/config/config.js';
import { reloadOnSignal } from '../src/cli/reload-on-signal.js';
import { parseMethodResponse, writeMethodCall } from '../src/keap/xmlrpc-codec.js';
import { KeapSimulator } from './simulator/keap-simulator.js';
import { accountsHarnessPerTest, send, tempDir, until, type AccountEntries } from './harness.js';

const KEYS = { a: 'KeapAK-account-a', b: 'KeapAK-account-b', c: 'KeapAK-account-c', d: 'KeapAK-account-d' };

const start = accountsHarnessPerTest(afterEach);

function accountsJson(accounts: AccountEntries): string {
  return JSON.stringify({ accounts });
}

/** A proxy serving `accounts` from ACCOUNTS_FILE, over a simulator that takes every key of KEYS. */
function rig(accounts: AccountEntries, env: Record<string, string> = {}) {
  return start({ accounts, env, sim: { apiKeys: Object.values(KEYS) } });
}

const key = (account: keyof typeof KEYS) => ({ KEAP_API_KEY: KEYS[account] });

/** What the simulator received last: its path and the key it carried. */
function last(sim: KeapSimulator): { url: string; key: unknown } {
  const r = sim.lastRequests.at(-1);
  return { url: r?.url ?? '', key: r?.headers['x-keap-api-key'] };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

describe('routing to an account', () => {
  it('by path prefix: /accounts/<id>/ is removed before forwarding, and each account sends its own key', async () => {
    const { sim, proxy } = await rig({ a: key('a'), b: key('b') });
    expect((await send(proxy.url, 'GET', '/accounts/a/crm/rest/v1/contacts?limit=2')).status).toBe(200);
    expect(last(sim)).toEqual({ url: '/crm/rest/v1/contacts?limit=2', key: KEYS.a });
    expect((await send(proxy.url, 'GET', '/accounts/b/crm/rest/v1/contacts')).status).toBe(200);
    expect(last(sim)).toEqual({ url: '/crm/rest/v1/contacts', key: KEYS.b });
    // Only a whole path segment names an account.
    expect((await send(proxy.url, 'GET', '/accounts/ab/crm/rest/v1/contacts')).json()).toMatchObject({
      error: 'unknown_account',
    });
  });

  it('XML-RPC at /accounts/<id>/api/xmlrpc reaches Keap XML-RPC with that account key', async () => {
    const { sim, proxy } = await rig({ a: key('a'), b: key('b') });
    const body = writeMethodCall({ methodName: 'DataService.getAppSetting', params: [{ type: 'string', value: 'x' }] });
    await send(proxy.url, 'POST', '/accounts/b/api/xmlrpc', { body, headers: { 'content-type': 'text/xml' } });
    const received = sim.lastRequests.at(-1);
    expect(received?.url).toBe('/crm/xmlrpc/v1');
    expect(received?.headers['x-keap-api-key']).toBe(KEYS.b);
    expect(received?.body.toString()).toContain(`<string>${KEYS.b}</string>`);
  });

  it('an unknown account is 404 JSON naming it (a fault on XML-RPC paths), and nothing reaches Keap', async () => {
    const { sim, proxy } = await rig({ a: key('a') });
    const before = sim.counters.apiCalls;
    const r = await send(proxy.url, 'GET', '/accounts/zz/crm/rest/v1/contacts');
    expect(r.status).toBe(404);
    expect(r.json()).toMatchObject({ error: 'unknown_account', message: expect.stringContaining('"zz"') });
    const body = writeMethodCall({ methodName: 'ContactService.load', params: [{ type: 'string', value: 'k' }] });
    const x = await send(proxy.url, 'POST', '/accounts/zz/api/xmlrpc', { body });
    expect(x.status).toBe(200);
    expect(x.headers['content-type']).toMatch(/^text\/xml/);
    expect(parseMethodResponse(x.body)).toMatchObject({
      kind: 'fault',
      faultCode: 1,
      faultString: expect.stringMatching(/^\[InvalidConfig\].*"zz".*\(keap-proxy: unknown_account\)$/),
    });
    // With no default account, a request that names none says how to name one.
    const none = await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(none.status).toBe(404);
    expect(none.json()).toMatchObject({
      error: 'unknown_account',
      message: expect.stringContaining('/accounts/<id>/'),
    });
    expect(sim.counters.apiCalls).toBe(before);
  });

  it('by host name, which is allowed like ALLOWED_HOSTS; the default account keeps `/`', async () => {
    const { sim, proxy } = await rig({ c: { ...key('c'), hosts: ['crm.c.example'] } }, key('d'));
    await send(proxy.url, 'GET', '/crm/rest/v1/contacts', { headers: { host: 'CRM.c.example:8080' } });
    expect(last(sim)).toEqual({ url: '/crm/rest/v1/contacts', key: KEYS.c });
    await send(proxy.url, 'GET', '/crm/rest/v1/contacts');
    expect(last(sim)).toEqual({ url: '/crm/rest/v1/contacts', key: KEYS.d });
    // Another host name is still refused.
    expect((await send(proxy.url, 'GET', '/crm/rest/v1/contacts', { headers: { host: 'evil.example' } })).status).toBe(
      421,
    );
  });

  it('by a listener port of its own', async () => {
    const port = await freePort();
    const { sim, proxy } = await rig({ a: key('a'), d: { ...key('d'), port } });
    await send(`http://127.0.0.1:${port}`, 'GET', '/crm/rest/v1/contacts');
    expect(last(sim)).toEqual({ url: '/crm/rest/v1/contacts', key: KEYS.d });
    await send(proxy.url, 'GET', '/accounts/a/crm/rest/v1/contacts');
    expect(last(sim).key).toBe(KEYS.a);
  });
});

describe('ACCOUNTS_FILE is checked at start', () => {
  const load = (accounts: unknown, env: Record<string, string> = {}): string[] => {
    const dir = tempDir();
    const file = path.join(dir, 'accounts.json');
    writeFileSync(file, typeof accounts === 'string' ? accounts : JSON.stringify({ accounts }));
    try {
      loadConfig({ env: { ACCOUNTS_FILE: file, ...env }, cwd: dir });
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    return [];
  };

  it('every problem names the account and the setting; secrets are never shown', () => {
    expect(
      load({
        good: key('a'),
        'bad id!': key('b'),
        nokey: {},
        both: { ...key('b'), KEAP_CLIENT_ID: 'id', KEAP_CLIENT_SECRET: 'very-secret-value' },
        typo: { ...key('c'), RATE_LIMIT_PER_SECND: '5' },
        limits: { ...key('c'), RATE_LIMIT_PER_MINUTE: 'lots' },
        hostA: { ...key('a'), hosts: ['one.example'] },
        hostB: { ...key('b'), hosts: ['one.example'] },
        wrongProcessSetting: { ...key('b'), PORT: '9' },
      }),
    ).toEqual([
      expect.stringMatching(/^ACCOUNTS_FILE account "bad id!": an account id is/),
      expect.stringMatching(/^ACCOUNTS_FILE account "typo": RATE_LIMIT_PER_SECND is not a setting an account may have/),
      expect.stringMatching(/^ACCOUNTS_FILE account "wrongProcessSetting": PORT is not a setting an account may have/),
      expect.stringMatching(/^ACCOUNTS_FILE account "nokey": credentials: none configured/),
      expect.stringMatching(/^ACCOUNTS_FILE account "both": KEAP_API_KEY: set together with OAuth client credentials/),
      expect.stringMatching(/^ACCOUNTS_FILE account "limits": RATE_LIMIT_PER_MINUTE: /),
      'ACCOUNTS_FILE account "hostB": hosts: one.example is account "hostA"\'s already',
    ]);
    expect(
      JSON.stringify(load({ x: { KEAP_API_KEY: 'KeapAK-x', KEAP_CLIENT_SECRET: 'very-secret-value' } })),
    ).not.toContain('very-secret-value');
  });

  it('a file that is not there or not JSON, and a `default` that clashes with the settings', () => {
    expect(load('{ not json')).toEqual([expect.stringMatching(/^ACCOUNTS_FILE: ".*accounts.json" is not JSON/)]);
    expect(load({ default: key('a') }, key('b'))).toEqual([
      expect.stringMatching(/^ACCOUNTS_FILE account "default": `default` is the account the settings configure/),
    ]);
    const dir = tempDir();
    expect(() => loadConfig({ env: { ACCOUNTS_FILE: 'missing.json' }, cwd: dir })).toThrow(
      /ACCOUNTS_FILE: cannot read "missing.json" \(ENOENT\)/,
    );
  });

  it("README's example (config/accounts.example.json) has the shape the proxy reads", () => {
    const problems: string[] = [];
    const repo = path.resolve(import.meta.dirname, '..');
    const secrets = SETTINGS.filter((x) => x.secret).map((x) => x.name);
    const file = readAccountsFile('config/accounts.example.json', repo, secrets, problems);
    expect(problems).toEqual([]);
    expect(file?.entries.map((e) => [e.id, e.weight, e.port, e.hosts])).toEqual([
      ['acme', 2, undefined, []],
      ['globex', 1, undefined, []],
      ['legacy', 1, 8081, ['crm.legacy.example']],
    ]);
    // README shows the same accounts.
    const readme = readFileSync(path.join(repo, 'README.md'), 'utf8');
    for (const id of ['"acme":', '"globex":', '"legacy":']) expect(readme).toContain(id);
  });

  it('an account inherits limits and modes, never credentials; each OAuth account gets its own grant file', () => {
    const dir = tempDir();
    const file = path.join(dir, 'accounts.json');
    writeFileSync(
      file,
      accountsJson({
        a: { KEAP_CLIENT_ID: 'cid', KEAP_CLIENT_SECRET_FILE: 'a.secret', weight: 3 },
        b: { KEAP_CLIENT_ID: 'cid', KEAP_CLIENT_SECRET: 's', XMLRPC_MODE: 'passthrough', TOKEN_STORE: 'b/grant.json' },
      }),
    );
    writeFileSync(path.join(dir, 'a.secret'), 'from-a-file\n');
    const config = loadConfig({
      env: {
        ACCOUNTS_FILE: file,
        XMLRPC_MODE: 'translate',
        TENANT_LIMIT_PER_MINUTE: '300',
        TOKEN_STORE: 'data/t.json',
      },
      cwd: dir,
    });
    expect(config.accounts.map((x) => x.id)).toEqual(['a', 'b']);
    const [a, b] = config.accounts;
    expect(a).toMatchObject({
      credentials: { mode: 'oauth', clientId: 'cid', clientSecret: 'from-a-file', seedRefreshToken: undefined },
      xmlrpcMode: 'translate',
      weight: 3,
      tokenStore: { kind: 'file', path: path.join(dir, 'data', 'accounts', 'a.json') },
      redisPrefix: 'keap-proxy:accounts:a:',
    });
    expect(a?.pacing.tenantPerMinute).toBe(300);
    expect(b).toMatchObject({
      xmlrpcMode: 'passthrough',
      tokenStore: { kind: 'file', path: path.join(dir, 'b', 'grant.json') },
    });
  });
});

describe('per-account readiness, state made on first use, and reload', () => {
  it('/readyz lists the active accounts and answers 200; ?account=<id> answers for one (an idle one starts)', async () => {
    const { proxy } = await rig({ a: key('a'), b: key('b') });
    const all = await send(proxy.url, 'GET', '/readyz');
    expect(all.status).toBe(200);
    expect(all.json()).toMatchObject({ status: 'ready', configured: 2, active: 0, accounts: {} });
    const idle = await send(proxy.url, 'GET', '/readyz?account=b');
    expect(idle.status).toBe(503);
    expect(idle.json()).toMatchObject({ error: 'account_starting' });
    await until('account b started', async () => (await send(proxy.url, 'GET', '/readyz?account=b')).status === 200);
    expect((await send(proxy.url, 'GET', '/readyz?account=b')).json()).toMatchObject({
      status: 'ready',
      account: 'b',
      mode: 'key',
    });
    expect((await send(proxy.url, 'GET', '/readyz')).json()).toMatchObject({
      active: 1,
      accounts: { b: { ready: true } },
    });
    const unknown = await send(proxy.url, 'GET', '/readyz?account=nope');
    expect(unknown.status).toBe(503);
    expect(unknown.json()).toMatchObject({ error: 'unknown_account' });
  });

  it('beyond ACCOUNTS_ACTIVE_MAX the least recently used idle account is let go, and made again when used', async () => {
    const { sim, proxy } = await rig({ a: key('a'), b: key('b'), c: key('c') }, { ACCOUNTS_ACTIVE_MAX: '2' });
    for (const id of ['a', 'b', 'c'] as const) {
      expect((await send(proxy.url, 'GET', `/accounts/${id}/crm/rest/v1/contacts`)).status).toBe(200);
      expect(last(sim).key).toBe(KEYS[id]);
    }
    expect(proxy.accounts.all().map((x) => x.id)).toEqual(['c', 'b']);
    expect((await send(proxy.url, 'GET', '/accounts/a/crm/rest/v1/contacts')).status).toBe(200);
    expect(last(sim).key).toBe(KEYS.a);
    expect(proxy.accounts.all().map((x) => x.id)).toEqual(['a', 'c']);
  });

  it('a reload adds and removes accounts; a removed account finishes its request in flight, then stops', async () => {
    const r = await rig({ a: key('a'), b: key('b') });
    const { sim, proxy } = r;
    // a's request hangs in Keap until released.
    let release: (() => void) | undefined;
    sim.route('GET', '/crm/rest/v1/slow', (_req, res) => {
      release = () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"slow":true}');
    });
    const inFlight = send(proxy.url, 'GET', '/accounts/a/crm/rest/v1/slow');
    await until('a request in flight at Keap', () => release !== undefined);
    const a = proxy.accounts.all().find((x) => x.id === 'a');
    const changes = r.reload({ b: key('b'), c: key('c') });
    expect(changes).toEqual({ added: ['c'], removed: ['a'], changed: [] });
    expect((await send(proxy.url, 'GET', '/accounts/a/crm/rest/v1/contacts')).status).toBe(404);
    expect((await send(proxy.url, 'GET', '/accounts/c/crm/rest/v1/contacts')).status).toBe(200);
    expect(last(sim).key).toBe(KEYS.c);
    expect(proxy.accounts.drainingCount()).toBe(1);
    release?.();
    const answered = await inFlight;
    expect(answered.status).toBe(200);
    expect(answered.json()).toEqual({ slow: true });
    await until('a let go', () => proxy.accounts.drainingCount() === 0);
    expect(a?.inFlight).toBe(0);
    expect(r.logs.entries.find((e) => e.event === 'accounts_reloaded')).toMatchObject({
      added: ['c'],
      removed: ['a'],
      configured: 2,
    });
  });

  it('a reload can bring an account that caches and translates XML-RPC, though none did at start', async () => {
    const r = await rig({ a: key('a') });
    writeFileSync(
      r.file,
      accountsJson({
        a: key('a'),
        b: { ...key('b'), CACHE_RULES: '/crm/rest/v1/contacts=60', XMLRPC_MODE: 'translate' },
      }),
    );
    expect(r.proxy.reloadAccounts(loadConfig({ env: r.env, cwd: r.dir })).added).toEqual(['b']);
    const calls = () => r.sim.counters.apiCalls;
    const before = calls();
    for (let i = 0; i < 2; i++)
      expect((await send(r.proxy.url, 'GET', '/accounts/b/crm/rest/v1/contacts')).status).toBe(200);
    expect(calls() - before).toBe(1);
    const body = writeMethodCall({
      methodName: 'InvoiceService.createBlankOrder',
      params: [{ type: 'string', value: 'k' }],
    });
    const x = await send(r.proxy.url, 'POST', '/accounts/b/api/xmlrpc', { body });
    expect(parseMethodResponse(x.body)).toMatchObject({
      kind: 'fault',
      faultString: expect.stringContaining('(keap-proxy: not_translatable)'),
    });
    expect(calls() - before).toBe(1);
  });

  it('SIGHUP with a file that no longer validates changes nothing and says why', async () => {
    const r = await rig({ a: key('a') });
    const listeners: (() => void)[] = [];
    reloadOnSignal({ on: (_signal, listener) => listeners.push(listener) }, r.proxy, () =>
      loadConfig({ env: r.env, cwd: r.dir }),
    );
    writeFileSync(r.file, accountsJson({ a: { KEAP_API_KEY: KEYS.a, QUEUE_LIMIT: 'many' } }));
    listeners[0]?.();
    expect(r.logs.entries.find((e) => e.event === 'accounts_reload_refused')).toMatchObject({
      problems: [expect.stringMatching(/^ACCOUNTS_FILE account "a": QUEUE_LIMIT: /)],
    });
    expect((await send(r.proxy.url, 'GET', '/accounts/a/crm/rest/v1/contacts')).status).toBe(200);
    writeFileSync(r.file, accountsJson({ a: key('a'), b: key('b') }));
    listeners[0]?.();
    expect((await send(r.proxy.url, 'GET', '/accounts/b/crm/rest/v1/contacts')).status).toBe(200);
  });
});
