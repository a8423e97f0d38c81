// Bad settings refused at start, with one message each: KEAP_API_URL with a path or a query
// (every path would be doubled), plain http to a host that is not loopback (a warning in the
// log), LOG_LEVEL in any case, a <NAME>_FILE that cannot be read (said once, without
// follow-on errors), and /readyz never showing times that were never set.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/observability/log.js';
import { startProxy } from '../src/http/server.js';
import { harnessPerTest, LogCapture, send, SIM_API_KEY, tempDir } from './harness.js';

const KEY = { KEAP_API_KEY: SIM_API_KEY };
const OAUTH = { KEAP_CLIENT_ID: 'id-123', KEAP_CLIENT_SECRET: 'secret-456' };

function problemsOf(env: Record<string, string>, cwd = tempDir()): string[] {
  try {
    loadConfig({ env, cwd });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const startHarness = harnessPerTest(afterEach);
const running: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

describe('KEAP_API_URL is an origin', () => {
  it.each([
    ['https://api.infusionsoft.com/crm/rest/v1', 'path'],
    ['https://api.infusionsoft.com/crm/rest/v1/', 'path'],
    ['https://api.infusionsoft.com/?env=prod', 'query string'],
    ['https://api.infusionsoft.com#x', 'fragment'],
  ])('%s is refused: it has a %s; the message says to give the origin only', (url, what) => {
    const problems = problemsOf({ ...KEY, KEAP_API_URL: url });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`KEAP_API_URL: "${url}" has a ${what}; give the origin only`);
  });

  it.each(['https://api.infusionsoft.com', 'https://api.infusionsoft.com/', 'http://127.0.0.1:8443'])(
    '%s is an origin',
    (url) => {
      expect(loadConfig({ env: { ...KEY, KEAP_API_URL: url }, cwd: tempDir() }).keapApiUrl.pathname).toBe('/');
    },
  );
});

describe('plain http to a host that is not loopback', () => {
  it('KEAP_API_URL and KEAP_TOKEN_URL get a warning each; https and loopback none', () => {
    const warned = loadConfig({
      env: { ...OAUTH, KEAP_API_URL: 'http://keap.example.com', KEAP_TOKEN_URL: 'http://keap.example.com/token' },
      cwd: tempDir(),
    }).warnings;
    expect(warned).toHaveLength(2);
    expect(warned[0]).toMatch(/^KEAP_API_URL: "http:\/\/keap.example.com" is plain http .*use https/);
    expect(warned[1]).toMatch(/^KEAP_TOKEN_URL: "http:\/\/keap.example.com" is plain http/);
    for (const url of ['http://127.0.0.1:9', 'http://localhost:9', 'http://[::1]:9', 'https://keap.example.com'])
      expect(loadConfig({ env: { ...KEY, KEAP_API_URL: url }, cwd: tempDir() }).warnings).toEqual([]);
  });

  it('the warning is logged at start (config_warning)', async () => {
    const config = loadConfig({
      env: { ...KEY, KEAP_API_URL: 'http://keap.example.com', PORT: '0' },
      cwd: tempDir(),
    });
    const logs = new LogCapture();
    running.push(await startProxy(config, { logger: createLogger(config.logLevel, logs) }));
    const warnings = logs.entries.filter((e) => e.event === 'config_warning');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 'warn' });
    expect(String(warnings[0]?.warning)).toContain('KEAP_API_URL');
    expect(logs.text()).not.toContain(SIM_API_KEY);
  });
});

describe('LOG_LEVEL', () => {
  it.each([
    ['INFO', 'info'],
    ['Debug', 'debug'],
    ['WARN', 'warn'],
    ['silent', 'silent'],
  ])('%s is %s', (given, level) => {
    expect(loadConfig({ env: { ...KEY, LOG_LEVEL: given }, cwd: tempDir() }).logLevel).toBe(level);
  });

  it('XMLRPC_MODE, the other choice, takes any case too', () => {
    expect(loadConfig({ env: { ...KEY, XMLRPC_MODE: 'Translate' }, cwd: tempDir() }).accounts[0]?.xmlrpcMode).toBe(
      'translate',
    );
  });
});

describe('a <NAME>_FILE that cannot be read is the one problem said', () => {
  it.each([
    [{ KEAP_CLIENT_ID: 'id-123', KEAP_CLIENT_SECRET_FILE: 'missing-secret' }, 'KEAP_CLIENT_SECRET_FILE'],
    [{ KEAP_CLIENT_ID_FILE: 'missing-id', KEAP_CLIENT_SECRET: 'secret-456' }, 'KEAP_CLIENT_ID_FILE'],
    [{ KEAP_API_KEY_FILE: 'missing-key' }, 'KEAP_API_KEY_FILE'],
    [{ ...OAUTH, KEAP_REFRESH_TOKEN_FILE: 'missing-seed' }, 'KEAP_REFRESH_TOKEN_FILE'],
  ])('%o: only %s', (env, name) => {
    const problems = problemsOf(env);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(new RegExp(`^${name}: cannot read .* \\(ENOENT\\); point it at a readable file`));
  });

  it('in an ACCOUNTS_FILE account too', () => {
    const dir = tempDir();
    writeFileSync(
      path.join(dir, 'accounts.json'),
      JSON.stringify({
        accounts: {
          a: { KEAP_CLIENT_ID: 'id-a', KEAP_CLIENT_SECRET_FILE: 'missing-secret' },
          b: { KEAP_API_KEY_FILE: 'missing-key' },
          c: { KEAP_API_KEY: 'key-c' },
        },
      }),
    );
    const problems = problemsOf({ ACCOUNTS_FILE: path.join(dir, 'accounts.json') }, dir);
    expect(problems).toEqual([
      expect.stringMatching(/^ACCOUNTS_FILE account "a": KEAP_CLIENT_SECRET_FILE: cannot read it \(ENOENT\)/),
      expect.stringMatching(/^ACCOUNTS_FILE account "b": KEAP_API_KEY_FILE: cannot read it \(ENOENT\)/),
    ]);
  });

  it('other problems are still said beside it', () => {
    const problems = problemsOf({ KEAP_API_KEY_FILE: 'missing-key', PORT: 'eighty' });
    expect(problems).toHaveLength(2);
    expect(problems.join('\n')).toMatch(/PORT: "eighty"/);
  });
});

describe('/readyz shows only times that were set', () => {
  it('after a lost grant (Keap rejected the token, the refresh failed): no expiry, not -1.8 billion seconds', async () => {
    const h = await startHarness({ mode: 'oauth' });
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).toBe(200);
    h.sim.revokeRefreshTokens();
    h.sim.expireAccessTokens();
    expect((await send(h.proxy.url, 'GET', '/crm/rest/v1/contacts')).status).not.toBe(200);
    const ready = await send(h.proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    const details = ready.json<{ details: Record<string, unknown> }>().details;
    expect(details.accessTokenExpiresInSeconds).toBeNull();
    // The refresh token is still held (and its age true) until the store drops it.
    const age = details.refreshTokenAgeSeconds;
    expect(age === null || (typeof age === 'number' && age >= 0 && age < 86_400)).toBe(true);
  });

  it('a seed refresh token that could not be exchanged: no expiry', async () => {
    const h = await startHarness({ mode: 'oauth', sim: { seedRefreshToken: 'another-seed' } });
    const ready = await send(h.proxy.url, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    const details = ready.json<{ details: Record<string, unknown> }>().details;
    expect(details.accessTokenExpiresInSeconds).toBeNull();
  });
});
