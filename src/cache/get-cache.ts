// An optional cache of GET responses, for reference data that many clients re-read (custom
// fields, tags, settings) and that would otherwise spend the account's Keap quota on every
// read. Off unless rules are configured; a request no rule matches costs a method compare and
// a few `startsWith` calls. Each account has its own rules (CacheRules, cache-rules.ts: what
// is cached, under which key); this module holds the answers, in one memory (CACHE_MAX_BYTES)
// that every account's entries share, kept apart by each account's namespace in the key.
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
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import { endToEndHeaders } from '../upstream/forwarder.js';
import { hasDirective, KEYED_REQUEST_HEADERS } from './cache-rules.js';

export { CacheRules, parseCacheRules, type CacheRule } from './cache-rules.js';

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
  maxBytes: number;
  /** Default min(maxBytes/10, 1 MiB): one big response must not flush the whole cache. */
  maxEntryBytes?: number;
  /** Milliseconds; drives expiry and `storedAt`. Default Date.now. */
  now?: () => number;
  /** Keep Keap's CORS response headers, as the relay does with RELAY_CORS_HEADERS. Default false. */
  relayCorsHeaders?: boolean;
}

/** Vary names that only shape CORS preflight (OPTIONS) answers, never a GET's. */
const PREFLIGHT_ONLY = new Set(['access-control-request-method', 'access-control-request-headers']);
const VARY_OK = new Set<string>([...KEYED_REQUEST_HEADERS, ...PREFLIGHT_ONLY]);

/** Headers of Keap's that a replay must not repeat: recomputed, or ours to set. */
const NOT_STORED = new Set(['content-length', 'age', 'x-cache']);

const MIB = 1024 * 1024;

export class GetCache {
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
    this.lru = new LRUCache<string, CachedResponse>({
      maxSize: opts.maxBytes,
      maxEntrySize: this.maxEntryBytes,
      sizeCalculation: entrySize,
    });
  }

  /** Bytes held now: bodies, headers and keys. */
  get size(): number {
    return this.lru.calculatedSize;
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

function varyIsKeyed(value: string): boolean {
  for (const part of value.split(',')) {
    const name = part.trim().toLowerCase();
    if (name !== '' && !VARY_OK.has(name)) return false;
  }
  return true;
}
