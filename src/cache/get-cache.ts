// An optional cache of GET responses, for reference data that many clients re-read (custom
// fields, tags, settings) and that would otherwise spend the account's Keap quota on every
// read. Off unless rules are configured; a request no rule matches costs a method compare and
// a few `startsWith` calls.
//
// Choices worth knowing:
// - Only GET is cached or served. HEAD is not served from a GET entry: the proxy captures
//   what it relays, and a HEAD under the same key would store an empty body as the answer
//   to every later GET.
// - The client's `Cache-Control: no-cache` / `no-store` / `max-age=0` (or `Pragma: no-cache`)
//   takes the request out of the cache entirely: it is not served from the cache and its
//   fresh response does not refresh the entry either. One rule for both directions keeps
//   the wiring to "no key, plain forward", and `no-store` must never store anyway; an entry
//   is at most its rule's TTL stale.
// - Writes through the proxy do not invalidate entries: the TTL an operator picks for a path
//   is the staleness they accept for it.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import { endToEndHeaders } from '../upstream/forwarder.js';

export interface CacheRule {
  /** path pattern: exact path, or a prefix ending in '*', e.g. '/crm/rest/v1/tags*'; matched against the path without the query */
  pattern: string;
  ttlSeconds: number;
}

export interface CachedResponse {
  status: number;
  statusMessage: string;
  /** End-to-end header pairs as Keap sent them, minus those a replay must not repeat (see `storedHeaders`). */
  rawHeaders: string[];
  body: Buffer;
  storedAt: number;
  expiresAt: number;
}

export interface GetCacheOptions {
  rules: CacheRule[];
  maxBytes: number;
  /** Default min(maxBytes/10, 1 MiB): one big response must not flush the whole cache. */
  maxEntryBytes?: number;
  /** Milliseconds; drives expiry and `storedAt`. Default Date.now. */
  now?: () => number;
  /** Keep Keap's CORS response headers, as the relay does with RELAY_CORS_HEADERS. Default false. */
  relayCorsHeaders?: boolean;
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
const KEYED_REQUEST_HEADERS = ['accept-encoding', 'origin'] as const;
/** Vary names that only shape CORS preflight (OPTIONS) answers, never a GET's. */
const PREFLIGHT_ONLY = new Set(['access-control-request-method', 'access-control-request-headers']);
const VARY_OK = new Set<string>([...KEYED_REQUEST_HEADERS, ...PREFLIGHT_ONLY]);

/** Headers of Keap's that a replay must not repeat: recomputed, or ours to set. */
const NOT_STORED = new Set(['content-length', 'age', 'x-cache']);

/**
 * Paths that reach outside what the rule names once Keap normalises them (`/tags/../contacts`)
 * would cache data the operator never chose to; they go upstream uncached.
 */
const UNNORMALISED_PATH = /\/\.|%2e|%2f|\\/i;

const MIB = 1024 * 1024;

export class GetCache {
  private readonly exact = new Map<string, number>();
  /** Longest first, so the most specific prefix decides the TTL. */
  private readonly prefixes: PrefixRule[] = [];
  private readonly lru: LRUCache<string, CachedResponse>;
  private readonly maxEntryBytes: number;
  private readonly now: () => number;
  private readonly relayCors: boolean;

  constructor(opts: GetCacheOptions) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes <= 0)
      throw new RangeError(`GetCache maxBytes must be a positive integer, got ${opts.maxBytes}`);
    const maxEntry = opts.maxEntryBytes ?? Math.min(Math.floor(opts.maxBytes / 10), MIB);
    if (!Number.isSafeInteger(maxEntry) || maxEntry <= 0)
      throw new RangeError(`GetCache maxEntryBytes must be a positive integer, got ${maxEntry}`);
    this.maxEntryBytes = Math.min(maxEntry, opts.maxBytes);
    this.now = opts.now ?? Date.now;
    this.relayCors = opts.relayCorsHeaders === true;
    for (const rule of opts.rules) {
      const ttlMs = rule.ttlSeconds * 1000;
      if (rule.pattern.endsWith('*')) this.prefixes.push({ prefix: rule.pattern.slice(0, -1), ttlMs });
      else this.exact.set(rule.pattern, ttlMs);
    }
    this.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
    this.lru = new LRUCache<string, CachedResponse>({
      maxSize: opts.maxBytes,
      maxEntrySize: this.maxEntryBytes,
      sizeCalculation: entrySize,
    });
  }

  get enabled(): boolean {
    return this.exact.size > 0 || this.prefixes.length > 0;
  }

  /** Bytes held now: bodies, headers and keys. */
  get size(): number {
    return this.lru.calculatedSize;
  }

  /**
   * The cache key for this request, or undefined when it must not be cached or served from
   * the cache. The key is the tenant and the URL exactly as sent (path and query), plus the
   * request headers a stored response may vary on (see KEYED_REQUEST_HEADERS).
   */
  keyFor(
    method: string,
    url: string,
    tenant: string,
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
    // Length-prefixed tenant: no tenant name can be crafted to collide with another's URL.
    let key = `${tenant.length}:${tenant}${url}`;
    for (const name of KEYED_REQUEST_HEADERS) {
      const value = headers[name];
      key += `\n${value === undefined ? '' : String(value)}`;
    }
    return { key, ttlMs };
  }

  /** A fresh entry, else undefined (expired entries are dropped). */
  get(key: string): CachedResponse | undefined {
    const entry = this.lru.get(key);
    if (entry === undefined) return undefined;
    if (this.now() >= entry.expiresAt) {
      this.lru.delete(key);
      return undefined;
    }
    return entry;
  }

  /**
   * Stores a 200 within maxEntryBytes whose headers allow it: never one marked
   * Cache-Control no-store/private, one that sets a cookie, or one that varies on a request
   * header the key does not hold. Returns whether it was stored.
   */
  set(key: string, ttlMs: number, status: number, statusMessage: string, rawHeaders: string[], body: Buffer): boolean {
    if (status !== 200 || !(ttlMs > 0) || body.length > this.maxEntryBytes) return false;
    const headers = storedHeaders(rawHeaders, this.relayCors);
    if (headers === undefined) return false;
    const storedAt = this.now();
    // A slice would pin the whole buffer it came from (a socket read, or the 8 KiB pool) while the entry lives.
    const own = body.byteOffset === 0 && body.buffer.byteLength === body.length ? body : copyOut([body], body.length);
    const entry: CachedResponse = {
      status,
      statusMessage,
      rawHeaders: headers,
      body: own,
      storedAt,
      expiresAt: storedAt + ttlMs,
    };
    if (entrySize(entry, key) > this.maxEntryBytes) return false;
    this.lru.set(key, entry);
    return true;
  }

  /**
   * Collects the body of a response as it streams to the client (alongside the relay's pipe,
   * not instead of it) and stores it once it has ended complete. Call it in the same tick as
   * the relay's pipe, before or after: its 'data' listener starts the stream flowing.
   */
  capture(key: string, ttlMs: number, proxyRes: IncomingMessage): void {
    // Decide what can be decided from the head now, so an uncacheable body is never buffered.
    if (proxyRes.statusCode !== 200 || storedHeaders(proxyRes.rawHeaders, this.relayCors) === undefined) return;
    const declared = proxyRes.headers['content-length'];
    if (declared !== undefined && Number(declared) > this.maxEntryBytes) return;
    // A body that ends when the connection does looks the same whole or cut short: not worth a TTL of serving it.
    if (declared === undefined && proxyRes.headers['transfer-encoding'] === undefined) return;
    let chunks: Buffer[] = [];
    let bytes = 0;
    const onData = (chunk: Buffer): void => {
      bytes += chunk.length;
      if (bytes > this.maxEntryBytes) {
        giveUp();
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      proxyRes.off('data', onData);
      proxyRes.off('close', giveUp);
      // `complete` is false when Keap's connection closed before the body was whole.
      if (!proxyRes.complete) return;
      this.set(key, ttlMs, 200, proxyRes.statusMessage ?? '', proxyRes.rawHeaders, copyOut(chunks, bytes));
    };
    const giveUp = (): void => {
      proxyRes.off('data', onData);
      proxyRes.off('end', onEnd);
      proxyRes.off('close', giveUp);
      chunks = [];
    };
    proxyRes.on('data', onData);
    proxyRes.once('end', onEnd);
    // An aborted response closes without 'end': let go of the chunks then, not when the message is collected.
    proxyRes.once('close', giveUp);
  }
}

/**
 * Writes a cached response to the client with `X-Cache: HIT`, its `Age` in seconds and the
 * request id. `now` must be the clock the cache was built with (default Date.now).
 */
export function serveCached(
  res: ServerResponse,
  cached: CachedResponse,
  requestId: string,
  now: number = Date.now(),
): void {
  // A fresh array: the entry is shared by every hit and must not grow.
  const pairs = cached.rawHeaders.slice();
  pairs.push(
    'content-length',
    String(cached.body.length),
    'age',
    String(Math.max(0, Math.floor((now - cached.storedAt) / 1000))),
    'x-cache',
    'HIT',
    'x-request-id',
    requestId,
  );
  res.writeHead(cached.status, cached.statusMessage, pairs);
  res.end(cached.body);
}

function entrySize(entry: CachedResponse, key: string): number {
  let bytes = entry.body.length + key.length;
  for (const s of entry.rawHeaders) bytes += s.length;
  // lru-cache needs a positive size, and an empty entry is not free.
  return Math.max(1, bytes);
}

function copyOut(chunks: Buffer[], bytes: number): Buffer {
  // Outside the shared pool, so the body holds only its own bytes.
  const out = Buffer.allocUnsafeSlow(bytes);
  let at = 0;
  for (const c of chunks) at += c.copy(out, at);
  return out;
}

/**
 * The header pairs to keep with a response, or undefined when its headers forbid storing it:
 * Cache-Control no-store/private, a cookie, or a Vary on a request header the key lacks.
 * Hop-by-hop headers (and CORS ones unless relayed) are dropped and Keap's request id is
 * kept as x-upstream-request-id, as the relay does.
 */
function storedHeaders(raw: string[], relayCors: boolean): string[] | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const lower = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    if (lower === 'set-cookie') return undefined;
    if (lower === 'cache-control' && hasDirective(value, RESPONSE_NO_STORE)) return undefined;
    if (lower === 'vary' && !varyIsKeyed(value)) return undefined;
  }
  const relayed = endToEndHeaders(raw, undefined, relayCors);
  const out: string[] = [];
  for (let i = 0; i < relayed.length; i += 2) {
    if (!NOT_STORED.has((relayed[i] as string).toLowerCase())) out.push(relayed[i] as string, relayed[i + 1] as string);
  }
  return out;
}

const RESPONSE_NO_STORE = new Set(['no-store', 'private']);
const REQUEST_NO_CACHE = new Set(['no-cache', 'no-store']);

function clientRefusesCache(headers: IncomingHttpHeaders): boolean {
  const cc = headers['cache-control'];
  if (cc !== undefined && (hasDirective(cc, REQUEST_NO_CACHE) || maxAgeZero(cc))) return true;
  const pragma = headers.pragma;
  return pragma !== undefined && hasDirective(pragma, NO_CACHE);
}

const NO_CACHE = new Set(['no-cache']);

/** Whether a comma-separated directive list names one of `names` (case-insensitive, arguments ignored). */
function hasDirective(value: string, names: Set<string>): boolean {
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

function varyIsKeyed(value: string): boolean {
  for (const part of value.split(',')) {
    const name = part.trim().toLowerCase();
    if (name !== '' && !VARY_OK.has(name)) return false;
  }
  return true;
}
