import { describe, it, expect } from 'vitest';
import { writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from './harness.js';
import {
  ConfigError,
  SETTINGS,
  loadConfig,
  parseProperties,
  configSummary,
  DEFAULT_CONFIG_FILE,
  storeLocation,
} from '../src/config/config.js';
import { helpText, settingsTable } from '../src/cli/cli-help.js';
import { storeFile } from './store-path.js';

const repo = path.resolve(import.meta.dirname, '..');
const OAUTH = { KEAP_CLIENT_ID: 'id-123', KEAP_CLIENT_SECRET: 'secret-456' };

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('applies the documented defaults in OAuth mode', () => {
    const c = loadConfig({ env: OAUTH, cwd: tempDir() });
    expect(c.accounts[0]!.credentials).toEqual({
      mode: 'oauth',
      clientId: 'id-123',
      clientSecret: 'secret-456',
      redirectUri: undefined,
      seedRefreshToken: undefined,
    });
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(8080);
    expect(c.keapApiUrl.href).toBe('https://api.infusionsoft.com/');
    expect(c.keapTokenUrl.href).toBe('https://api.infusionsoft.com/token');
    expect(c.keapAuthorizeUrl.href).toBe('https://accounts.infusionsoft.com/app/oauth/authorize');
    expect(c.upstreamTimeoutMs).toBe(60_000);
    expect(c.maxBodyBytes).toBe(50 * 1024 * 1024);
    expect(c.replayBodyBytes).toBe(10 * 1024 * 1024);
    expect(c.accounts[0]!.pacing).toEqual({
      perSecond: 25,
      perMinute: 1500,
      perDay: 150_000,
      tenantPerMinute: 10_000,
      tenantPerDay: 250_000,
      margin: 0.9,
      queueLimit: 1000,
      // Left at Keap's published figures: Keap's reported limits replace them.
      explicit: { perSecond: false, perMinute: false, perDay: false, tenantPerMinute: false, tenantPerDay: false },
    });
    expect(c.requestDeadlineMs).toBe(30_000);
    expect(c.accounts[0]!.cacheRules).toBe('');
    expect(c.proxyClientKeys).toEqual([]);
    expect(c.allowedHosts).toEqual([]);
    expect(c.relayCorsHeaders).toBe(false);
    expect(c.logLevel).toBe('info');
    expect(storeFile(c).endsWith(path.join('data', 'tokens.json'))).toBe(true);
    expect(c.redis).toEqual({ url: undefined, prefix: 'keap-proxy:', lockLeaseMs: 15_000 });
    expect(c.replicas).toBe(1);
    expect(c.probePort).toBe(0);
    expect(c.shutdown).toEqual({ delayMs: 5000, graceMs: 20_000 });
  });

  it('keeps the grant in Redis when TOKEN_STORE says so, and never shows the Redis password', () => {
    const url = 'redis://:s3cret-pass@cache.internal:6380/2';
    const byUrl = loadConfig({ env: { ...OAUTH, TOKEN_STORE: url }, cwd: tempDir() });
    expect(byUrl.accounts[0]!.tokenStore).toEqual({ kind: 'redis', url });
    // The store's Redis is the shared one too (pacing), unless REDIS_URL names another.
    expect(byUrl.redis.url).toBe(url);
    const byName = loadConfig({
      env: { ...OAUTH, TOKEN_STORE: 'redis', REDIS_URL: url, REDIS_PREFIX: 'kp1:' },
      cwd: tempDir(),
    });
    expect(byName.accounts[0]!.tokenStore).toEqual({ kind: 'redis', url });
    expect(byName.redis).toEqual({ url, prefix: 'kp1:', lockLeaseMs: 15_000 });
    const summary = JSON.stringify(configSummary(byName));
    expect(summary).toContain('redis://cache.internal:6380/2');
    expect(summary).not.toContain('s3cret-pass');
    expect(storeLocation(byName.accounts[0]!.tokenStore)).toBe('redis://cache.internal:6380/2');
  });

  it('a key alone is key mode, with the key-mode pace', () => {
    const c = loadConfig({ env: { KEAP_API_KEY: 'KeapAK-abc' }, cwd: tempDir() });
    expect(c.accounts[0]!.credentials).toEqual({ mode: 'key', apiKey: 'KeapAK-abc' });
    expect(c.accounts[0]!.pacing).toMatchObject({ perSecond: 10, perMinute: 240, perDay: 30_000 });
  });

  it('a limit set by the operator is explicit, even at the default value; one left empty is not', () => {
    const c = loadConfig({
      env: {
        KEAP_API_KEY: 'KeapAK-abc',
        RATE_LIMIT_PER_MINUTE: '240',
        RATE_LIMIT_PER_DAY: '',
        TENANT_LIMIT_PER_DAY: '250000',
      },
      cwd: tempDir(),
    });
    expect(c.accounts[0]!.pacing).toMatchObject({
      perMinute: 240,
      perDay: 30_000,
      tenantPerDay: 250_000,
      explicit: { perSecond: false, perMinute: true, perDay: false, tenantPerMinute: false, tenantPerDay: true },
    });
  });

  it('refuses to start without credentials and names what to set', () => {
    const problems = problemsOf(() => loadConfig({ env: {}, cwd: tempDir() }));
    expect(problems.join('\n')).toMatch(/KEAP_CLIENT_ID and KEAP_CLIENT_SECRET .*KEAP_API_KEY/);
  });

  it.each([
    [{ KEAP_CLIENT_ID: 'x' }, /KEAP_CLIENT_SECRET: required/],
    [{ KEAP_CLIENT_SECRET: 'x' }, /KEAP_CLIENT_ID: required/],
    [{ ...OAUTH, KEAP_API_KEY: 'k' }, /not both/],
    [{ KEAP_API_KEY: 'k', KEAP_REFRESH_TOKEN: 'r' }, /KEAP_REFRESH_TOKEN: only used in OAuth mode/],
    [{ ...OAUTH, PORT: '99999' }, /PORT: "99999" is not a whole number from 0 to 65535/],
    [{ ...OAUTH, PORT: 'eighty' }, /PORT: "eighty"/],
    [{ ...OAUTH, HOST: 'my host' }, /HOST: "my host" is not an IP address/],
    [{ ...OAUTH, KEAP_API_URL: 'ftp://x' }, /KEAP_API_URL: "ftp:\/\/x" is not an http\(s\) URL/],
    [{ ...OAUTH, KEAP_API_URL: 'https://user:pw@api.example' }, /KEAP_API_URL: .* without credentials/],
    [
      { ...OAUTH, KEAP_API_URL: 'https://api.example/?x=1' },
      /KEAP_API_URL: "https:\/\/api.example\/\?x=1" has a query string; give the origin only/,
    ],
    [{ ...OAUTH, KEAP_TOKEN_URL: 'nope' }, /KEAP_TOKEN_URL/],
    [{ ...OAUTH, KEAP_AUTHORIZE_URL: 'nope' }, /KEAP_AUTHORIZE_URL/],
    [{ ...OAUTH, KEAP_REDIRECT_URI: 'not a url' }, /KEAP_REDIRECT_URI/],
    [{ ...OAUTH, UPSTREAM_TIMEOUT_MS: '0' }, /UPSTREAM_TIMEOUT_MS: "0"/],
    [{ ...OAUTH, MAX_BODY_BYTES: '-5' }, /MAX_BODY_BYTES: "-5"/],
    [{ ...OAUTH, REPLAY_BODY_BYTES: '1.5' }, /REPLAY_BODY_BYTES: "1.5"/],
    [{ ...OAUTH, RATE_LIMIT_PER_SECOND: 'fast' }, /RATE_LIMIT_PER_SECOND: "fast"/],
    [{ ...OAUTH, LOG_LEVEL: 'loud' }, /LOG_LEVEL: "loud" is not one of/],
    [{ ...OAUTH, RATE_LIMIT_MARGIN: '1.5' }, /RATE_LIMIT_MARGIN: "1.5" is not a number above 0 and at most 1/],
    [{ ...OAUTH, RATE_LIMIT_PER_MINUTE: '0' }, /RATE_LIMIT_PER_MINUTE: "0"/],
    [{ ...OAUTH, QUEUE_LIMIT: 'lots' }, /QUEUE_LIMIT: "lots"/],
    [{ ...OAUTH, REQUEST_DEADLINE_MS: '0' }, /REQUEST_DEADLINE_MS: "0"/],
    [{ ...OAUTH, PROXY_CLIENT_KEYS: 'short' }, /PROXY_CLIENT_KEYS: every key must be at least 16 characters/],
    [
      { ...OAUTH, TOKEN_STORE: 'redis://127.0.0.1:6379/db' },
      /TOKEN_STORE: "redis:\/\/127.0.0.1:6379\/db" names database "db"; a database is a number/,
    ],
    [{ ...OAUTH, TOKEN_STORE: 'redis' }, /TOKEN_STORE: `redis` keeps the grant in REDIS_URL, which is not set/],
    [{ ...OAUTH, REDIS_URL: 'http://cache:6379' }, /REDIS_URL: <secret, not shown> is not a Redis URL/],
    [{ ...OAUTH, REPLICAS: '0' }, /REPLICAS: "0" is not a whole number from 1 to 1000/],
    [{ ...OAUTH, SHUTDOWN_GRACE_MS: 'soon' }, /SHUTDOWN_GRACE_MS: "soon"/],
    [
      { ...OAUTH, ALLOWED_HOSTS: 'ok.example,proxy.internal:8080' },
      /ALLOWED_HOSTS: "proxy.internal:8080": give the host name alone, without scheme or port/,
    ],
    [{ ...OAUTH, ALLOWED_HOSTS: '*' }, /ALLOWED_HOSTS: "\*": wildcards are not supported/],
    [{ ...OAUTH, ALLOWED_HOSTS: 'not a host' }, /ALLOWED_HOSTS: "not a host" is not a host name or IP address/],
    [{ ...OAUTH, RELAY_CORS_HEADERS: 'yes' }, /RELAY_CORS_HEADERS: "yes" is not true or false/],
    // The path is not shown: it may be the secret itself, pasted into the wrong variable.
    [
      { KEAP_CLIENT_ID: 'id', KEAP_CLIENT_SECRET_FILE: '/nonexistent/secret' },
      /KEAP_CLIENT_SECRET_FILE: cannot read <secret, not shown> \(ENOENT\); point it at a readable file/,
    ],
  ])('%o is refused with a message naming the setting', (env, message) => {
    expect(problemsOf(() => loadConfig({ env, cwd: tempDir() })).join('\n')).toMatch(message);
  });

  it('reads ALLOWED_HOSTS and RELAY_CORS_HEADERS', () => {
    const c = loadConfig({
      env: { ...OAUTH, ALLOWED_HOSTS: 'Keap-Proxy.Internal, 10.0.0.5', RELAY_CORS_HEADERS: 'TRUE' },
      cwd: tempDir(),
    });
    expect(c.allowedHosts).toEqual(['keap-proxy.internal', '10.0.0.5']);
    expect(c.relayCorsHeaders).toBe(true);
    expect(configSummary(c)).toMatchObject({
      allowedHosts: ['keap-proxy.internal', '10.0.0.5'],
      relayCorsHeaders: true,
    });
  });

  it('reports every problem at once', () => {
    const problems = problemsOf(() => loadConfig({ env: { ...OAUTH, PORT: 'x', LOG_LEVEL: 'y' }, cwd: tempDir() }));
    expect(problems).toHaveLength(2);
  });

  it('reads secrets from <NAME>_FILE and refuses both forms at once', () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'secret'), 'from-file-secret\n');
    writeFileSync(path.join(dir, 'keys'), 'client-key-aaaaaaaaaaaa,client-key-bbbbbbbbbbbb\n');
    const c = loadConfig({
      env: { KEAP_CLIENT_ID: 'id', KEAP_CLIENT_SECRET_FILE: 'secret', PROXY_CLIENT_KEYS_FILE: path.join(dir, 'keys') },
      cwd: dir,
    });
    expect(c.accounts[0]!.credentials.mode === 'oauth' && c.accounts[0]!.credentials.clientSecret).toBe(
      'from-file-secret',
    );
    expect(c.proxyClientKeys).toEqual(['client-key-aaaaaaaaaaaa', 'client-key-bbbbbbbbbbbb']);
    expect(
      problemsOf(() => loadConfig({ env: { ...OAUTH, KEAP_CLIENT_SECRET_FILE: 'secret' }, cwd: dir })).join(),
    ).toMatch(/set both KEAP_CLIENT_SECRET and KEAP_CLIENT_SECRET_FILE/);
  });

  it('reads a config file, environment variables win, SAP connector names are accepted', () => {
    const dir = tempDir();
    writeFileSync(
      path.join(dir, 'my.properties'),
      [
        '# comment',
        '! also a comment',
        'oauth.api.key = sap-id',
        'oauth.api.secret: sap-secret',
        'oauth.callback.url=https://example.com/cb',
        'PORT=9000',
        'UPSTREAM_TIMEOUT_MS=1234',
      ].join('\n'),
    );
    const c = loadConfig({ env: { PORT: '9001' }, configFile: 'my.properties', cwd: dir });
    expect(c.accounts[0]!.credentials).toMatchObject({
      mode: 'oauth',
      clientId: 'sap-id',
      clientSecret: 'sap-secret',
      redirectUri: 'https://example.com/cb',
    });
    expect(c.port).toBe(9001);
    expect(c.upstreamTimeoutMs).toBe(1234);
    expect(c.configFile).toBe('my.properties');

    writeFileSync(path.join(dir, 'legacy.properties'), 'infusionsoft.private.key=legacy-key\n');
    expect(loadConfig({ env: { KEAP_PROXY_CONFIG: 'legacy.properties' }, cwd: dir }).accounts[0]!.credentials).toEqual({
      mode: 'key',
      apiKey: 'legacy-key',
    });
  });

  it('refuses unknown settings and unreadable files in a config file', () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'bad.properties'), 'PROT=8080\n');
    expect(problemsOf(() => loadConfig({ env: OAUTH, configFile: 'bad.properties', cwd: dir })).join()).toMatch(
      /config file "bad.properties", line 1: unknown setting \(did you mean PORT\?\)/,
    );
    writeFileSync(path.join(dir, 'case.properties'), 'port=8080\n');
    expect(problemsOf(() => loadConfig({ env: OAUTH, configFile: 'case.properties', cwd: dir })).join()).toMatch(
      /line 1: unknown setting \(did you mean PORT\?\)/,
    );
    expect(problemsOf(() => loadConfig({ env: OAUTH, configFile: 'missing.properties', cwd: dir })).join()).toMatch(
      /config file "missing.properties": cannot be read/,
    );
    writeFileSync(path.join(dir, 'garbage.properties'), '# comment\njust words\n');
    expect(problemsOf(() => loadConfig({ env: OAUTH, configFile: 'garbage.properties', cwd: dir })).join()).toMatch(
      /config file "garbage.properties", line 2: expected NAME=value; the line is not shown/,
    );
  });

  it('the summary logged at start carries no secret', () => {
    const c = loadConfig({
      env: { ...OAUTH, KEAP_REFRESH_TOKEN: 'seed-secret-value', PROXY_CLIENT_KEYS: 'client-key-aaaaaaaaaaaa' },
      cwd: tempDir(),
    });
    const text = JSON.stringify(configSummary(c));
    for (const secret of ['id-123', 'secret-456', 'seed-secret-value', 'client-key-aaaaaaaaaaaa'])
      expect(text).not.toContain(secret);
    expect(configSummary(c)).toMatchObject({ mode: 'oauth', seedRefreshToken: true, clientKeys: 1 });
  });
});

describe('the documented defaults', () => {
  it(`${DEFAULT_CONFIG_FILE} lists every setting with the built-in default`, () => {
    const file = parseProperties(readFileSync(path.join(repo, DEFAULT_CONFIG_FILE), 'utf8'), DEFAULT_CONFIG_FILE);
    expect([...file.keys()].sort()).toEqual(SETTINGS.map((s) => s.name).sort());
    for (const s of SETTINGS) expect(file.get(s.name), s.name).toBe(s.default);
  });

  it("every setting's default passes its own parser", () => {
    for (const s of SETTINGS) expect(() => s.parse(s.default, { show: (v) => `"${v}"` }), s.name).not.toThrow();
  });

  it('loading the defaults file gives the same config as no file', () => {
    const withFile = loadConfig({ env: OAUTH, cwd: repo });
    const without = loadConfig({ env: OAUTH, cwd: tempDir() });
    expect(withFile.configFile).toBe(DEFAULT_CONFIG_FILE);
    // The grant file is relative to each cwd; everything else is the same.
    const apart = (c: typeof withFile) => ({
      ...c,
      configFile: undefined,
      accounts: c.accounts.map((a) => ({ ...a, tokenStore: undefined })),
    });
    expect(apart(withFile)).toEqual(apart(without));
  });

  it('README and --help name every setting', () => {
    const readme = readFileSync(path.join(repo, 'README.md'), 'utf8');
    const help = helpText();
    for (const s of SETTINGS) {
      expect(readme, s.name).toContain(`\`${s.name}\``);
      expect(help, s.name).toContain(s.name);
    }
  });

  it("README's settings table is the one SETTINGS writes, row for row", () => {
    const readme = readFileSync(path.join(repo, 'README.md'), 'utf8');
    const start = readme.indexOf('| name | default | meaning |');
    const table = readme.slice(start, readme.indexOf('\n\n', start));
    // On a difference, paste settingsTable() (src/cli/cli-help.ts) over README's table.
    expect(table.split('\n')).toEqual(settingsTable().split('\n'));
  });
});
