// Configuration is read and validated once, here, at the edge. Nothing else in the
// process reads process.env: every component gets the typed Config (or a part of it).
// Each setting is parsed by its own entry in SETTINGS (settings.ts); what involves several
// settings at once is checked here, after that.
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import type { PaceLimits } from '../pacing/pacer.js';
import type { LogLevel } from '../observability/log.js';
import {
  ACCOUNT_SETTINGS,
  INHERITED,
  OWN_SETTINGS,
  readAccountsFile,
  type AccountSettingName,
} from './accounts-file.js';
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

export type TokenStoreConfig = { kind: 'file'; path: string } | { kind: 'redis'; url: string };

export type XmlRpcMode = 'passthrough' | 'translate' | 'fallback';

/** The id of the account the settings themselves configure, served at `/`. */
export const DEFAULT_ACCOUNT = 'default';

/** One Keap account: what it is served with and how requests reach it. */
export interface AccountConfig {
  id: string;
  credentials: Credentials;
  tokenStore: TokenStoreConfig;
  /** Prefix of this account's keys in Redis (the grant and its lock). */
  redisPrefix: string;
  /** Keap's limits the proxy paces to (each times `margin`); perSecond 0 turns pacing off. */
  pacing: PaceLimits;
  /** GET cache rules (`PATTERN=TTL_SECONDS,...`); empty: no cache. */
  cacheRules: string;
  /** How XML-RPC calls are served: passed through to Keap, translated to REST v2, or passed through with translation as the fallback. */
  xmlrpcMode: XmlRpcMode;
  /** The Keap app its grant must be for (`ab123.infusionsoft.com`); undefined: any. */
  app: string | undefined;
  /** Host names that reach it (besides `/accounts/<id>/`). */
  hosts: string[];
  /** A listener port of its own; undefined: none. */
  port: number | undefined;
  /** Its share of an OAuth client it shares with other accounts. */
  weight: number;
}

export interface Config {
  host: string;
  port: number;
  /** Host names (lower-case, IPv6 in brackets) requests may be addressed to besides loopback ones. */
  allowedHosts: string[];
  keapApiUrl: URL;
  keapTokenUrl: URL;
  keapAuthorizeUrl: URL;
  /**
   * The Keap accounts served: the one the settings configure (`default`, at `/`) when they
   * hold credentials, then ACCOUNTS_FILE's, in the file's order.
   */
  accounts: AccountConfig[];
  /** ACCOUNTS_FILE as given; undefined: none. */
  accountsFile: string | undefined;
  /** Most accounts whose state is held at once. */
  activeAccountsMax: number;
  /** Redis the replicas share; `url` undefined: none (pacing per process). */
  redis: { url: string | undefined; prefix: string; lockLeaseMs: number };
  /** Replicas sharing the quota: each paces to limit ÷ replicas while Redis is unreachable. */
  replicas: number;
  /** Fallback mode: how long translatable calls skip Keap's XML-RPC endpoint after it answered as down. */
  xmlrpcFallbackDownMs: number;
  /** Port of the probes-only listener on all interfaces; 0: none. */
  probePort: number;
  shutdown: { delayMs: number; graceMs: number };
  /** Longest a request may wait for Keap's rate limit, in all; a client may ask for less. */
  requestDeadlineMs: number;
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
  /** What is allowed but probably a mistake (plain http to a host that is not loopback): logged at start, never refused. */
  warnings: string[];
  /** keap-proxy's version (package.json's), for --version, the start-up line, /readyz and /metrics. */
  version: string;
  /** Whether this process runs in a container (Docker, Kubernetes): a loopback HOST is then worth a hint. */
  inContainer: boolean;
}

/**
 * What the process edge (src/cli/cli.ts) knows about the process itself rather than from the
 * settings: read there once, and handed in. Tests hand in their own.
 */
export interface ProcessFacts {
  version: string;
  inContainer: boolean;
}

/** The facts of a process nobody described: a version nobody read, no container. */
export const UNKNOWN_PROCESS: ProcessFacts = Object.freeze({ version: 'unknown', inContainer: false });

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
  /** The version and the container the edge found; default UNKNOWN_PROCESS. */
  facts?: ProcessFacts;
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

  // Secrets whose <NAME>_FILE could not be read: that is the one problem said about them (no "required" after it).
  const unreadable = new Set<string>();
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
      unreadable.add(name);
      return undefined;
    }
  };
  // Every setting on its own, by its entry's parser; a value it refuses is left out.
  const v = parseSettings(
    (name) => raw(name)?.trim(),
    (message) => problems.push(message),
  );

  // Then what involves several settings at once.
  const accountsFile = v.ACCOUNTS_FILE;
  const accounts: AccountConfig[] = [];
  const hasTopCredentials = [v.KEAP_CLIENT_ID, v.KEAP_CLIENT_SECRET, v.KEAP_API_KEY].some((x) => x !== undefined);
  if (accountsFile === undefined || hasTopCredentials) {
    const top = accountOf(DEFAULT_ACCOUNT, v, cwd, (message) => problems.push(message), unreadable, {
      redisPrefix: v.REDIS_PREFIX ?? 'keap-proxy:',
      hosts: [],
      port: undefined,
      weight: 1,
    });
    if (top !== undefined) accounts.push(top);
  }
  if (accountsFile !== undefined) {
    const file = readAccountsFile(accountsFile, cwd, SECRET_NAMES, problems);
    for (const entry of file?.entries ?? []) {
      const say = (message: string) => problems.push(`ACCOUNTS_FILE account "${entry.id}": ${message}`);
      if (entry.id === DEFAULT_ACCOUNT && hasTopCredentials) {
        say('`default` is the account the settings configure at `/`; give this one another id');
        continue;
      }
      const unreadableHere = new Set<string>();
      const value = (name: string): string | undefined => {
        const direct = entry.values.get(name);
        const fileRef = SECRET_NAMES.includes(name) ? entry.values.get(`${name}_FILE`) : undefined;
        if (fileRef !== undefined && fileRef !== '') {
          if (direct !== undefined && direct !== '') say(`${name}: set both ${name} and ${name}_FILE; set only one`);
          try {
            return readFileSync(path.resolve(file?.dir ?? cwd, fileRef), 'utf8').trim();
          } catch (err) {
            say(
              `${name}_FILE: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'}); point it at a readable file`,
            );
            unreadableHere.add(name);
            return undefined;
          }
        }
        if (direct !== undefined) return direct;
        if (name === 'TOKEN_STORE') return defaultStoreOf(entry.id, raw('TOKEN_STORE')?.trim(), cwd);
        return INHERITED.has(name as AccountSettingName) ? raw(name)?.trim() : undefined;
      };
      const own = parseSettings(value, say, ACCOUNT_SETTINGS);
      const account = accountOf(
        entry.id,
        { ...v, ...pick(own, ACCOUNT_SETTINGS) },
        file?.dir ?? cwd,
        say,
        unreadableHere,
        {
          redisPrefix: `${v.REDIS_PREFIX ?? 'keap-proxy:'}accounts:${entry.id}:`,
          hosts: entry.hosts,
          port: entry.port,
          weight: entry.weight,
        },
      );
      if (account !== undefined) accounts.push(account);
    }
    problems.push(...routingProblems(accounts, v));
  }

  const { BODY_BUFFER_BUDGET_BYTES: budget, REPLAY_BODY_BYTES: replay, MAX_BODY_BYTES: maxBody } = v;
  if (budget !== undefined && replay !== undefined && maxBody !== undefined && budget < Math.min(replay, maxBody))
    problems.push(
      'BODY_BUFFER_BUDGET_BYTES: must be at least REPLAY_BODY_BYTES (one replayable body must fit); raise it or lower REPLAY_BODY_BYTES',
    );

  if (problems.length > 0 || accounts.length === 0) throw new ConfigError([...new Set(problems)]);
  const warnings = [
    plainHttpWarning('KEAP_API_URL', v.KEAP_API_URL),
    plainHttpWarning('KEAP_TOKEN_URL', v.KEAP_TOKEN_URL),
  ].filter((w) => w !== undefined);
  // Every setting parsed: nothing was refused.
  const s = v as SettingValues;
  return {
    host: s.HOST,
    port: s.PORT,
    allowedHosts: s.ALLOWED_HOSTS,
    keapApiUrl: s.KEAP_API_URL,
    keapTokenUrl: s.KEAP_TOKEN_URL,
    keapAuthorizeUrl: s.KEAP_AUTHORIZE_URL,
    accounts,
    accountsFile,
    activeAccountsMax: s.ACCOUNTS_ACTIVE_MAX,
    redis: {
      url:
        s.REDIS_URL ??
        accounts.map((a) => (a.tokenStore.kind === 'redis' ? a.tokenStore.url : undefined)).find(Boolean),
      prefix: s.REDIS_PREFIX,
      lockLeaseMs: s.REDIS_LOCK_LEASE_MS,
    },
    replicas: s.REPLICAS,
    probePort: s.PROBE_PORT,
    xmlrpcFallbackDownMs: s.XMLRPC_FALLBACK_DOWN_MS,
    shutdown: { delayMs: s.SHUTDOWN_DELAY_MS, graceMs: s.SHUTDOWN_GRACE_MS },
    requestDeadlineMs: s.REQUEST_DEADLINE_MS,
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
    warnings,
    version: input.facts?.version ?? UNKNOWN_PROCESS.version,
    inContainer: input.facts?.inContainer ?? UNKNOWN_PROCESS.inContainer,
  };
}

/** Plain http to a host that is not loopback: keys and tokens would cross the network in the clear. */
function plainHttpWarning(name: string, url: URL | undefined): string | undefined {
  if (url === undefined || url.protocol !== 'http:' || isLoopback(url.hostname.replace(/^\[|\]$/g, '')))
    return undefined;
  return `${name}: ${shown(name, url.origin)} is plain http to a host that is not loopback: the API key or tokens would cross the network unencrypted; use https://`;
}

/** Account settings that may be absent: unset, they are parsed to undefined (a refused one is absent too). */
const OPTIONAL_ACCOUNT_SETTINGS = new Set<string>(
  [...OWN_SETTINGS, 'KEAP_REDIRECT_URI'].filter((name) => name !== 'TOKEN_STORE'),
);

/** Parses `names` (every setting by default) each by its entry's parser; a refused value is left out and said. */
function parseSettings(
  raw: (name: string) => string | undefined,
  say: (message: string) => void,
  names: readonly string[] = SETTINGS.map((s) => s.name),
): Partial<SettingValues> {
  const parsed: Partial<Record<SettingName, unknown>> = {};
  for (const setting of SETTINGS) {
    if (!names.includes(setting.name)) continue;
    const given = raw(setting.name);
    const value = given === undefined || given === '' ? setting.default : given;
    try {
      parsed[setting.name as SettingName] = setting.parse(value, { show: (text) => shown(setting.name, text) });
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      for (const message of err.messages) say(`${setting.name}: ${message}`);
    }
  }
  return parsed as Partial<SettingValues>;
}

function pick(values: Partial<SettingValues>, names: readonly string[]): Partial<SettingValues> {
  return Object.fromEntries(Object.entries(values).filter(([k]) => names.includes(k)));
}

/** A file account's grant, when it names no store: beside the process's, in `accounts/<id>.json`; in Redis, under its own keys. */
function defaultStoreOf(id: string, topStore: string | undefined, cwd: string): string {
  const store = topStore === undefined || topStore === '' ? './data/tokens.json' : topStore;
  if (/^(redis|rediss):\/\//i.test(store) || store === 'redis') return store;
  // Beside the process's store, wherever the accounts file is: resolved from the working directory as that one is.
  return path.resolve(cwd, path.dirname(store), 'accounts', `${id}.json`);
}

/** One account from parsed settings: its credentials (one mode, complete), store, limits and routes. */
function accountOf(
  id: string,
  v: Partial<SettingValues>,
  cwd: string,
  say: (message: string) => void,
  /** Secrets whose <NAME>_FILE could not be read (said already): nothing more is said of the credentials. */
  unreadable: ReadonlySet<string>,
  route: Pick<AccountConfig, 'redisPrefix' | 'hosts' | 'port' | 'weight'>,
): AccountConfig | undefined {
  const clientId = v.KEAP_CLIENT_ID;
  const clientSecret = v.KEAP_CLIENT_SECRET;
  const apiKey = v.KEAP_API_KEY;
  const seedRefreshToken = v.KEAP_REFRESH_TOKEN;
  let credentials: Credentials | undefined;
  // What the file would have held is unknown: any problem said of the credentials now would follow from that one.
  if (['KEAP_CLIENT_ID', 'KEAP_CLIENT_SECRET', 'KEAP_API_KEY', 'KEAP_REFRESH_TOKEN'].some((n) => unreadable.has(n))) {
    return undefined;
  }
  if (clientId !== undefined || clientSecret !== undefined) {
    if (clientId === undefined)
      say("KEAP_CLIENT_ID: required with KEAP_CLIENT_SECRET; set it to your Keap app's client id");
    if (clientSecret === undefined)
      say(
        "KEAP_CLIENT_SECRET: required with KEAP_CLIENT_ID; set it (or KEAP_CLIENT_SECRET_FILE) to your Keap app's client secret",
      );
    if (apiKey !== undefined)
      say(
        'KEAP_API_KEY: set together with OAuth client credentials; set either KEAP_CLIENT_ID + KEAP_CLIENT_SECRET (OAuth mode) or KEAP_API_KEY (key mode), not both',
      );
    if (clientId !== undefined && clientSecret !== undefined)
      credentials = { mode: 'oauth', clientId, clientSecret, redirectUri: v.KEAP_REDIRECT_URI, seedRefreshToken };
  } else if (apiKey !== undefined) {
    if (seedRefreshToken !== undefined)
      say('KEAP_REFRESH_TOKEN: only used in OAuth mode; set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET too, or remove it');
    if (v.KEAP_APP !== undefined)
      say('KEAP_APP: checks the app an OAuth grant is for; a key has no grant: remove it, or use OAuth mode');
    credentials = { mode: 'key', apiKey };
  } else {
    say(
      id === DEFAULT_ACCOUNT
        ? 'credentials: none configured; set KEAP_CLIENT_ID and KEAP_CLIENT_SECRET (OAuth mode) or KEAP_API_KEY (key mode), or ACCOUNTS_FILE, or run `npm run demo` to try the proxy against the built-in simulator'
        : 'credentials: none configured; give the account KEAP_CLIENT_ID and KEAP_CLIENT_SECRET (OAuth mode) or KEAP_API_KEY (key mode)',
    );
  }
  const store = v.TOKEN_STORE;
  if (store?.kind === 'redis' && store.url === undefined && v.REDIS_URL === undefined && 'REDIS_URL' in v)
    say(
      'TOKEN_STORE: `redis` keeps the grant in REDIS_URL, which is not set; set REDIS_URL, or give TOKEN_STORE a redis:// URL or a file path',
    );
  if (credentials === undefined) return undefined;
  const s = v as SettingValues;
  // A value its parser refused is said already; the account is not made.
  if (ACCOUNT_SETTINGS.some((name) => !(name in v) && !OPTIONAL_ACCOUNT_SETTINGS.has(name))) return undefined;
  const mode = credentials.mode;
  return {
    id,
    credentials,
    tokenStore:
      s.TOKEN_STORE.kind === 'file'
        ? { kind: 'file', path: path.resolve(cwd, s.TOKEN_STORE.path) }
        : { kind: 'redis', url: s.TOKEN_STORE.url ?? (s.REDIS_URL as string) },
    pacing: {
      perSecond: s.RATE_LIMIT_PER_SECOND[mode],
      perMinute: s.RATE_LIMIT_PER_MINUTE[mode],
      perDay: s.RATE_LIMIT_PER_DAY[mode],
      tenantPerMinute: s.TENANT_LIMIT_PER_MINUTE.value,
      tenantPerDay: s.TENANT_LIMIT_PER_DAY.value,
      margin: s.RATE_LIMIT_MARGIN,
      queueLimit: s.QUEUE_LIMIT,
      // Which of Keap's limits the operator set: Keap's reported limits replace the others.
      explicit: {
        perSecond: s.RATE_LIMIT_PER_SECOND.explicit,
        perMinute: s.RATE_LIMIT_PER_MINUTE.explicit,
        perDay: s.RATE_LIMIT_PER_DAY.explicit,
        tenantPerMinute: s.TENANT_LIMIT_PER_MINUTE.explicit,
        tenantPerDay: s.TENANT_LIMIT_PER_DAY.explicit,
      },
    },
    cacheRules: s.CACHE_RULES,
    xmlrpcMode: s.XMLRPC_MODE,
    app: s.KEAP_APP,
    ...route,
  };
}

/** Two accounts may not share a host name, a port or a grant file, nor take the proxy's own ports. */
function routingProblems(accounts: readonly AccountConfig[], v: Partial<SettingValues>): string[] {
  const problems: string[] = [];
  const hosts = new Map<string, string>();
  const ports = new Map<number, string>();
  const stores = new Map<string, string>();
  for (const a of accounts) {
    for (const host of a.hosts) {
      const other = hosts.get(host);
      if (other !== undefined)
        problems.push(`ACCOUNTS_FILE account "${a.id}": hosts: ${host} is account "${other}"'s already`);
      hosts.set(host, a.id);
    }
    if (a.port !== undefined) {
      const other = ports.get(a.port);
      if (other !== undefined)
        problems.push(`ACCOUNTS_FILE account "${a.id}": port: ${a.port} is account "${other}"'s already`);
      if (a.port === v.PORT || a.port === v.PROBE_PORT)
        problems.push(`ACCOUNTS_FILE account "${a.id}": port: ${a.port} is the proxy's own (PORT or PROBE_PORT)`);
      ports.set(a.port, a.id);
    }
    if (a.credentials.mode === 'oauth' && a.tokenStore.kind === 'file') {
      const other = stores.get(a.tokenStore.path);
      if (other !== undefined)
        problems.push(
          `ACCOUNTS_FILE account "${a.id}": TOKEN_STORE: the grant file of account "${other}" too; each account needs its own (Keap rotates the refresh token)`,
        );
      stores.set(a.tokenStore.path, a.id);
    }
  }
  return problems;
}

/** The account a command is for: the one named, or the default (or only) one. */
export function accountNamed(config: Config, id: string | undefined): AccountConfig {
  const ids = config.accounts.map((a) => a.id);
  const listed = ids.length > 20 ? `${ids.slice(0, 20).join(', ')} and ${ids.length - 20} more` : ids.join(', ');
  if (id !== undefined) {
    const found = config.accounts.find((a) => a.id === id);
    if (found === undefined)
      throw new ConfigError([
        `--account: no account "${id.replace(/[^\x20-\x7e]/g, '?').slice(0, 64)}" is configured; name one of: ${listed}`,
      ]);
    return found;
  }
  const only =
    config.accounts.find((a) => a.id === DEFAULT_ACCOUNT) ??
    (config.accounts.length === 1 ? config.accounts[0] : undefined);
  if (only === undefined)
    throw new ConfigError([
      `--account: ${config.accounts.length} accounts are configured (ACCOUNTS_FILE) and none is the default; say which one this command is for with --account <id> (configured: ${listed})`,
    ]);
  return only;
}

/** Where the grant is, as a log line or `token status` may show it: a Redis URL without its credentials. */
export function storeLocation(store: TokenStoreConfig): string {
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

/** What the start-up log line shows of one account, never a secret. */
function accountSummary(a: AccountConfig, config: Config): Record<string, unknown> {
  return {
    mode: a.credentials.mode,
    tokenStore: a.credentials.mode === 'oauth' ? storeLocation(a.tokenStore) : undefined,
    seedRefreshToken: a.credentials.mode === 'oauth' ? a.credentials.seedRefreshToken !== undefined : undefined,
    pacing: a.pacing,
    cache: a.cacheRules !== '',
    xmlrpcMode: a.xmlrpcMode,
    xmlrpcFallbackDownMs: a.xmlrpcMode === 'fallback' ? config.xmlrpcFallbackDownMs : undefined,
  };
}

/** What the start-up log line shows: the shape of the configuration, never a secret. */
export function configSummary(config: Config): Record<string, unknown> {
  const only = config.accounts.length === 1 ? config.accounts[0] : undefined;
  return {
    ...(only !== undefined
      ? accountSummary(only, config)
      : {
          accounts: config.accounts.length,
          accountIds: config.accounts.slice(0, 20).map((a) => a.id),
          activeAccountsMax: config.activeAccountsMax,
        }),
    accountsFile: config.accountsFile,
    listen: `${config.host}:${config.port}`,
    allowedHosts: config.allowedHosts,
    keapApiUrl: config.keapApiUrl.origin + config.keapApiUrl.pathname,
    keapTokenUrl: config.keapTokenUrl.origin + config.keapTokenUrl.pathname,
    redis: config.redis.url !== undefined ? redactedUrl(config.redis.url) : undefined,
    requestDeadlineMs: config.requestDeadlineMs,
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
