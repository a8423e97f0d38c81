// No configuration message may carry a secret: not the value of a secret setting, not one
// read through <NAME>_FILE, not the credentials of a URL, not the text of a config file line.
// Every case plants MARKER where a secret would be, triggers errors, and scans all the text
// the operator sees: the ConfigError, and the CLI's stdout and stderr.
import { describe, it, expect } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, SETTINGS, loadConfig } from '../src/config/config.js';
import { runCommand, tempDir } from './harness.js';

const MARKER = 'SECRET-MARKER-1234';
const OAUTH = { KEAP_CLIENT_ID: 'id-123', KEAP_CLIENT_SECRET: 'secret-456' };
const SECRET_SETTINGS = SETTINGS.filter((s) => s.secret).map((s) => s.name);
const URL_SETTINGS = ['KEAP_API_URL', 'KEAP_TOKEN_URL', 'KEAP_AUTHORIZE_URL', 'KEAP_REDIRECT_URI'];

interface Case {
  env: Record<string, string>;
  /** Lines of a config file, given with --config. */
  file?: string[];
  /** Text the message must hold: the setting's name, or the file and line. */
  names: string[];
}

/** The error text loadConfig produces for a case, with cwd a fresh directory holding the case's files. */
function errorText(c: Case, dir = tempDir()): string {
  let configFile: string | undefined;
  if (c.file !== undefined) {
    writeFileSync(path.join(dir, 'keap.properties'), c.file.join('\n') + '\n');
    configFile = 'keap.properties';
  }
  try {
    loadConfig({ env: c.env, configFile, cwd: dir });
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(c)}`);
}

/** The CLI as a shell runs it: exit code and everything it printed. */
async function cli(
  argv: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<{ code: number | undefined; stdout: string; stderr: string }> {
  const { code, out, err } = await runCommand(argv, { env, cwd });
  return { code, stdout: out, stderr: err };
}

const cases: [string, Case][] = [
  // Secret settings, each in a configuration that is refused for a reason involving it.
  ['KEAP_CLIENT_ID without a secret', { env: { KEAP_CLIENT_ID: MARKER }, names: ['KEAP_CLIENT_SECRET'] }],
  ['KEAP_CLIENT_SECRET without an id', { env: { KEAP_CLIENT_SECRET: MARKER }, names: ['KEAP_CLIENT_ID'] }],
  [
    'KEAP_API_KEY with OAuth credentials',
    {
      env: { KEAP_CLIENT_ID: MARKER, KEAP_CLIENT_SECRET: `${MARKER}-s`, KEAP_API_KEY: `${MARKER}-k` },
      names: ['KEAP_API_KEY'],
    },
  ],
  [
    'KEAP_REFRESH_TOKEN in key mode',
    { env: { KEAP_API_KEY: `${MARKER}-k`, KEAP_REFRESH_TOKEN: MARKER }, names: ['KEAP_REFRESH_TOKEN'] },
  ],
  [
    'a PROXY_CLIENT_KEYS key that is too short',
    { env: { ...OAUTH, PROXY_CLIENT_KEYS: `${MARKER},MRK1234` }, names: ['PROXY_CLIENT_KEYS'] },
  ],
  [
    'a PROXY_CLIENT_KEYS key with white space',
    { env: { ...OAUTH, PROXY_CLIENT_KEYS: `${MARKER} ${MARKER}` }, names: ['PROXY_CLIENT_KEYS'] },
  ],
  [
    'REDIS_URL with credentials, next to another error',
    { env: { ...OAUTH, REDIS_URL: `redis://user:${MARKER}@redis:6379`, PORT: 'x' }, names: ['PORT'] },
  ],
  ...SECRET_SETTINGS.map((name): [string, Case] => [
    `${name} and ${name}_FILE both set`,
    { env: { ...OAUTH, [name]: MARKER, [`${name}_FILE`]: '/nonexistent/file' }, names: [`${name}_FILE`] },
  ]),
  ...SECRET_SETTINGS.map((name): [string, Case] => [
    `${name}_FILE naming a path that cannot be read`,
    { env: { ...OAUTH, [`${name}_FILE`]: `/nonexistent/${MARKER}` }, names: [`${name}_FILE`] },
  ]),
  // The easy mistake: the secret itself pasted where its file's path belongs.
  ...SECRET_SETTINGS.map((name): [string, Case] => [
    `${name}_FILE holding the secret instead of a path`,
    { env: { ...OAUTH, [`${name}_FILE`]: MARKER }, names: [`${name}_FILE`] },
  ]),
  // URL settings with credentials, in every shape that fails validation.
  ...URL_SETTINGS.flatMap((name): [string, Case][] => [
    [
      `${name} with user:password@`,
      { env: { ...OAUTH, [name]: `https://user:${MARKER}@api.example` }, names: [name, 'https://***@api.example'] },
    ],
    [
      `${name} with user:password@ and a query`,
      { env: { ...OAUTH, [name]: `https://user:${MARKER}@api.example/x?y=1` }, names: [name] },
    ],
    [
      `${name} with credentials and another scheme`,
      { env: { ...OAUTH, [name]: `ftp://user:${MARKER}@api.example` }, names: [name] },
    ],
    [
      `${name} with credentials and no scheme`,
      { env: { ...OAUTH, [name]: `user:${MARKER}@api.example` }, names: [name] },
    ],
    [
      `${name} with an unencoded '/' in the password`,
      { env: { ...OAUTH, [name]: `https://user:pa/${MARKER}@api.example` }, names: [name] },
    ],
    [
      `${name} with white space in the credentials`,
      { env: { ...OAUTH, [name]: `https://us er:${MARKER}@api.example` }, names: [name] },
    ],
    [
      `${name} with credentials and a bad port`,
      { env: { ...OAUTH, [name]: `https://user:${MARKER}@api.example:99999` }, names: [name] },
    ],
  ]),
  // Settings that are no URL, given one with credentials.
  ...['HOST', 'PORT', 'LOG_LEVEL', 'RATE_LIMIT_MARGIN', 'QUEUE_LIMIT'].map((name): [string, Case] => [
    `${name} given a URL with credentials`,
    { env: { ...OAUTH, [name]: `redis://user:${MARKER}@host:6379` }, names: [name] },
  ]),
  // A Redis URL with credentials that is refused for something else.
  [
    'TOKEN_STORE given a Redis URL with credentials and a bad database',
    { env: { ...OAUTH, TOKEN_STORE: `redis://user:${MARKER}@host:6379/zero` }, names: ['TOKEN_STORE'] },
  ],
  [
    'REDIS_URL given a URL with credentials that is no Redis URL',
    { env: { ...OAUTH, REDIS_URL: `https://user:${MARKER}@host:6379` }, names: ['REDIS_URL'] },
  ],
  [
    'an ALLOWED_HOSTS entry that is a URL with credentials',
    { env: { ...OAUTH, ALLOWED_HOSTS: `ok.example,https://user:${MARKER}@host` }, names: ['ALLOWED_HOSTS'] },
  ],
  [
    'an ALLOWED_HOSTS entry with credentials and a wildcard',
    { env: { ...OAUTH, ALLOWED_HOSTS: `*.user:${MARKER}@host` }, names: ['ALLOWED_HOSTS'] },
  ],
  [
    'RELAY_CORS_HEADERS holding a URL with credentials',
    { env: { ...OAUTH, RELAY_CORS_HEADERS: `https://user:${MARKER}@host` }, names: ['RELAY_CORS_HEADERS'] },
  ],
  [
    'a CACHE_RULES rule with credentials in it',
    { env: { ...OAUTH, CACHE_RULES: `/ok*=30,https://user:${MARKER}@host/x=30` }, names: ['CACHE_RULES'] },
  ],
  // Config file lines that cannot be parsed, or name no setting.
  [
    'a config file line that is only a secret',
    { env: OAUTH, file: ['PORT=8080', MARKER], names: ['keap.properties', 'line 2'] },
  ],
  [
    'a config file line that lost its "="',
    { env: OAUTH, file: [`KEAP_CLIENT_SECRET ${MARKER}`], names: ['keap.properties', 'line 1', 'KEAP_CLIENT_SECRET'] },
  ],
  [
    'a config file line that lost its "=" before a ":"',
    { env: OAUTH, file: ['# c', `KEAP_API_KEY ${MARKER}:tail`], names: ['keap.properties', 'line 2', 'KEAP_API_KEY'] },
  ],
  [
    'a config file line that starts with "="',
    { env: OAUTH, file: [`=${MARKER}`], names: ['keap.properties', 'line 1'] },
  ],
  [
    'a base64 secret on a line of its own (it ends in "=")',
    { env: OAUTH, file: [`${MARKER}==`], names: ['keap.properties', 'line 1'] },
  ],
  ['a secret as the name of a setting', { env: OAUTH, file: [`${MARKER}=x`], names: ['keap.properties', 'line 1'] }],
  // Secrets the config file gives, refused with the file's other problems.
  [
    'secrets in a config file, with a bad line',
    {
      env: {},
      file: [
        `oauth.api.key=${MARKER}`,
        `oauth.api.secret=${MARKER}`,
        `KEAP_API_KEY=${MARKER}`,
        `PROXY_CLIENT_KEYS=${MARKER}`,
        'junk',
      ],
      names: ['KEAP_API_KEY', 'line 5'],
    },
  ],
  [
    'a secret in a config file and its _FILE in the environment',
    {
      env: { KEAP_CLIENT_SECRET_FILE: '/nonexistent' },
      file: ['KEAP_CLIENT_ID=x', `KEAP_CLIENT_SECRET=${MARKER}`],
      names: ['KEAP_CLIENT_SECRET_FILE'],
    },
  ],
];

describe('configuration errors never show a secret', () => {
  it.each(cases)('%s', (_title, c) => {
    const text = errorText(c);
    expect(text).not.toContain(MARKER);
    for (const name of c.names) expect(text).toContain(name);
  });

  it('secrets read through <NAME>_FILE stay out of every message', () => {
    const dir = tempDir();
    const env: Record<string, string> = { PORT: 'x', LOG_LEVEL: 'loud', KEAP_API_URL: 'ftp://x' };
    for (const name of SECRET_SETTINGS) {
      writeFileSync(path.join(dir, name), `${MARKER}\n`);
      env[`${name}_FILE`] = name;
    }
    const text = errorText({ env, names: [] }, dir);
    // Key mode with OAuth credentials, a seed in the wrong mode, short keys: every secret is involved.
    for (const name of ['PORT', 'LOG_LEVEL', 'KEAP_API_URL', 'KEAP_API_KEY']) expect(text).toContain(name);
    expect(text).not.toContain(MARKER);
  });

  it("a non-secret value is still quoted, without a URL's credentials", () => {
    expect(errorText({ env: { ...OAUTH, PORT: 'abc' }, names: [] })).toContain('PORT: "abc" is not a whole number');
    expect(
      errorText({ env: { ...OAUTH, KEAP_TOKEN_URL: `https://user:${MARKER}@auth.example/token` }, names: [] }),
    ).toContain('KEAP_TOKEN_URL: "https://***@auth.example/token" is not an http(s) URL without credentials');
  });

  it.each(cases)('through the CLI: %s', async (_title, c) => {
    const dir = tempDir();
    if (c.file !== undefined) writeFileSync(path.join(dir, 'keap.properties'), c.file.join('\n') + '\n');
    const config = c.file !== undefined ? ['--config', 'keap.properties'] : [];
    for (const argv of [[...config], ['auth', ...config], ['token', 'status', ...config]]) {
      const { code, stdout, stderr } = await cli(argv, c.env, dir);
      expect(code, argv.join(' ')).toBe(2);
      expect(stderr).toMatch(/^keap-proxy: Invalid configuration:/);
      for (const name of c.names) expect(stderr).toContain(name);
      expect(stdout + stderr).not.toContain(MARKER);
    }
  });

  it('through the CLI: auth and token status refuse a valid configuration in the wrong mode without showing it', async () => {
    const dir = tempDir();
    const key = await cli(['token', 'status'], { KEAP_API_KEY: MARKER }, dir);
    expect(key.code).toBe(2);
    expect(key.stderr).toMatch(/token status: this configuration is key mode \(KEAP_API_KEY\)/);
    const auth = await cli(
      ['auth'],
      { KEAP_CLIENT_ID: MARKER, KEAP_CLIENT_SECRET: MARKER, TOKEN_STORE: path.join(dir, 'tokens.json') },
      dir,
    );
    expect(auth.code).toBe(2);
    expect(auth.stderr).toMatch(/KEAP_REDIRECT_URI: required by `keap-proxy auth`/);
    for (const r of [key, auth]) expect(r.stdout + r.stderr).not.toContain(MARKER);
  });
});
