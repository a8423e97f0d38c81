import { afterEach, describe, it, expect } from 'vitest';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { KeapSimulator } from './simulator/keap-simulator.js';
import path from 'node:path';
import { parseArgs, UsageError } from '../src/cli/cli-args.js';
import { helpText } from '../src/cli/cli-help.js';
import { ConfigError, loadConfig, type Config } from '../src/config/config.js';
import { FileTokenStore } from '../src/tokens/token-store.js';
import { runTokenStatus, formatDuration } from '../src/cli/token-status.js';
import { tempDir, Out, oauthEnv, runCommand } from './harness.js';
import { runCli } from '../src/cli/cli-run.js';
import type { Grant } from '../src/tokens/grant.js';
import { storeFile } from './store-path.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const NOW = Date.parse('2026-11-20T12:00:00.000Z');
const ACCESS = 'access-token-that-must-not-show';
const REFRESH = 'refresh-token-that-must-not-show';
const SECRET = 'client-secret-that-must-not-show';

function oauthConfig(): Config {
  const dir = tempDir();
  return loadConfig({
    env: { KEAP_CLIENT_ID: 'cid', KEAP_CLIENT_SECRET: SECRET, TOKEN_STORE: path.join(dir, 'store', 'tokens.json') },
    cwd: dir,
  });
}

function grant(refreshAgeMs: number, accessLeftMs: number): Grant {
  return {
    accessToken: ACCESS,
    refreshToken: REFRESH,
    tokenType: 'bearer',
    scope: 'full|ab123.infusionsoft.com',
    accessExpiresAt: NOW + accessLeftMs,
    issuedAt: NOW + accessLeftMs - DAY,
    refreshIssuedAt: NOW - refreshAgeMs,
  };
}

async function status(config: Config, json: boolean): Promise<{ code: number; text: string }> {
  const out = new Out();
  const code = await runTokenStatus({ config, out, json, now: () => NOW });
  return { code, text: out.text };
}

describe('parseArgs', () => {
  it('no subcommand runs the proxy; --config works for every command', () => {
    expect(parseArgs([])).toEqual({ kind: 'serve', configFile: undefined });
    expect(parseArgs(['--config', 'a.properties'])).toEqual({ kind: 'serve', configFile: 'a.properties' });
    expect(parseArgs(['auth', '--config=b.properties'])).toEqual({
      kind: 'auth',
      configFile: 'b.properties',
      code: undefined,
      state: undefined,
      timeoutMs: undefined,
    });
    expect(parseArgs(['token', 'status', '--json', '--config', 'c'])).toEqual({
      kind: 'token-status',
      configFile: 'c',
      json: true,
    });
    expect(parseArgs(['--config', 'd', 'token', 'status'])).toEqual({
      kind: 'token-status',
      configFile: 'd',
      json: false,
    });
  });

  it('auth takes --code, --state and --timeout; a value starting with a dash goes after "="', () => {
    expect(parseArgs(['auth', '--code', 'abc_123', '--state=st', '--timeout', '60'])).toEqual({
      kind: 'auth',
      configFile: undefined,
      code: 'abc_123',
      state: 'st',
      timeoutMs: 60_000,
    });
    expect(parseArgs(['auth', '--code=-abc_123'])).toMatchObject({ code: '-abc_123' });
    expect(parseArgs(['auth', '--timeout=5'])).toMatchObject({ timeoutMs: 5000 });
  });

  it("--help wins anywhere: after a command, that command's help; else the whole help", () => {
    expect(parseArgs(['auth', '--help'])).toEqual({ kind: 'help', command: 'auth' });
    expect(parseArgs(['-h'])).toEqual({ kind: 'help' });
    expect(parseArgs(['token', 'status', '--nope', '--config', '--help'])).toEqual({
      kind: 'help',
      command: 'token-status',
    });
    expect(parseArgs(['--help', 'xmlrpc', 'report'])).toEqual({ kind: 'help', command: 'xmlrpc-report' });
    // An unknown command's --help is the whole help: it lists the commands there are.
    expect(parseArgs(['frobnicate', '--help'])).toEqual({ kind: 'help' });
  });

  it.each([
    [['serve'], /unknown command "serve"/],
    [['token'], /did you mean "token status"/],
    [['token', 'list'], /unknown command "token list"/],
    [['auth', 'extra'], /unknown command "auth extra"/],
    [['--json'], /unknown option "--json" for keap-proxy;/],
    [['auth', '--json'], /unknown option "--json" for keap-proxy auth/],
    [['token', 'status', '--code', 'x'], /unknown option "--code" for keap-proxy token status/],
    [['auth', '--code'], /Option '--code <value>' argument missing; see keap-proxy --help/],
    [['auth', '--code', '-abc'], /To specify an option argument starting with a dash use '--code=-XYZ'; see/],
    [['auth', '--code='], /--code needs the code from Keap's redirect/],
    [['auth', '--state', 'x'], /--state goes with --code/],
    [['auth', '--timeout', '0'], /--timeout: "0" is not a whole number of seconds/],
    [['auth', '--timeout', '1.5'], /--timeout: "1.5"/],
    [['token', 'status', '--json=yes'], /Option '--json' does not take an argument/],
    [['-x'], /unknown option "-x" for keap-proxy;/],
    [['auth', '-x', '--code', 'c'], /unknown option "-x" for keap-proxy auth/],
    [['--config'], /Option '--config <value>' argument missing/],
    [['--config='], /--config needs a file name/],
  ])('%o is refused', (argv, message) => {
    expect(() => parseArgs(argv)).toThrow(UsageError);
    expect(() => parseArgs(argv)).toThrow(message);
  });
});

describe('--help', () => {
  it('lists the subcommands with their options and the OAuth endpoints', () => {
    const help = helpText();
    for (const text of [
      'keap-proxy auth',
      '--code CODE',
      '--state STATE',
      '--timeout SECONDS',
      'keap-proxy token status',
      '--json',
      '--config FILE',
      '/oauth/start',
      '/oauth/callback',
    ]) {
      expect(help).toContain(text);
    }
  });
});

describe('keap-proxy token status', () => {
  it('shows a stored grant in words: tenant, expiry, issue times, refresh-token age; never a token', async () => {
    const config = oauthConfig();
    await new FileTokenStore(storeFile(config)).save(grant(3 * DAY + 5 * HOUR, 20 * HOUR + 30 * 60_000));
    const { code, text } = await status(config, false);
    expect(code).toBe(0);
    expect(text).toContain(`Grant in ${storeFile(config)}`);
    expect(text).toContain('tenant:         ab123.infusionsoft.com');
    expect(text).toContain('expires 2026-11-21T08:30:00.000Z (in 20h 30m)');
    expect(text).toContain('issued at:      2026-11-20T08:30:00.000Z');
    expect(text).toContain('issued 2026-11-17T07:00:00.000Z, 3d 5h ago');
    expect(text).not.toContain('WARNING');
    for (const secret of [ACCESS, REFRESH, SECRET]) expect(text).not.toContain(secret);
  });

  it('--json gives the same facts to scripts', async () => {
    const config = oauthConfig();
    await new FileTokenStore(storeFile(config)).save(grant(2 * HOUR, -HOUR));
    const { code, text } = await status(config, true);
    expect(code).toBe(0);
    expect(JSON.parse(text)).toEqual({
      store: storeFile(config),
      grant: {
        tenant: 'ab123.infusionsoft.com',
        scope: 'full|ab123.infusionsoft.com',
        accessToken: {
          present: true,
          expiresAt: '2026-11-20T11:00:00.000Z',
          expiresInSeconds: -3600,
          expired: true,
          issuedAt: '2026-11-19T11:00:00.000Z',
        },
        refreshToken: {
          issuedAt: '2026-11-20T10:00:00.000Z',
          ageSeconds: 7200,
          age: '2h 0m',
          lifetimeDays: 45,
          expiresAt: '2027-01-04T10:00:00.000Z',
          condition: 'ok',
        },
      },
    });
    for (const secret of [ACCESS, REFRESH, SECRET]) expect(text).not.toContain(secret);
  });

  it("warns when the refresh token nears Keap's 45-day lifetime, and when it is past it", async () => {
    const config = oauthConfig();
    const store = new FileTokenStore(storeFile(config));
    await store.save(grant(31 * DAY, HOUR));
    const near = await status(config, false);
    expect(near.text).toMatch(/WARNING: the refresh token is 31d 0h old; Keap kills it after 45 days/);
    expect(JSON.parse((await status(config, true)).text)).toMatchObject({
      grant: { refreshToken: { condition: 'refresh_soon' } },
    });
    await store.save(grant(46 * DAY, HOUR));
    expect((await status(config, false)).text).toMatch(
      /WARNING: the refresh token is older than Keap's 45-day lifetime and is most likely dead: run `keap-proxy auth`/,
    );
    expect(JSON.parse((await status(config, true)).text)).toMatchObject({
      grant: { refreshToken: { condition: 'expired' } },
    });
  });

  it('exits 1 with how to authorize when the store is empty', async () => {
    const config = oauthConfig();
    const human = await status(config, false);
    expect(human.code).toBe(1);
    expect(human.text).toMatch(/No grant stored\. Authorize with `keap-proxy auth`/);
    expect(human.text).toContain(storeFile(config));
    const json = await status(config, true);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.text)).toEqual({
      store: storeFile(config),
      grant: null,
      message: expect.stringContaining('keap-proxy auth'),
    });
  });

  it('is refused in key mode', async () => {
    const config = loadConfig({ env: { KEAP_API_KEY: 'KeapAK-x' }, cwd: tempDir() });
    await expect(runTokenStatus({ config, out: new Out() })).rejects.toThrow(ConfigError);
  });

  it('formats durations in days and hours, or hours and minutes', () => {
    expect(formatDuration(3 * DAY + 5 * HOUR + 59 * 60_000)).toBe('3d 5h');
    expect(formatDuration(5 * HOUR + 12 * 60_000)).toBe('5h 12m');
    expect(formatDuration(7 * 60_000 + 30_000)).toBe('7m');
    expect(formatDuration(-2 * HOUR)).toBe('2h 0m');
  });
});

describe('every command has its own --help; an unknown command exits 2', () => {
  const cli = (argv: string[]) => runCommand(argv);

  it.each([
    [
      ['auth', '--help'],
      "keap-proxy auth: authorize keap-proxy's Keap app",
      [
        'keap-proxy auth --code CODE [--state STATE]',
        '--timeout SECONDS',
        '--state STATE',
        '--account ID',
        '--config FILE',
      ],
    ],
    [['token', 'status', '--help'], 'keap-proxy token status: show the stored grant', ['--json', '--account ID']],
    [['token', 'export', '-h'], 'keap-proxy token export: write the stored grant as JSON', ['--out FILE']],
    [['token', 'import', '--help'], 'keap-proxy token import: store a grant', ['--from SOURCE', '--force']],
    [['xmlrpc', 'report', '--help'], 'keap-proxy xmlrpc report: list the XML-RPC methods', ['--log FILE', '--json']],
  ])(
    '%o: purpose, usage and options of that command alone, exit 0, no configuration needed',
    async (argv, purpose, options) => {
      const r = await cli(argv);
      expect(r.code).toBe(0);
      expect(r.err).toBe('');
      const [first, ...rest] = r.out.split('\n');
      expect(first).toMatch(new RegExp(`^${purpose.replace(/[[\]().*+?]/g, '\\$&')}`));
      expect(r.out).toContain('Usage:');
      expect(r.out).toContain('Options:');
      expect(r.out).toMatch(/--help +show this help/);
      for (const option of options) expect(rest.join('\n')).toContain(option);
      // Not the whole help: no settings table, no other command.
      expect(r.out).not.toContain('Settings:');
      for (const line of r.out.split('\n')) expect(line.length).toBeLessThanOrEqual(100);
    },
  );

  it('the whole help names the per-command help and the version', () => {
    expect(helpText()).toContain('keap-proxy COMMAND --help');
    expect(helpText()).toContain('keap-proxy version');
  });

  it.each([['frobnicate'], ['token', 'list'], ['serve'], ['auth', 'now']])(
    '%o: exit 2 with the unknown command named and where to look, nothing on stdout',
    async (...argv) => {
      const r = await cli(argv);
      expect(r.code).toBe(2);
      expect(r.out).toBe('');
      expect(r.err).toMatch(
        new RegExp(`^keap-proxy: unknown command "${argv.join(' ')}".*; see keap-proxy --help\\n$`),
      );
    },
  );
});

describe('keap-proxy auth checks the token store before Keap is asked anything', () => {
  const REDIRECT = 'https://app.example.com/keap/callback';
  let sim: KeapSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  async function auth(
    argv: string[],
    env: Record<string, string>,
    cwd: string,
  ): Promise<{ code: number | undefined; out: string; err: string }> {
    const out = new Out();
    const err = new Out();
    const code = await runCli({
      argv: ['auth', ...argv],
      env,
      stdout: out,
      stderr: err,
      cwd,
      serve: () => Promise.reject(new Error('nothing here serves')),
    });
    return { code, out: out.text, err: err.text };
  }

  it('a store directory that cannot be made: exit 1 naming TOKEN_STORE, no authorize URL, no code spent', async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    writeFileSync(path.join(dir, 'a-file'), '');
    const env = { ...oauthEnv(sim, dir), KEAP_REDIRECT_URI: REDIRECT, TOKEN_STORE: 'a-file/store/tokens.json' };
    const printing = await auth([], env, dir);
    expect(printing.code).toBe(1);
    expect(printing.out).toBe('');
    expect(printing.err).toMatch(
      /^keap-proxy: TOKEN_STORE: token store directory .*a-file\/store cannot be created \(ENOTDIR\); .*Nothing was asked of Keap; fix the store, then run `keap-proxy auth` again\.\n$/,
    );
    const exchanging = await auth([`--code=${sim.issueAuthorizationCode(REDIRECT)}`], env, dir);
    expect(exchanging.code).toBe(1);
    expect(exchanging.err).toMatch(/^keap-proxy: TOKEN_STORE: token store directory/);
    expect(sim.counters.tokenCalls).toBe(0);
  });

  it('a Redis store that cannot be reached: exit 1, no authorize URL', async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const port = await closedPort();
    const r = await auth(
      [],
      { ...oauthEnv(sim, dir), KEAP_REDIRECT_URI: REDIRECT, TOKEN_STORE: `redis://127.0.0.1:${port}/0` },
      dir,
    );
    expect(r.code).toBe(1);
    expect(r.out).not.toContain('Open this URL');
    expect(r.err).toMatch(
      /^keap-proxy: TOKEN_STORE: token store redis:\/\/127\.0\.0\.1:\d+\/0 .*: Redis is unavailable, could not take the lock/,
    );
  });

  it('a mistyped --state is refused and the pending login kept: the right state then stores the grant', async () => {
    sim = await KeapSimulator.start();
    const dir = tempDir();
    const env = { ...oauthEnv(sim, dir), KEAP_REDIRECT_URI: REDIRECT, KEAP_REFRESH_TOKEN: '' };
    const first = await auth([], env, dir);
    expect(first.code).toBe(0);
    const state = new URL(/https:\/\/\S+/.exec(first.out)?.[0] ?? '').searchParams.get('state') ?? '';
    const code = sim.issueAuthorizationCode(REDIRECT);
    const typo = await auth([`--code=${code}`, `--state=${state}x`], env, dir);
    expect(typo.code).toBe(1);
    expect(typo.err).toContain('that login is still pending');
    expect(sim.counters.tokenCalls).toBe(0);
    const right = await auth([`--code=${code}`, `--state=${state}`], env, dir);
    expect(right.err).toBe('');
    expect(right.code).toBe(0);
    expect(right.out).toContain('Authorized for');
  });
});

function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
