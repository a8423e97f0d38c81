// What of an account's GETs is cached, and under which key: its CACHE_RULES, compiled once
// per account (openAccount), so a request costs a method compare and a few `startsWith`
// calls. The answers themselves live in the one GetCache (get-cache.ts) every account shares.
import type { IncomingHttpHeaders } from 'node:http';

export interface CacheRule {
  /** path pattern: exact path, or a prefix ending in '*', e.g. '/crm/rest/v1/tags*'; matched against the path without the query */
  pattern: string;
  ttlSeconds: number;
}

const EXPECTED_FORM =
  "expected PATTERN=TTL_SECONDS, e.g. '/crm/rest/v1/tags*=300' or '/crm/rest/v1/contacts/model=3600'";

/** Parses 'PATTERN=TTL_SECONDS' entries separated by commas (whitespace around entries is ignored). */
export function parseCacheRules(text: string): CacheRule[] {
  const rules: CacheRule[] = [];
  const seen = new Set<string>();
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    // A trailing comma in a config value is not worth refusing to start over.
    if (entry === '') continue;
    const bad = (why: string): Error => new Error(`Invalid cache rule '${entry}': ${why}; ${EXPECTED_FORM}`);
    // The last '=': a path may contain '=' (matrix parameters), a TTL never does.
    const eq = entry.lastIndexOf('=');
    if (eq < 0) throw bad("missing '='");
    const pattern = entry.slice(0, eq).trim();
    const ttlText = entry.slice(eq + 1).trim();
    if (!pattern.startsWith('/')) throw bad("the pattern must be a path starting with '/'");
    if (/\s/.test(pattern)) throw bad('the pattern must not contain whitespace');
    if (pattern.includes('?')) throw bad('patterns match the path only, so must not contain a query');
    const star = pattern.indexOf('*');
    if (star >= 0 && star !== pattern.length - 1) throw bad("'*' is allowed only at the end of a pattern");
    if (!/^[0-9]+$/.test(ttlText) || Number(ttlText) <= 0 || !Number.isSafeInteger(Number(ttlText))) {
      throw bad('the TTL must be a whole number of seconds greater than 0');
    }
    // Two TTLs for one pattern is a config mistake; picking one silently would hide it.
    if (seen.has(pattern)) throw bad('this pattern is already listed');
    seen.add(pattern);
    rules.push({ pattern, ttlSeconds: Number(ttlText) });
  }
  return rules;
}

interface PrefixRule {
  prefix: string;
  ttlMs: number;
}

/**
 * Response headers a cached copy can vary on, because `keyFor` puts the request's value of
 * each in the key. Accept-Encoding matters most: a gzip body served to a client that did not
 * ask for gzip would be garbage to it.
 */
export const KEYED_REQUEST_HEADERS = ['accept-encoding', 'origin'] as const;

/**
 * Paths that reach outside what the rule names once Keap normalises them (`/tags/../contacts`)
 * would cache data the operator never chose to; they go upstream uncached.
 */
const UNNORMALISED_PATH = /\/\.|%2e|%2f|\\/i;

/** One account's cache rules, compiled: exact paths in a map, prefixes longest first. */
export class CacheRules {
  /** Caches nothing: an account without CACHE_RULES. */
  static readonly none = new CacheRules([]);

  private readonly exact = new Map<string, number>();
  /** Longest first, so the most specific prefix decides the TTL. */
  private readonly prefixes: PrefixRule[] = [];

  constructor(rules: readonly CacheRule[]) {
    for (const rule of rules) {
      const ttlMs = rule.ttlSeconds * 1000;
      if (rule.pattern.endsWith('*')) this.prefixes.push({ prefix: rule.pattern.slice(0, -1), ttlMs });
      else this.exact.set(rule.pattern, ttlMs);
    }
    this.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** From CACHE_RULES text (`PATTERN=TTL_SECONDS,...`); empty text caches nothing. */
  static parse(text: string): CacheRules {
    const rules = parseCacheRules(text);
    return rules.length === 0 ? CacheRules.none : new CacheRules(rules);
  }

  get enabled(): boolean {
    return this.exact.size > 0 || this.prefixes.length > 0;
  }

  /**
   * The cache key for this request, or undefined when it must not be cached or served from
   * the cache. The key is the namespace (the account's: see Account.cacheNamespace) and the
   * URL exactly as sent (path and query), plus the request headers a stored response may vary
   * on (see KEYED_REQUEST_HEADERS).
   */
  keyFor(
    method: string,
    url: string,
    namespace: string,
    headers: IncomingHttpHeaders,
  ): { key: string; ttlMs: number } | undefined {
    if (method !== 'GET') return undefined;
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    let ttlMs = this.exact.size > 0 ? this.exact.get(path) : undefined;
    if (ttlMs === undefined) {
      for (const rule of this.prefixes) {
        if (path.startsWith(rule.prefix)) {
          ttlMs = rule.ttlMs;
          break;
        }
      }
      if (ttlMs === undefined) return undefined;
    }
    if (UNNORMALISED_PATH.test(path)) return undefined;
    if (clientRefusesCache(headers)) return undefined;
    // Length-prefixed namespace: no namespace can be crafted to collide with another's URL.
    let key = `${namespace.length}:${namespace}${url}`;
    for (const name of KEYED_REQUEST_HEADERS) {
      const value = headers[name];
      key += `\n${value === undefined ? '' : String(value)}`;
    }
    return { key, ttlMs };
  }
}

const REQUEST_NO_CACHE = new Set(['no-cache', 'no-store']);

function clientRefusesCache(headers: IncomingHttpHeaders): boolean {
  const cc = headers['cache-control'];
  if (cc !== undefined && (hasDirective(cc, REQUEST_NO_CACHE) || maxAgeZero(cc))) return true;
  const pragma = headers.pragma;
  return pragma !== undefined && hasDirective(pragma, NO_CACHE);
}

const NO_CACHE = new Set(['no-cache']);

/** Whether a comma-separated directive list names one of `names` (case-insensitive, arguments ignored). */
export function hasDirective(value: string, names: Set<string>): boolean {
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (names.has((eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase())) return true;
  }
  return false;
}

/** `max-age=0` from a client means it accepts nothing older than now, i.e. nothing cached. */
function maxAgeZero(value: string): boolean {
  for (const part of value.split(',')) {
    const [name, arg] = part.split('=', 2);
    if (name?.trim().toLowerCase() === 'max-age' && arg !== undefined && Number(arg.trim().replace(/^"|"$/g, '')) === 0)
      return true;
  }
  return false;
}
