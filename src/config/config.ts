// Configuration is read and validated once, here, at the edge. Nothing else in the
// process reads process.env: every component gets the typed Config (or a part of it).
import { readFileSync, existsSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { parseCacheRules } from '../cache/get-cache.js';
import { parseAllowedHosts } from '../http/host-check.js';
import type { PaceLimits } from '../pacing/pacer.js';
import { LOG_LEVELS, type LogLevel } from '../observability/log.js';

// The logger owns its levels; they are re-exported here as the settings' vocabulary.
export { LOG_LEVELS, type LogLevel } from '../observability/log.js';

export interface OAuthCredentials {
  mode: 'oauth';
  clientId: string;
  clientSecret: string;
  redirectUri: string | undefined;
  /** Used only while the token store holds nothing newer: the store wins. */
  seedRefreshToken: string | undefined;
}

export interface KeyCredentials {
  mode: 'key';
  /** A Personal Access Token, a Service Account Key or a legacy XML-RPC Encrypted Key. */
  apiKey: string;
}

export type Credentials = OAuthCredentials | KeyCredentials;

export interface Config {
  host: string;
  port: number;
  /** Host names (lower-case, IPv6 in brackets) requests may be addressed to besides loopback ones. */
  allowedHosts: string[];
  keapApiUrl: URL;
  keapTokenUrl: URL;
  keapAuthorizeUrl: URL;
  credentials: Credentials;
  tokenStore: { kind: 'file'; path: string };
  redis: { url: string | undefined; prefix: string };
  /** Keap's limits the proxy paces to (each times `margin`); perSecond 0 turns pacing off. */
  pacing: PaceLimits;
  /** Longest a request may wait for Keap's rate limit, in all; a client may ask for less. */
  requestDeadlineMs: number;
  /** GET cache rules (`PATTERN=TTL_SECONDS,...`); empty: no cache. */
  cacheRules: string;
  cacheMaxBytes: number;
  upstreamTimeoutMs: number;
  maxBodyBytes: number;
  /** Request bodies up to this size are buffered so that a gateway 401 can be replayed. */
  replayBodyBytes: number;
  /** Most bytes all buffered request bodies may hold at once. */
  bodyBufferBudgetBytes: number;
  /** Sends of one request in all when Keap answers 429 (the first included). */
  rateLimitMaxAttempts: number;
  proxyClientKeys: string[];
  /** Whether Keap's CORS response headers reach clients. */
  relayCorsHeaders: boolean;
  logLevel: LogLevel;
  /** Where the settings came from, for the start-up log line. */
  configFile: string | undefined;
}

/** One documented setting: its environment name, default and meaning (README and --help are built from these). */
export interface SettingDoc {
  name: string;
  default: string;
  meaning: string;
  secret?: boolean;
}

const MiB = 1024 * 1024;

export const SETTINGS: readonly SettingDoc[] = [
  {
    name: 'HOST',
    default: '127.0.0.1',
    meaning: 'Address to listen on. Keep loopback for a sidecar; anything wider needs PROXY_CLIENT_KEYS.',
  },
  { name: 'PORT', default: '8080', meaning: 'Port to listen on (0 picks a free one).' },
  {
    name: 'ALLOWED_HOSTS',
    default: '',
    meaning:
      'Comma-separated host names (or IP addresses) clients address the proxy by, besides 127.x.x.x, localhost and [::1]; case and port are ignored. Requests with any other Host get 421 (a guard against DNS rebinding), except /healthz and /readyz.',
  },
  {
    name: 'KEAP_API_URL',
    default: 'https://api.infusionsoft.com',
    meaning: 'Keap API base URL: the only host requests are forwarded to.',
  },
  { name: 'KEAP_TOKEN_URL', default: 'https://api.infusionsoft.com/token', meaning: 'OAuth2 token endpoint.' },
  {
    name: 'KEAP_AUTHORIZE_URL',
    default: 'https://accounts.infusionsoft.com/app/oauth/authorize',
    meaning: 'OAuth2 authorize page (used by `keap-proxy auth`).',
  },
  {
    name: 'KEAP_CLIENT_ID',
    default: '',
    meaning: 'OAuth client id. With KEAP_CLIENT_SECRET: OAuth mode.',
    secret: true,
  },
  { name: 'KEAP_CLIENT_SECRET', default: '', meaning: 'OAuth client secret.', secret: true },
  { name: 'KEAP_REDIRECT_URI', default: '', meaning: 'OAuth redirect URI registered for the client.' },
  {
    name: 'KEAP_REFRESH_TOKEN',
    default: '',
    meaning: 'Seed refresh token, used only while the token store holds nothing newer (the store wins).',
    secret: true,
  },
  {
    name: 'KEAP_API_KEY',
    default: '',
    meaning: 'Personal Access Token, Service Account Key or legacy Encrypted Key. Alone: key mode.',
    secret: true,
  },
  {
    name: 'TOKEN_STORE',
    default: './data/tokens.json',
    meaning: 'File the OAuth grant is kept in (written atomically, mode 0600).',
  },
  {
    name: 'REDIS_URL',
    default: '',
    meaning: 'Redis for replicas sharing one grant and quota (reserved; not used yet).',
    secret: true,
  },
  { name: 'REDIS_PREFIX', default: 'keap-proxy:', meaning: 'Key prefix in Redis (reserved; not used yet).' },
  {
    name: 'RATE_LIMIT_PER_SECOND',
    default: '',
    meaning: "Keap's per-second spike limit. Empty: 25 for OAuth, 10 for a key. 0 turns pacing off.",
  },
  {
    name: 'RATE_LIMIT_PER_MINUTE',
    default: '',
    meaning: "Keap's per-minute throttle (rolling). Empty: 1500 for OAuth, 240 for a key.",
  },
  {
    name: 'RATE_LIMIT_PER_DAY',
    default: '',
    meaning: "Keap's daily quota (resets 00:00 UTC). Empty: 150000 for OAuth, 30000 for a key.",
  },
  {
    name: 'TENANT_LIMIT_PER_MINUTE',
    default: '10000',
    meaning: "Keap's per-tenant (account) limit per minute, any token type.",
  },
  { name: 'TENANT_LIMIT_PER_DAY', default: '250000', meaning: "Keap's per-tenant (account) limit per day." },
  {
    name: 'RATE_LIMIT_MARGIN',
    default: '0.9',
    meaning: 'Share of every limit the proxy uses (the rest is headroom for other apps of the same client or account).',
  },
  {
    name: 'QUEUE_LIMIT',
    default: '1000',
    meaning: 'Requests that may wait for the rate limit; past that, 503 with Retry-After at once.',
  },
  {
    name: 'REQUEST_DEADLINE_MS',
    default: '30000',
    meaning:
      'Longest a request waits for the rate limit or a Keap 429 in all, then 429 with Retry-After. Clients may ask for less with X-Keap-Proxy-Deadline-Ms.',
  },
  {
    name: 'CACHE_RULES',
    default: '',
    meaning:
      'GET cache, off when empty: `PATTERN=TTL_SECONDS` entries, comma-separated; a pattern is a path or a prefix ending in `*`, e.g. `/crm/rest/v1/tags*=300`.',
  },
  { name: 'CACHE_MAX_BYTES', default: String(64 * MiB), meaning: 'Most bytes the GET cache holds.' },
  {
    name: 'UPSTREAM_TIMEOUT_MS',
    default: '60000',
    meaning: 'Keap must start answering within this many ms, else the client gets 504.',
  },
  { name: 'MAX_BODY_BYTES', default: String(50 * MiB), meaning: 'Largest request body accepted; larger gets 413.' },
  {
    name: 'REPLAY_BODY_BYTES',
    default: String(10 * MiB),
    meaning: 'Bodies up to this size are buffered so a gateway 401 can be replayed; larger ones stream.',
  },
  {
    name: 'BODY_BUFFER_BUDGET_BYTES',
    default: String(192 * MiB),
    meaning:
      'Most memory all buffered request bodies may hold at once (fits a 512 MiB pod); past it a request gets 503 with Retry-After at once. At least REPLAY_BODY_BYTES.',
  },
  {
    name: 'RATE_LIMIT_MAX_ATTEMPTS',
    default: '10',
    meaning:
      'Sends of one request in all while Keap answers 429 (at least 250 ms apart, backing off); then the client gets the 429.',
  },
  {
    name: 'PROXY_CLIENT_KEYS',
    default: '',
    meaning:
      'Comma-separated keys; when set, clients must send `Authorization: Bearer <key>` (XML-RPC: or the key as privateKey).',
    secret: true,
  },
  {
    name: 'RELAY_CORS_HEADERS',
    default: 'false',
    meaning:
      "true passes Keap's Access-Control-Allow-*, Access-Control-Expose-Headers and Access-Control-Max-Age response headers on to clients; by default they are dropped, so no web page on another origin can read answers through the proxy.",
  },
  { name: 'LOG_LEVEL', default: 'info', meaning: 'fatal, error, warn, info, debug, trace or silent.' },
];

/** Every secret can be read from a file named by <NAME>_FILE (Kubernetes secret volumes). */
const SECRET_NAMES = SETTINGS.filter((s) => s.secret).map((s) => s.name);

/**
 * Settings whose value no message shows: the secrets, and the <NAME>_FILE paths too, because
 * pasting the secret itself into <NAME>_FILE is an easy mistake and its error would echo it.
 */
const HIDDEN_NAMES = new Set([...SECRET_NAMES, ...SECRET_NAMES.map((name) => `${name}_FILE`)]);

/**
 * A setting's value as a configuration message may show it: quoted, so a blank or a stray
 * space is visible. A secret is never shown, nor the credentials of a URL: userinfo ends at
 * the last '@' of the authority, and masking up to the value's last '@' can over-mask a path
 * holding an '@' but never leaves a password behind. With white space in the value the URL
 * parsers disagree on where userinfo ends, so such a value is not shown at all.
 */
function shown(name: string, value: string): string {
  if (HIDDEN_NAMES.has(name)) return '<secret, not shown>';
  if (!value.includes('@')) return `"${value}"`;
  if (/\s/.test(value)) return '<not shown: it may hold credentials>';
  return `"${value.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/i, '$1***@')}"`;
}

/** Every name a config file may use: settings, <SECRET>_FILE and the SAP connector's aliases. */
function isKnownName(name: string): boolean {
  const canonical = CONNECTOR_ALIASES[name] ?? name;
  return (
    SETTINGS.some((s) => s.name === canonical) ||
    (canonical.endsWith('_FILE') && SECRET_NAMES.includes(canonical.slice(0, -5)))
  );
}

/** Parameter names of SAP Open Connectors' Infusionsoft connector, accepted in the config file. */
export const CONNECTOR_ALIASES: Readonly<Record<string, string>> = {
  'infusionsoft.private.key': 'KEAP_API_KEY',
  'oauth.api.key': 'KEAP_CLIENT_ID',
  'oauth.api.secret': 'KEAP_CLIENT_SECRET',
  'oauth.callback.url': 'KEAP_REDIRECT_URI',
};

export const DEFAULT_CONFIG_FILE = 'config/keap-proxy.properties';

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Parses `name=value` lines (`#`/`!` comments, `:` also separates), the Java properties shape SAP's connector settings use. */
export function parseProperties(text: string, source: string): Map<string, string> {
  const { entries, problems } = readProperties(text, source);
  if (problems.length > 0) throw new ConfigError(problems);
  return new Map(entries.map((e) => [e.key, e.value]));
}

interface PropertyLine {
  key: string;
  value: string;
  line: number;
}

/**
 * The lines of a config file, and a problem for each malformed one. A problem names the
 * file and line number but never quotes the line: a line that failed to parse is as likely
 * as any to be a secret (a value that lost its name, a continuation of a long key).
 */
function readProperties(text: string, source: string): { entries: PropertyLine[]; problems: string[] } {
  const entries: PropertyLine[] = [];
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('!')) return;
    const sep = line.search(/[=:]/);
    if (sep <= 0) {
      problems.push(
        `${lineOf(source, i + 1)}: expected NAME=value${hintFor(line)}; the line is not shown, as it may hold a secret`,
      );
      return;
    }
    entries.push({ key: line.slice(0, sep).trim(), value: line.slice(sep + 1).trim(), line: i + 1 });
  });
  return { entries, problems };
}

function lineOf(source: string, line: number): string {
  return `config file ${shown('KEAP_PROXY_CONFIG', source)}, line ${line}`;
}

/**
 * Which setting a bad line or an unknown name seems meant to be. What it names comes from
 * our own list of settings, so the hint can be shown where the line itself cannot.
 */
function hintFor(text: string): string {
  const first = /^[^\s=:]+/.exec(text)?.[0];
  if (first !== undefined && first !== text && isKnownName(first)) return ` (is the "=" after ${first} missing?)`;
  const upper = text.toUpperCase();
  const names = [
    ...SETTINGS.map((s) => s.name),
    ...SECRET_NAMES.map((n) => `${n}_FILE`),
    ...Object.keys(CONNECTOR_ALIASES),
  ];
  let near: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = editDistance(upper, name.toUpperCase());
    if (distance <= 2 && (near === undefined || distance < near.distance)) near = { name, distance };
  }
  return near !== undefined ? ` (did you mean ${near.name}?)` : '';
}

/** Levenshtein distance, for typo hints; settings names are short, so the quadratic cost is nothing. */
function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        (previous[j] as number) + 1,
        (row[j - 1] as number) + 1,
        (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = row;
  }
  return previous[b.length] as number;
}

export interface LoadConfigInput {
  env: NodeJS.ProcessEnv;
  /** Explicit config file (--config); otherwise KEAP_PROXY_CONFIG, then config/keap-proxy.properties when present. */
  configFile?: string | undefined;
  cwd?: string;
}

export function loadConfig(input: LoadConfigInput): Config {
  const cwd = input.cwd ?? process.cwd();
  const env = input.env;
  const problems: string[] = [];

  const fileName =
    input.configFile ??
    env.KEAP_PROXY_CONFIG ??
    (existsSync(path.resolve(cwd, DEFAULT_CONFIG_FILE)) ? DEFAULT_CONFIG_FILE : undefined);
  const fromFile = new Map<string, string>();
  if (fileName !== undefined) {
    const full = path.resolve(cwd, fileName);
    let text: string;
    try {
      text = readFileSync(full, 'utf8');
    } catch (err) {
      throw new ConfigError([
        `config file ${shown('KEAP_PROXY_CONFIG', fileName)}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}); fix the path given by --config or KEAP_PROXY_CONFIG`,
      ]);
    }
    const lines = readProperties(text, fileName);
    problems.push(...lines.problems);
    for (const { key, value, line } of lines.entries) {
      // The name is not quoted either: a line whose separator came late may be a secret up to it.
      if (!isKnownName(key))
        problems.push(`${lineOf(fileName, line)}: unknown setting${hintFor(key)}; see README for the list of settings`);
      else fromFile.set(CONNECTOR_ALIASES[key] ?? key, value);
    }
  }

  const raw = (name: string): string | undefined => {
    const direct = env[name] ?? fromFile.get(name);
    if (!SECRET_NAMES.includes(name)) return direct;
    const fileRef = env[`${name}_FILE`] ?? fromFile.get(`${name}_FILE`);
    if (fileRef === undefined || fileRef === '') return direct;
    if (direct !== undefined && direct !== '') {
      problems.push(`${name}: set both ${name} and ${name}_FILE; set only one`);
      return direct;
    }
    try {
      return readFileSync(path.resolve(cwd, fileRef), 'utf8').trim();
    } catch (err) {
      problems.push(
        `${name}_FILE: cannot read ${shown(`${name}_FILE`, fileRef)} (${(err as NodeJS.ErrnoException).code ?? 'error'}); point it at a readable file`,
      );
      return undefined;
    }
  };
  const str = (name: string): string => {
    const v = raw(name)?.trim();
    return v === undefined || v === '' ? defaultOf(name) : v;
  };
  const optional = (name: string): string | undefined => {
    const v = str(name);
    return v === '' ? undefined : v;
  };
  const int = (name: string, min: number, max: number): number => {
    const v = str(name);
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${name}: ${shown(name, v)} is not a whole number from ${min} to ${max}`);
      return Number(defaultOf(name) || min);
    }
    return n;
  };
  const bool = (name: string): boolean => {
    const v = str(name).toLowerCase();
    if (v !== 'true' && v !== 'false') problems.push(`${name}: ${shown(name, str(name))} is not true or false`);
    return v === 'true';
  };
  const url = (name: string): URL => {
    const v = str(name);
    try {
      const u = new URL(v);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
      if (u.username || u.password) throw new Error('credentials');
      return u;
    } catch {
      problems.push(
        `${name}: ${shown(name, v)} is not an http(s) URL without credentials, e.g. ${defaultOf(name) || 'https://example.com'}`,
      );
      return new URL(defaultOf(name) || 'http://127.0.0.1/');
    }
  };

  const host = str('HOST');
  if (isIP(host) === 0 && host !== 'localhost')
    problems.push(`HOST: ${shown('HOST', host)} is not an IP address; use 127.0.0.1 (default), ::1 or 0.0.0.0`);
  const port = int('PORT', 0, 65535);
  let allowedHosts: string[] = [];
  try {
    allowedHosts = parseAllowedHosts(str('ALLOWED_HOSTS'), (entry) => shown('ALLOWED_HOSTS', entry));
  } catch (err) {
    problems.push(`ALLOWED_HOSTS: ${(err as Error).message}`);
  }
  const keapApiUrl = url('KEAP_API_URL');
  if (keapApiUrl.search || keapApiUrl.hash) problems.push('KEAP_API_URL: must not carry a query string or fragment');
  const keapTokenUrl = url('KEAP_TOKEN_URL');
  const keapAuthorizeUrl = url('KEAP_AUTHORIZE_URL');

  const clientId = optional('KEAP_CLIENT_ID');
  const clientSecret = optional('KEAP_CLIENT_SECRET');
  const apiKey = optional('KEAP_API_KEY');
  const redirectUri = optional('KEAP_REDIRECT_URI');
  if (redirectUri !== undefined) url('KEAP_REDIRECT_URI');
  const seedRefreshToken = optional('KEAP_REFRESH_TOKEN');

  let credentials: Credentials | undefined;
  if (clientId !== undefined || clientSecret !== undefined) {
    if (clientId === undefined)
      problems.push("KEAP_CLIENT_ID: required with KEAP_CLIENT_SECRET; set it to your Keap app's client id");
    if (clientSecret === undefined)
      problems.push(
        "KEAP_CLIENT_SECRET: required with KEAP_CLIENT_ID; set it (or KEAP_CLIENT_SECRET_FILE) to your Keap app's client secret",
      );
    if (apiKey !== undefined)
      problems.push(
        'KEAP_API_KEY: set together with OAuth client credentials; set either KEAP_CLIENT_ID + KEAP_CLIENT_SECRET (OAuth mode) or KEAP_API_KEY (key mode), not both',
      );
    if (clientId !== undefined && clientSecret !== undefined) {
      credentials = { mode: 'oauth', clientId, clientSecret, redirectUri, seedRefreshToken };
    }
  } else if (apiKey !== undefined) {
    if (seedRefreshToken !== undefined)
      problems.push(
        'KEAP_REFRESH_TOKEN: only used in OAuth mode; set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET too, or remove it',
      );
    credentials = { mode: 'key', apiKey };
  } else {
    problems.push(
      'credentials: none configured; set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET (OAuth mode) or KEAP_API_KEY (key mode), or run `npm run demo` to try the proxy against the built-in simulator',
    );
  }

  const tokenStorePath = str('TOKEN_STORE');
  if (/^rediss?:\/\//.test(tokenStorePath))
    problems.push('TOKEN_STORE: a Redis token store is not supported yet; give a file path');

  const oauth = (credentials?.mode ?? 'oauth') === 'oauth';
  const limit = (name: string, oauthDefault: number, keyDefault: number, min: number): number =>
    str(name) === '' ? (oauth ? oauthDefault : keyDefault) : int(name, min, 1_000_000_000);
  const marginText = str('RATE_LIMIT_MARGIN');
  const margin = Number(marginText);
  if (!/^\d*\.?\d+$/.test(marginText) || !(margin > 0 && margin <= 1))
    problems.push(
      `RATE_LIMIT_MARGIN: ${shown('RATE_LIMIT_MARGIN', marginText)} is not a number above 0 and at most 1, e.g. 0.9`,
    );
  const pacing = {
    perSecond: limit('RATE_LIMIT_PER_SECOND', 25, 10, 0),
    perMinute: limit('RATE_LIMIT_PER_MINUTE', 1500, 240, 1),
    perDay: limit('RATE_LIMIT_PER_DAY', 150_000, 30_000, 1),
    tenantPerMinute: int('TENANT_LIMIT_PER_MINUTE', 1, 1_000_000_000),
    tenantPerDay: int('TENANT_LIMIT_PER_DAY', 1, 1_000_000_000),
    margin: margin > 0 && margin <= 1 ? margin : 0.9,
    queueLimit: int('QUEUE_LIMIT', 1, 1_000_000),
  };
  const requestDeadlineMs = int('REQUEST_DEADLINE_MS', 1, 3_600_000);
  const cacheRules = str('CACHE_RULES');
  try {
    parseCacheRules(cacheRules);
  } catch (err) {
    // The message quotes the rule it refused; a rule with an '@' may be a URL, credentials and all, pasted in by mistake.
    problems.push(
      cacheRules.includes('@')
        ? `CACHE_RULES: ${shown('CACHE_RULES', cacheRules)} holds a rule that is not PATTERN=TTL_SECONDS (a path, or a prefix ending in '*')`
        : `CACHE_RULES: ${(err as Error).message}`,
    );
  }
  const cacheMaxBytes = int('CACHE_MAX_BYTES', 0, 2 ** 40);

  const upstreamTimeoutMs = int('UPSTREAM_TIMEOUT_MS', 1, 3_600_000);
  const maxBodyBytes = int('MAX_BODY_BYTES', 1, 2 ** 40);
  const replayBodyBytes = int('REPLAY_BODY_BYTES', 0, 2 ** 40);
  const bodyBufferBudgetBytes = int('BODY_BUFFER_BUDGET_BYTES', 1, 2 ** 40);
  if (bodyBufferBudgetBytes < Math.min(replayBodyBytes, maxBodyBytes))
    problems.push(
      'BODY_BUFFER_BUDGET_BYTES: must be at least REPLAY_BODY_BYTES (one replayable body must fit); raise it or lower REPLAY_BODY_BYTES',
    );
  const rateLimitMaxAttempts = int('RATE_LIMIT_MAX_ATTEMPTS', 1, 100);

  const keysText = raw('PROXY_CLIENT_KEYS') ?? '';
  const proxyClientKeys = keysText
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k !== '');
  for (const key of proxyClientKeys) {
    if (key.length < 16)
      problems.push(
        'PROXY_CLIENT_KEYS: every key must be at least 16 characters; generate one with `openssl rand -hex 32`',
      );
    if (/\s/.test(key)) problems.push('PROXY_CLIENT_KEYS: keys must not contain white space');
  }

  const relayCorsHeaders = bool('RELAY_CORS_HEADERS');

  const logLevel = str('LOG_LEVEL') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel))
    problems.push(`LOG_LEVEL: ${shown('LOG_LEVEL', logLevel)} is not one of ${LOG_LEVELS.join(', ')}`);

  const redis = { url: optional('REDIS_URL'), prefix: str('REDIS_PREFIX') };
  if (problems.length > 0 || credentials === undefined) throw new ConfigError([...new Set(problems)]);
  return {
    host,
    port,
    allowedHosts,
    keapApiUrl,
    keapTokenUrl,
    keapAuthorizeUrl,
    credentials,
    tokenStore: { kind: 'file', path: path.resolve(cwd, tokenStorePath) },
    redis,
    pacing,
    requestDeadlineMs,
    cacheRules,
    cacheMaxBytes,
    upstreamTimeoutMs,
    maxBodyBytes,
    replayBodyBytes: Math.min(replayBodyBytes, maxBodyBytes),
    bodyBufferBudgetBytes,
    rateLimitMaxAttempts,
    proxyClientKeys,
    relayCorsHeaders,
    logLevel,
    configFile: fileName,
  };
}

function defaultOf(name: string): string {
  return SETTINGS.find((s) => s.name === name)?.default ?? '';
}

/** What the start-up log line shows: the shape of the configuration, never a secret. */
export function configSummary(config: Config): Record<string, unknown> {
  return {
    mode: config.credentials.mode,
    listen: `${config.host}:${config.port}`,
    allowedHosts: config.allowedHosts,
    keapApiUrl: config.keapApiUrl.origin + config.keapApiUrl.pathname,
    keapTokenUrl: config.keapTokenUrl.origin + config.keapTokenUrl.pathname,
    tokenStore: config.credentials.mode === 'oauth' ? config.tokenStore.path : undefined,
    seedRefreshToken:
      config.credentials.mode === 'oauth' ? config.credentials.seedRefreshToken !== undefined : undefined,
    pacing: config.pacing,
    requestDeadlineMs: config.requestDeadlineMs,
    cache: config.cacheRules !== '',
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    maxBodyBytes: config.maxBodyBytes,
    replayBodyBytes: config.replayBodyBytes,
    bodyBufferBudgetBytes: config.bodyBufferBudgetBytes,
    rateLimitMaxAttempts: config.rateLimitMaxAttempts,
    clientKeys: config.proxyClientKeys.length,
    relayCorsHeaders: config.relayCorsHeaders,
    configFile: config.configFile,
  };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
