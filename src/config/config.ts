// Configuration is read and validated once, here, at the edge. Nothing else in the
// process reads process.env: every component gets the typed Config (or a part of it).
// Each setting is parsed by its own entry in SETTINGS (settings.ts); what involves several
// settings at once is checked here, after that.
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import type { PaceLimits } from '../pacing/pacer.js';
import type { LogLevel } from '../observability/log.js';
import { Invalid, SETTINGS, type SettingName, type SettingValues } from './settings.js';

// The logger owns its levels; they are re-exported here as the settings' vocabulary.
export { LOG_LEVELS, type LogLevel } from '../observability/log.js';
export { SETTINGS, type Setting } from './settings.js';

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
  tokenStore: { kind: 'file'; path: string } | { kind: 'redis'; url: string };
  /** Redis the replicas share; `url` undefined: none (pacing per process). */
  redis: { url: string | undefined; prefix: string; lockLeaseMs: number };
  /** Replicas sharing the quota: each paces to limit ÷ replicas while Redis is unreachable. */
  replicas: number;
  /** How XML-RPC calls are served: passed through to Keap, translated to REST v2, or passed through with translation as the fallback. */
  xmlrpcMode: 'passthrough' | 'translate' | 'fallback';
  /** Fallback mode: how long translatable calls skip Keap's XML-RPC endpoint after it answered as down. */
  xmlrpcFallbackDownMs: number;
  /** Port of the probes-only listener on all interfaces; 0: none. */
  probePort: number;
  shutdown: { delayMs: number; graceMs: number };
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
  // Every setting on its own, by its entry's parser; a value it refuses is left out.
  const parsed: Partial<Record<SettingName, unknown>> = {};
  for (const setting of SETTINGS) {
    const given = raw(setting.name)?.trim();
    const value = given === undefined || given === '' ? setting.default : given;
    try {
      parsed[setting.name as SettingName] = setting.parse(value, { show: (text) => shown(setting.name, text) });
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      problems.push(...err.messages.map((message) => `${setting.name}: ${message}`));
    }
  }
  const v = parsed as Partial<SettingValues>;

  // Then what involves several settings at once.
  const clientId = v.KEAP_CLIENT_ID;
  const clientSecret = v.KEAP_CLIENT_SECRET;
  const apiKey = v.KEAP_API_KEY;
  const seedRefreshToken = v.KEAP_REFRESH_TOKEN;
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
      credentials = { mode: 'oauth', clientId, clientSecret, redirectUri: v.KEAP_REDIRECT_URI, seedRefreshToken };
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

  const { BODY_BUFFER_BUDGET_BYTES: budget, REPLAY_BODY_BYTES: replay, MAX_BODY_BYTES: maxBody } = v;
  if (budget !== undefined && replay !== undefined && maxBody !== undefined && budget < Math.min(replay, maxBody))
    problems.push(
      'BODY_BUFFER_BUDGET_BYTES: must be at least REPLAY_BODY_BYTES (one replayable body must fit); raise it or lower REPLAY_BODY_BYTES',
    );

  const store = v.TOKEN_STORE;
  if (store?.kind === 'redis' && store.url === undefined && v.REDIS_URL === undefined && 'REDIS_URL' in v)
    problems.push(
      'TOKEN_STORE: `redis` keeps the grant in REDIS_URL, which is not set; set REDIS_URL, or give TOKEN_STORE a redis:// URL or a file path',
    );

  if (problems.length > 0 || credentials === undefined) throw new ConfigError([...new Set(problems)]);
  // Every setting parsed: nothing was refused.
  const s = v as SettingValues;
  const mode = credentials.mode;
  return {
    host: s.HOST,
    port: s.PORT,
    allowedHosts: s.ALLOWED_HOSTS,
    keapApiUrl: s.KEAP_API_URL,
    keapTokenUrl: s.KEAP_TOKEN_URL,
    keapAuthorizeUrl: s.KEAP_AUTHORIZE_URL,
    credentials,
    tokenStore:
      s.TOKEN_STORE.kind === 'file'
        ? { kind: 'file', path: path.resolve(cwd, s.TOKEN_STORE.path) }
        : { kind: 'redis', url: s.TOKEN_STORE.url ?? (s.REDIS_URL as string) },
    redis: {
      url: s.REDIS_URL ?? (s.TOKEN_STORE.kind === 'redis' ? s.TOKEN_STORE.url : undefined),
      prefix: s.REDIS_PREFIX,
      lockLeaseMs: s.REDIS_LOCK_LEASE_MS,
    },
    replicas: s.REPLICAS,
    probePort: s.PROBE_PORT,
    xmlrpcMode: s.XMLRPC_MODE,
    xmlrpcFallbackDownMs: s.XMLRPC_FALLBACK_DOWN_MS,
    shutdown: { delayMs: s.SHUTDOWN_DELAY_MS, graceMs: s.SHUTDOWN_GRACE_MS },
    pacing: {
      perSecond: s.RATE_LIMIT_PER_SECOND[mode],
      perMinute: s.RATE_LIMIT_PER_MINUTE[mode],
      perDay: s.RATE_LIMIT_PER_DAY[mode],
      tenantPerMinute: s.TENANT_LIMIT_PER_MINUTE,
      tenantPerDay: s.TENANT_LIMIT_PER_DAY,
      margin: s.RATE_LIMIT_MARGIN,
      queueLimit: s.QUEUE_LIMIT,
    },
    requestDeadlineMs: s.REQUEST_DEADLINE_MS,
    cacheRules: s.CACHE_RULES,
    cacheMaxBytes: s.CACHE_MAX_BYTES,
    upstreamTimeoutMs: s.UPSTREAM_TIMEOUT_MS,
    maxBodyBytes: s.MAX_BODY_BYTES,
    replayBodyBytes: Math.min(s.REPLAY_BODY_BYTES, s.MAX_BODY_BYTES),
    bodyBufferBudgetBytes: s.BODY_BUFFER_BUDGET_BYTES,
    rateLimitMaxAttempts: s.RATE_LIMIT_MAX_ATTEMPTS,
    proxyClientKeys: s.PROXY_CLIENT_KEYS,
    relayCorsHeaders: s.RELAY_CORS_HEADERS,
    logLevel: s.LOG_LEVEL,
    configFile: fileName,
  };
}

/** Where the grant is, as a log line or `token status` may show it: a Redis URL without its credentials. */
export function storeLocation(store: Config['tokenStore']): string {
  return store.kind === 'file' ? store.path : redactedUrl(store.url);
}

function redactedUrl(value: string): string {
  try {
    const url = new URL(value);
    return `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}

/** What the start-up log line shows: the shape of the configuration, never a secret. */
export function configSummary(config: Config): Record<string, unknown> {
  return {
    mode: config.credentials.mode,
    listen: `${config.host}:${config.port}`,
    allowedHosts: config.allowedHosts,
    keapApiUrl: config.keapApiUrl.origin + config.keapApiUrl.pathname,
    keapTokenUrl: config.keapTokenUrl.origin + config.keapTokenUrl.pathname,
    tokenStore: config.credentials.mode === 'oauth' ? storeLocation(config.tokenStore) : undefined,
    redis: config.redis.url !== undefined ? redactedUrl(config.redis.url) : undefined,
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
    xmlrpcMode: config.xmlrpcMode,
    xmlrpcFallbackDownMs: config.xmlrpcMode === 'fallback' ? config.xmlrpcFallbackDownMs : undefined,
    configFile: config.configFile,
  };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
