// Keap's gateway reports how much quota is left on (nearly) every response, in
// x-keap-product-* and x-keap-tenant-* headers. This turns them into a typed report.
// It runs on every response, so it only scans characters: no regexes, no JSON, and it
// never throws; a value it cannot read is left out, as if Keap had not sent it.
import type { IncomingHttpHeaders } from 'node:http';

export type QuotaUnit = 'second' | 'minute' | 'hour' | 'day';

export interface QuotaWindow {
  limit?: number;
  available?: number;
  used?: number;
  /** A QuotaUnit when recognised; otherwise the unit as Keap wrote it. */
  unit?: string;
  /** How many units the window spans (Keap sends 1). */
  interval?: number;
  /** Epoch ms when the window resets, when Keap says. */
  resetsAt?: number;
}

/** Windows placed by their time unit: a window Keap labels "day" is under `day`. */
export interface QuotaWindows {
  second?: QuotaWindow;
  minute?: QuotaWindow;
  hour?: QuotaWindow;
  day?: QuotaWindow;
}

export interface QuotaReport {
  /** The OAuth client's (or key's) own limits, across every account it serves. */
  product: QuotaWindows & {
    /** Apigee's spike arrest (`x-keap-product-spike-limit`, e.g. "25ps"), in requests per second. */
    spikePerSecond?: number;
  };
  /** The account's limits, whatever token reaches it. */
  tenant: QuotaWindows & {
    /** e.g. "ps359.infusionsoft.com" */
    id?: string;
  };
}

const UNIT_MS: Readonly<Record<QuotaUnit, number>> = {
  second: 1_000,
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
};

const UNITS = new Map<string, QuotaUnit>([
  ['second', 'second'],
  ['seconds', 'second'],
  ['minute', 'minute'],
  ['minutes', 'minute'],
  ['hour', 'hour'],
  ['hours', 'hour'],
  ['day', 'day'],
  ['days', 'day'],
]);

/** The window's length in ms (unit × interval), or undefined when the unit is unknown. */
export function windowMs(w: QuotaWindow): number | undefined {
  const unit = w.unit === undefined ? undefined : UNITS.get(w.unit);
  if (unit === undefined) return undefined;
  return UNIT_MS[unit] * (w.interval ?? 1);
}

/**
 * Reads Keap's quota headers. Undefined when the response has none of them (or none
 * with a usable value), so the common "nothing to report" case allocates nothing.
 */
export function parseQuotaHeaders(headers: IncomingHttpHeaders): QuotaReport | undefined {
  const report: QuotaReport = { product: {}, tenant: {} };
  let found = false;

  const quota = readWindow(
    listValue(headers, 'x-keap-product-quota-limit'),
    listValue(headers, 'x-keap-product-quota-time-unit'),
    listValue(headers, 'x-keap-product-quota-interval'),
    listValue(headers, 'x-keap-product-quota-available'),
    listValue(headers, 'x-keap-product-quota-used'),
    parseInstant(firstValue(headers['x-keap-product-quota-expiry-time'])),
  );
  // Keap documents the product quota as daily and the throttle as per minute: that is where
  // a window goes when its unit is missing or unrecognised.
  if (quota !== undefined) found = place(report.product, quota, 'day');

  const throttle = readWindow(
    listValue(headers, 'x-keap-product-throttle-limit'),
    listValue(headers, 'x-keap-product-throttle-time-unit'),
    listValue(headers, 'x-keap-product-throttle-interval'),
    listValue(headers, 'x-keap-product-throttle-available'),
    listValue(headers, 'x-keap-product-throttle-used'),
    undefined,
  );
  if (throttle !== undefined) found = place(report.product, throttle, 'minute') || found;

  const spike = parseSpike(listValue(headers, 'x-keap-product-spike-limit'));
  if (spike !== undefined) {
    report.product.spikePerSecond = spike;
    found = true;
  }

  const id = parseId(listValue(headers, 'x-keap-tenant-id'));
  if (id !== undefined) {
    report.tenant.id = id;
    found = true;
  }

  // Tenant values have been seen both as one window ("5000") and as two at once
  // ("10000|250000" with "minute|day"): the n-th value of each header is the n-th window.
  const limits = listValue(headers, 'x-keap-tenant-throttle-limit');
  const units = listValue(headers, 'x-keap-tenant-throttle-time-unit');
  const intervals = listValue(headers, 'x-keap-tenant-throttle-interval');
  const available = listValue(headers, 'x-keap-tenant-throttle-available');
  const used = listValue(headers, 'x-keap-tenant-throttle-used');
  if (
    limits !== undefined ||
    units !== undefined ||
    intervals !== undefined ||
    available !== undefined ||
    used !== undefined
  ) {
    const l = splitPipes(limits);
    const u = splitPipes(units);
    const i = splitPipes(intervals);
    const a = splitPipes(available);
    const d = splitPipes(used);
    const n = Math.max(l.length, u.length, i.length, a.length, d.length);
    for (let k = 0; k < n; k++) {
      const w = readWindow(l[k], u[k], i[k], a[k], d[k], undefined);
      // Without a unit, position decides: the documented order is minute, then day.
      const fallback = k === 0 ? 'minute' : k === 1 ? 'day' : undefined;
      if (w !== undefined) found = place(report.tenant, w, fallback) || found;
    }
  }

  return found ? report : undefined;
}

// ---------------------------------------------------------------------------------------

const NO_VALUES: readonly string[] = [];

function splitPipes(s: string | undefined): readonly string[] {
  if (s === undefined) return NO_VALUES;
  return s.indexOf('|') < 0 ? [s] : s.split('|');
}

/** Puts `w` under its unit (or `fallback`); the first window for a unit wins. */
function place(into: QuotaWindows, w: QuotaWindow, fallback: QuotaUnit | undefined): boolean {
  const slot = (w.unit === undefined ? undefined : UNITS.get(w.unit)) ?? fallback;
  if (slot === undefined || into[slot] !== undefined) return false;
  into[slot] = w;
  return true;
}

/** A window from raw header values; undefined when it carries no number at all. */
function readWindow(
  limitText: string | undefined,
  unitText: string | undefined,
  intervalText: string | undefined,
  availableText: string | undefined,
  usedText: string | undefined,
  resetsAt: number | undefined,
): QuotaWindow | undefined {
  const limit = parseCount(limitText);
  const available = parseCount(availableText);
  const used = parseCount(usedText);
  if (limit === undefined && available === undefined && used === undefined && resetsAt === undefined) return undefined;
  const w: QuotaWindow = {};
  if (limit !== undefined) w.limit = limit;
  if (available !== undefined) w.available = available;
  if (used !== undefined) w.used = used;
  const unit = parseUnit(unitText);
  if (unit !== undefined) w.unit = unit;
  const interval = parseCount(intervalText);
  if (interval !== undefined && interval > 0) w.interval = interval;
  if (resetsAt !== undefined) w.resetsAt = resetsAt;
  return w;
}

function firstValue(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' ? v : v?.[0];
}

/**
 * A header value that is never a date. Node joins a repeated x- header with ", ", so only
 * what precedes the first comma is read (a date has commas, so it goes through firstValue).
 */
function listValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const s = firstValue(headers[name]);
  if (s === undefined) return undefined;
  const comma = s.indexOf(',');
  return comma < 0 ? s : s.slice(0, comma);
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9;
}

/** A non-negative integer of at most 15 digits (so it is exact), spaces around allowed. */
function parseCount(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  let start = 0;
  let end = s.length;
  while (start < end && isSpace(s.charCodeAt(start))) start++;
  while (end > start && isSpace(s.charCodeAt(end - 1))) end--;
  if (start === end || end - start > 15) return undefined;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return undefined;
    n = n * 10 + d;
  }
  return n;
}

/** A QuotaUnit when recognised; otherwise the unit as Keap wrote it. */
function parseUnit(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  const t = s.trim().toLowerCase();
  if (t === '') return undefined;
  return UNITS.get(t) ?? t;
}

/** "25ps" (per second), "30pm" (per minute, as Apigee also allows) or a bare number. */
function parseSpike(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const t = s.trim().toLowerCase();
  const suffix = t.length > 2 && t.charCodeAt(t.length - 2) === 112 /* p */ ? t.slice(-2) : '';
  const n = parseCount(suffix === '' ? t : t.slice(0, -2));
  if (n === undefined) return undefined;
  if (suffix === '' || suffix === 'ps') return n;
  if (suffix === 'pm') return n / 60;
  return undefined;
}

function parseId(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  const t = s.trim();
  // A hostname-like account name; anything longer than a DNS name is not one.
  return t === '' || t.length > 253 ? undefined : t;
}

// Instants outside 2000–2100 are misreadings, not Keap's reset times.
const EARLIEST = Date.UTC(2000, 0, 1);
const LATEST = Date.UTC(2100, 0, 1);
/** Epoch seconds stay below this until the year 5138; epoch ms passed it in 1973. */
const SECONDS_BELOW = 1e11;

/**
 * Keap has sent epoch ms; epoch seconds, ISO 8601 and HTTP dates are read too. Date.parse
 * alone would accept nearly anything ("x 12" is a date to V8), so a date must look like one.
 */
function parseInstant(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const t = s.trim();
  if (t === '') return undefined;
  let ms: number;
  if (isDecimal(t)) {
    const n = Number(t);
    ms = Math.round(n < SECONDS_BELOW ? n * 1000 : n);
  } else if (looksLikeIsoDate(t) || looksLikeHttpDate(t)) {
    ms = Date.parse(t);
  } else {
    return undefined;
  }
  return ms >= EARLIEST && ms <= LATEST ? ms : undefined;
}

function isDecimal(t: string): boolean {
  let dot = false;
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c === 46 /* . */ && !dot && i > 0) dot = true;
    else if (c < 48 || c > 57) return false;
  }
  return true;
}

/** "2024-08-15…": four digits and a dash. */
function looksLikeIsoDate(t: string): boolean {
  if (t.length < 10 || t.charCodeAt(4) !== 45 /* - */) return false;
  for (let i = 0; i < 4; i++) {
    const c = t.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** "Thu, 15 Aug 2024 00:00:00 GMT" (IMF-fixdate). */
function looksLikeHttpDate(t: string): boolean {
  return t.length === 29 && t.charCodeAt(3) === 44 /* , */ && t.endsWith(' GMT');
}
