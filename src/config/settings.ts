// The settings, in one table: each entry is a setting's default, its meaning and its parser.
// loadConfig (config.ts) validates every value with its entry's parser; --help and README's
// settings table are written from the same entries (test/config.test.ts holds README to
// them), so validation and the two documents cannot drift apart. What involves several
// settings at once (the credentials' mode, the mode's rate limits, the body limits) is
// checked in loadConfig, after every setting has been parsed on its own.
import { isIP } from 'node:net';
import { parseCacheRules } from '../cache/cache-rules.js';
import { parseAllowedHosts } from '../http/host-check.js';
import { LOG_LEVELS } from '../observability/log.js';

/** A value a parser refuses; each message says why, and follows the setting's name. */
export class Invalid extends Error {
  readonly messages: readonly string[];
  constructor(...messages: string[]) {
    super(messages.join('; '));
    this.name = 'Invalid';
    this.messages = messages;
  }
}

export interface SettingContext {
  /** The value as a message may show it: quoted, a URL's credentials masked, a secret never. */
  show(value: string): string;
}

/** Makes a setting's value (trimmed; its default when empty or unset) into what Config holds; throws Invalid. */
export type Parser<T> = (value: string, ctx: SettingContext) => T;

export interface Setting<T = unknown> {
  readonly name: string;
  /** The built-in default, as config/keap-proxy.properties writes it; '' when empty means something. */
  readonly default: string;
  /** The default as README and --help show it (markdown); '' for none. */
  readonly defaultDoc: string;
  /** What the setting does (markdown: README shows it as it is, --help without the markup). */
  readonly meaning: string;
  /** Never shown in a message; may be read from a file named by <NAME>_FILE. */
  readonly secret: boolean;
  readonly parse: Parser<T>;
}

/** The credentials' mode (config.ts's Credentials['mode']). */
export type Mode = 'oauth' | 'key';

type Entry<T> = Omit<Setting<T>, 'name'>;

interface Doc {
  meaning: string;
  secret?: boolean;
}

const MiB = 1024 * 1024;

function entry<T>(doc: Doc, dflt: string, parse: Parser<T>, defaultDoc?: string): Entry<T> {
  return {
    default: dflt,
    defaultDoc: defaultDoc ?? (dflt === '' ? '' : `\`${dflt}\``),
    meaning: doc.meaning,
    secret: doc.secret ?? false,
    parse,
  };
}

/** Any text; its default when empty. */
function text(doc: Doc & { default: string }): Entry<string> {
  return entry(doc, doc.default, (value) => value);
}

/** A Keap app name, as grant scopes name it: `ab123` becomes `ab123.infusionsoft.com`; or nothing. */
function keapApp(doc: Doc): Entry<string | undefined> {
  return entry(doc, '', (value, ctx) => {
    if (value === '') return undefined;
    const host = value.toLowerCase();
    if (!/^[a-z0-9][a-z0-9-]{0,62}(\.[a-z0-9][a-z0-9-]{0,62})*$/.test(host))
      throw new Invalid(
        `${ctx.show(value)} is not a Keap app name; give it as \`ab123\` or \`ab123.infusionsoft.com\``,
      );
    return host.includes('.') ? host : `${host}.infusionsoft.com`;
  });
}

/** Any text, or nothing. */
function optionalText(doc: Doc): Entry<string | undefined> {
  return entry(doc, '', (value) => (value === '' ? undefined : value));
}

function checkWholeNumber(value: string, min: number, max: number, ctx: SettingContext): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new Invalid(`${ctx.show(value)} is not a whole number from ${min} to ${max}`);
  return n;
}

function wholeNumber(doc: Doc & { default: number; min: number; max: number }): Entry<number> {
  return entry(doc, String(doc.default), (value, ctx) => checkWholeNumber(value, doc.min, doc.max, ctx));
}

/** A size in bytes, up to 1 TiB. */
function bytes(doc: Doc & { default: number; min: number }): Entry<number> {
  const mib = doc.default % MiB === 0 ? ` (${doc.default / MiB} MiB)` : '';
  return entry(
    doc,
    String(doc.default),
    (value, ctx) => checkWholeNumber(value, doc.min, 2 ** 40, ctx),
    `\`${doc.default}\`${mib}`,
  );
}

/**
 * One of Keap's limits. `explicit`: the operator set it (Keap's reports only lower it); false:
 * left at Keap's published figure, which Keap's reported limits replace (see pacing/gate.ts, paceLimit).
 */
export type KeapLimit<T> = T & { explicit: boolean };

/** A whole number whose default depends on the credentials' mode (Keap's published limits): empty means that default. */
function perMode(
  doc: Doc & Record<Mode, number> & { min: number; max: number },
): Entry<KeapLimit<Record<Mode, number>>> {
  return entry(
    doc,
    '',
    (value, ctx) => {
      if (value === '') return { oauth: doc.oauth, key: doc.key, explicit: false };
      const n = checkWholeNumber(value, doc.min, doc.max, ctx);
      return { oauth: n, key: n, explicit: true };
    },
    `${doc.oauth} (OAuth), ${doc.key} (key)`,
  );
}

/** A whole number, Keap's published limit when empty (then not explicit). */
function keapLimit(doc: Doc & { default: number; min: number; max: number }): Entry<KeapLimit<{ value: number }>> {
  return entry(
    doc,
    '',
    (value, ctx) =>
      value === ''
        ? { value: doc.default, explicit: false }
        : { value: checkWholeNumber(value, doc.min, doc.max, ctx), explicit: true },
    `${doc.default}`,
  );
}

/** A number above 0 and at most 1. */
function fraction(doc: Doc & { default: number }): Entry<number> {
  return entry(doc, String(doc.default), (value, ctx) => {
    const n = Number(value);
    if (!/^\d*\.?\d+$/.test(value) || !(n > 0 && n <= 1))
      throw new Invalid(`${ctx.show(value)} is not a number above 0 and at most 1, e.g. ${doc.default}`);
    return n;
  });
}

function bool(doc: Doc & { default: boolean }): Entry<boolean> {
  return entry(doc, String(doc.default), (value, ctx) => {
    const v = value.toLowerCase();
    if (v !== 'true' && v !== 'false') throw new Invalid(`${ctx.show(value)} is not true or false`);
    return v === 'true';
  });
}

/** One of `values` (all lower-case), in any case: `INFO` and `Debug` are `info` and `debug`. */
function oneOf<const V extends string>(doc: Doc & { default: NoInfer<V>; values: readonly V[] }): Entry<V> {
  return entry(doc, doc.default, (value, ctx) => {
    const v = value.toLowerCase();
    if (!(doc.values as readonly string[]).includes(v))
      throw new Invalid(`${ctx.show(value)} is not one of ${doc.values.join(', ')}`);
    return v as V;
  });
}

function checkHttpUrl(value: string, example: string, ctx: SettingContext): URL {
  try {
    const u = new URL(value);
    if ((u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password) return u;
  } catch {
    // Not a URL at all: the same message.
  }
  throw new Invalid(`${ctx.show(value)} is not an http(s) URL without credentials, e.g. ${example}`);
}

/**
 * An http(s) URL without credentials; `origin`: the origin alone, no path, query string or
 * fragment (each request's own path is added to it: a path would be doubled).
 */
function httpUrl(doc: Doc & { default: string; origin?: boolean }): Entry<URL> {
  return entry(doc, doc.default, (value, ctx) => {
    const u = checkHttpUrl(value, doc.default, ctx);
    if (doc.origin === true && (u.search || u.hash || u.pathname !== '/'))
      throw new Invalid(
        `${ctx.show(value)} has a ${u.pathname !== '/' ? 'path' : u.search ? 'query string' : 'fragment'}; give the origin only, e.g. ${doc.default} (each request's own path, such as /crm/rest/v1/contacts, is added to it)`,
      );
    return u;
  });
}

/** An http(s) URL without credentials, kept as given; or nothing. */
function optionalHttpUrl(doc: Doc): Entry<string | undefined> {
  return entry(doc, '', (value, ctx) => {
    if (value === '') return undefined;
    checkHttpUrl(value, 'https://example.com', ctx);
    return value;
  });
}

/** The address to listen on: an IP address or localhost. */
function listenAddress(doc: Doc & { default: string }): Entry<string> {
  return entry(doc, doc.default, (value, ctx) => {
    if (isIP(value) === 0 && value !== 'localhost')
      throw new Invalid(`${ctx.show(value)} is not an IP address; use ${doc.default} (default), ::1 or 0.0.0.0`);
    return value;
  });
}

/** Host names and IP addresses, comma-separated (see parseAllowedHosts). */
function hostNames(doc: Doc): Entry<string[]> {
  return entry(doc, '', (value, ctx) => {
    try {
      return parseAllowedHosts(value, (host) => ctx.show(host));
    } catch (err) {
      throw new Invalid((err as Error).message);
    }
  });
}

/** Client keys, comma-separated: at least 16 characters each, no white space. */
function clientKeys(doc: Doc): Entry<string[]> {
  return entry(doc, '', (value) => {
    const keys = value
      .split(',')
      .map((k) => k.trim())
      .filter((k) => k !== '');
    const problems = new Set<string>();
    for (const key of keys) {
      if (key.length < 16)
        problems.add('every key must be at least 16 characters; generate one with `openssl rand -hex 32`');
      if (/\s/.test(key)) problems.add('keys must not contain white space');
    }
    if (problems.size > 0) throw new Invalid(...problems);
    return keys;
  });
}

/** GET cache rules (see parseCacheRules), kept as given. */
function cacheRules(doc: Doc): Entry<string> {
  return entry(doc, '', (value, ctx) => {
    try {
      parseCacheRules(value);
      return value;
    } catch (err) {
      // The message quotes the rule it refused; a rule with an '@' may be a URL, credentials and all, pasted in by mistake.
      throw new Invalid(
        value.includes('@')
          ? `${ctx.show(value)} holds a rule that is not PATTERN=TTL_SECONDS (a path, or a prefix ending in '*')`
          : (err as Error).message,
      );
    }
  });
}

/** Where the grant is kept: a file path (relative to the working directory), a Redis URL, or `redis` (REDIS_URL). */
export type TokenStoreSetting = { kind: 'file'; path: string } | { kind: 'redis'; url: string | undefined };

function tokenStore(doc: Doc & { default: string }): Entry<TokenStoreSetting> {
  return entry(doc, doc.default, (value, ctx) => {
    if (value === 'redis') return { kind: 'redis', url: undefined };
    if (/^rediss?:/i.test(value)) return { kind: 'redis', url: checkRedisUrl(value, ctx) };
    return { kind: 'file', path: value };
  });
}

function checkRedisUrl(value: string, ctx: SettingContext): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Invalid(`${ctx.show(value)} is not a URL; give redis://host:port/db or rediss://host:port/db`);
  }
  if (!/^rediss?:$/.test(url.protocol) || url.hostname === '')
    throw new Invalid(`${ctx.show(value)} is not a Redis URL; give redis://host:port/db or rediss://host:port/db`);
  if (url.pathname !== '' && url.pathname !== '/' && !/^\/\d+$/.test(url.pathname))
    throw new Invalid(
      `${ctx.show(value)} names database ${JSON.stringify(url.pathname.slice(1))}; a database is a number, e.g. /0`,
    );
  return value;
}

/** A Redis URL, or nothing. */
function optionalRedisUrl(doc: Doc): Entry<string | undefined> {
  return entry(doc, '', (value, ctx) => (value === '' ? undefined : checkRedisUrl(value, ctx)));
}

const DEFINITIONS = {
  HOST: listenAddress({
    default: '127.0.0.1',
    meaning:
      'Address to listen on. Keep loopback for a sidecar; anything wider needs `PROXY_CLIENT_KEYS` (the proxy warns at start otherwise).',
  }),
  PORT: wholeNumber({ default: 8080, min: 0, max: 65_535, meaning: 'Port to listen on (`0` picks a free one).' }),
  ALLOWED_HOSTS: hostNames({
    meaning:
      'Comma-separated host names (or IP addresses) clients address the proxy by, besides `127.x.x.x`, `localhost` and `[::1]`; case and port are ignored, no wildcards. Any other `Host` gets `421 misdirected_request` (a guard against DNS rebinding), except `/healthz` and `/readyz` (see [What clients see](#what-clients-see)). A proxy other hosts call, by name or by IP, needs their names here.',
  }),
  KEAP_API_URL: httpUrl({
    default: 'https://api.infusionsoft.com',
    origin: true,
    meaning: 'Keap API origin, without a path: the only host requests are forwarded to.',
  }),
  KEAP_TOKEN_URL: httpUrl({ default: 'https://api.infusionsoft.com/token', meaning: 'OAuth2 token endpoint.' }),
  KEAP_AUTHORIZE_URL: httpUrl({
    default: 'https://accounts.infusionsoft.com/app/oauth/authorize',
    meaning: 'OAuth2 authorize page, where `keap-proxy auth` and `/oauth/start` send the browser.',
  }),
  KEAP_CLIENT_ID: optionalText({
    meaning: 'OAuth client id. With `KEAP_CLIENT_SECRET`: OAuth mode.',
    secret: true,
  }),
  KEAP_CLIENT_SECRET: optionalText({ meaning: 'OAuth client secret.', secret: true }),
  KEAP_REDIRECT_URI: optionalHttpUrl({
    meaning:
      'The redirect URI registered for the OAuth client; needed by `keap-proxy auth` and `/oauth/*` (see [Authorizing (OAuth)](#authorizing-oauth)).',
  }),
  KEAP_REFRESH_TOKEN: optionalText({
    meaning: 'Seed refresh token, used only while the token store holds nothing newer (the store wins).',
    secret: true,
  }),
  KEAP_APP: keapApp({
    meaning:
      'The Keap app (account) the grant must be for, e.g. `ab123` or `ab123.infusionsoft.com`: a grant whose scope names another app (`full|xy987.infusionsoft.com`) is refused, not stored. Empty: any.',
  }),
  KEAP_API_KEY: optionalText({
    meaning: 'Personal Access Token, Service Account Key or legacy Encrypted Key. Alone: key mode.',
    secret: true,
  }),
  TOKEN_STORE: tokenStore({
    default: './data/tokens.json',
    meaning:
      'Where the OAuth grant is kept: a file (written atomically, mode 0600), or Redis for replicas sharing one grant: `redis://host:port/db`, `rediss://…`, or `redis` to use `REDIS_URL`. See [Replicas](#replicas).',
  }),
  ACCOUNTS_FILE: optionalText({
    meaning:
      'A JSON file of Keap accounts this proxy serves besides (or instead of) the one the settings above configure: `{ "accounts": { "<id>": { "<SETTING>": "value", … } } }`, each at `/accounts/<id>/` (see [Several accounts](#several-accounts)). Reloaded on SIGHUP.',
  }),
  ACCOUNTS_ACTIVE_MAX: wholeNumber({
    default: 1000,
    min: 1,
    max: 1_000_000,
    meaning:
      'Most accounts whose state (grant, queue, connections to Redis) is held at once; the least recently used idle one is let go beyond it, and made again on its next request.',
  }),
  REDIS_URL: optionalRedisUrl({
    meaning:
      "Redis that replicas share (`redis://[user:password@]host:port/db` or `rediss://…`): the grant when `TOKEN_STORE=redis`, and Keap's quota, paced across all replicas, whenever set.",
    secret: true,
  }),
  REDIS_PREFIX: text({ default: 'keap-proxy:', meaning: 'Prefix of every key keap-proxy writes in Redis.' }),
  REDIS_LOCK_LEASE_MS: wholeNumber({
    default: 15_000,
    min: 100,
    max: 600_000,
    meaning:
      "Lease of the refresh lock in Redis, renewed every third of it while a refresh runs (however long Keap's token endpoint takes): a replica that dies holding the lock blocks refreshes this long at most.",
  }),
  REPLICAS: wholeNumber({
    default: 1,
    min: 1,
    max: 1000,
    meaning:
      'How many replicas share the quota. Only used while Redis is unreachable: each replica then paces to its share of every limit (limit ÷ `REPLICAS`).',
  }),
  RATE_LIMIT_PER_SECOND: perMode({
    oauth: 25,
    key: 10,
    min: 0,
    max: 1_000_000_000,
    meaning:
      "Keap's per-second spike limit; calls are spaced evenly at `RATE_LIMIT_MARGIN` of it. `0` turns pacing off (benchmarks). Left empty, the spike limit Keap reports (`x-keap-product-spike-limit`) replaces the default.",
  }),
  RATE_LIMIT_PER_MINUTE: perMode({
    oauth: 1500,
    key: 240,
    min: 1,
    max: 1_000_000_000,
    meaning:
      "Keap's rolling per-minute throttle. Left empty, the limit Keap reports replaces the default, higher or lower (a client or key can have a larger quota); a value set here is a ceiling Keap's reports only lower.",
  }),
  RATE_LIMIT_PER_DAY: perMode({
    oauth: 150_000,
    key: 30_000,
    min: 1,
    max: 1_000_000_000,
    meaning: "Keap's daily quota; it resets at 00:00 UTC. Left empty, the limit Keap reports replaces the default.",
  }),
  TENANT_LIMIT_PER_MINUTE: keapLimit({
    default: 10_000,
    min: 1,
    max: 1_000_000_000,
    meaning: "Keap's per-account limit per minute, any token type. Left empty, the limit Keap reports replaces it.",
  }),
  TENANT_LIMIT_PER_DAY: keapLimit({
    default: 250_000,
    min: 1,
    max: 1_000_000_000,
    meaning: "Keap's per-account limit per day. Left empty, the limit Keap reports replaces it.",
  }),
  RATE_LIMIT_MARGIN: fraction({
    default: 0.9,
    meaning: 'Share of every limit the proxy uses; the rest is headroom for other apps of the same client or account.',
  }),
  QUEUE_LIMIT: wholeNumber({
    default: 1000,
    min: 1,
    max: 1_000_000,
    meaning: 'Requests that may wait for the rate limit; past that, `503 queue_full` with `Retry-After` at once.',
  }),
  RATE_LIMIT_MAX_ATTEMPTS: wholeNumber({
    default: 10,
    min: 1,
    max: 100,
    meaning:
      "Sends of one request in all while Keap answers 429 (replays at least 250 ms apart, backing off with jitter, or Keap's longer `Retry-After`); then `429 rate_limited`.",
  }),
  REQUEST_DEADLINE_MS: wholeNumber({
    default: 30_000,
    min: 1,
    max: 3_600_000,
    meaning:
      'Longest a request waits for the rate limit or a Keap 429, in all; then `429 rate_limited` with `Retry-After`. A client may ask for less with `X-Keap-Proxy-Deadline-Ms`.',
  }),
  CACHE_RULES: cacheRules({
    meaning:
      'GET cache, off when empty: `PATTERN=TTL_SECONDS` entries, comma-separated; a pattern is a path or a prefix ending in `*`, e.g. `/crm/rest/v1/tags*=300,/crm/rest/v1/contacts/model=3600`.',
  }),
  CACHE_MAX_BYTES: bytes({
    default: 64 * MiB,
    min: 0,
    meaning: 'Most bytes the GET cache holds (least recently used entries go first).',
  }),
  UPSTREAM_TIMEOUT_MS: wholeNumber({
    default: 60_000,
    min: 1,
    max: 3_600_000,
    meaning: 'Keap must start answering within this many ms, else 504.',
  }),
  MAX_BODY_BYTES: bytes({
    default: 50 * MiB,
    min: 1,
    meaning: 'Largest request body accepted; larger gets 413.',
  }),
  REPLAY_BODY_BYTES: bytes({
    default: 10 * MiB,
    min: 0,
    meaning: 'Bodies up to this size are buffered (so a gateway 401 can be replayed); larger ones stream.',
  }),
  BODY_BUFFER_BUDGET_BYTES: bytes({
    default: 192 * MiB,
    min: 1,
    meaning:
      'Most memory all buffered request bodies may hold at once (the default fits a 512 MiB pod); past it a request gets `503 body_budget_exhausted` with `Retry-After` at once. At least `REPLAY_BODY_BYTES`. See [Memory](#memory).',
  }),
  PROXY_CLIENT_KEYS: clientKeys({
    meaning:
      'Comma-separated client keys (16+ characters each). When set, every proxied request needs `Authorization: Bearer <one of them>`; XML-RPC clients may send the key as the `privateKey` parameter instead (it is replaced before the call reaches Keap).',
    secret: true,
  }),
  RELAY_CORS_HEADERS: bool({
    default: false,
    meaning:
      "`true` passes Keap's `Access-Control-Allow-*`, `Access-Control-Expose-Headers` and `Access-Control-Max-Age` response headers on to clients (and keeps them in the GET cache); by default they are dropped, so no web page on another origin can read answers through the proxy.",
  }),
  XMLRPC_MODE: oneOf({
    default: 'passthrough',
    values: ['passthrough', 'translate', 'fallback'] as const,
    meaning:
      "`passthrough` sends XML-RPC calls to Keap's XML-RPC endpoint. `translate` answers the calls it can translate from Keap's REST v2 and any other with a fault naming the method. `fallback` sends them to Keap's XML-RPC endpoint and, when it answers as retired or browned out (404, 410, 5xx, an answer that is not XML, none in time), translates the calls it can, as far as that is safe for a call Keap may have run; calls it cannot translate always get Keap's answer (see [Legacy apps](#legacy-apps-and-xml-rpc)).",
  }),
  XMLRPC_FALLBACK_DOWN_MS: wholeNumber({
    default: 300_000,
    min: 0,
    max: 86_400_000,
    meaning:
      "With `XMLRPC_MODE=fallback`: after Keap's XML-RPC endpoint answers as retired or down, the calls the proxy can translate skip it for this long and are translated at once; then the next one tries it again. `0`: every call tries it first.",
  }),
  PROBE_PORT: wholeNumber({
    default: 0,
    min: 0,
    max: 65_535,
    meaning:
      'A second listener, on all interfaces, that answers `/healthz` and `/readyz` only: for Kubernetes probes of a sidecar that listens on loopback. `0`: none (the probes are answered on `PORT`).',
  }),
  SHUTDOWN_DELAY_MS: wholeNumber({
    default: 5000,
    min: 0,
    max: 600_000,
    meaning:
      'On SIGTERM, `/readyz` turns 503 at once, and new connections are still accepted for this long (while Kubernetes takes the pod out of its endpoints).',
  }),
  SHUTDOWN_GRACE_MS: wholeNumber({
    default: 20_000,
    min: 0,
    max: 3_600_000,
    meaning:
      "Then no new connections; requests in flight get this long to finish, and the rest are cut (logged as `cut_by_shutdown`). Keep delay + grace inside the pod's grace period (30 s by default).",
  }),
  LOG_LEVEL: oneOf({
    default: 'info',
    values: LOG_LEVELS,
    meaning: `${LOG_LEVELS.slice(0, -1)
      .map((l) => `\`${l}\``)
      .join(', ')} or \`${LOG_LEVELS.at(-1)}\`.`,
  }),
} satisfies Record<string, Entry<unknown>>;

export type SettingName = keyof typeof DEFINITIONS;

/** Every setting's value, as its parser made it. */
export type SettingValues = { [K in SettingName]: ReturnType<(typeof DEFINITIONS)[K]['parse']> };

/** Every setting, in the order README and --help list them. */
export const SETTINGS: readonly Setting<SettingValues[SettingName]>[] = Object.entries(DEFINITIONS).map(
  ([name, e]) => ({ name, ...e }),
);
