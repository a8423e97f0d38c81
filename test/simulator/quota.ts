// Keap's Apigee quotas as the simulator models them (see /work/shared/keap-api-notes.md, "Quotas").
// Counting is O(1) per request and allocation-light: it runs on the benchmark's hot path.

export type CredentialKind = 'bearer' | 'api-key' | 'legacy-key';

export interface ProductLimits {
  day: number;
  minute: number;
  spike: number;
}

/** OAuth client (all tokens of one client_id share it). */
export const OAUTH_LIMITS: ProductLimits = { day: 150_000, minute: 1_500, spike: 25 };
/** PAT / SAK, per key (legacy keys are counted the same way). */
export const KEY_LIMITS: ProductLimits = { day: 30_000, minute: 240, spike: 10 };
export const TENANT_LIMITS: TenantLimits = { minute: 10_000, day: 250_000 };

/** The account's (tenant's) limits, reported in x-keap-tenant-throttle-* (never enforced here). */
export interface TenantLimits {
  minute: number;
  day: number;
}

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;

export class UsageBucket {
  dayWindow = -1;
  day = 0;
  minuteWindow = -1;
  minute = 0;
  constructor(
    readonly identifier: string,
    readonly limits: ProductLimits,
  ) {}
  roll(dayWindow: number, minuteWindow: number): void {
    if (this.dayWindow !== dayWindow) {
      this.dayWindow = dayWindow;
      this.day = 0;
    }
    if (this.minuteWindow !== minuteWindow) {
      this.minuteWindow = minuteWindow;
      this.minute = 0;
    }
  }
}

export type QuotaViolation = 'day' | 'minute';

/** How the tenant's windows are written: both at once (`10000|250000`) or the minute's alone (`10000`). */
export type TenantHeaderStyle = 'pipe' | 'scalar';

const PRODUCT_QUOTA_HEADERS = [
  'x-keap-product-quota-limit',
  'x-keap-product-quota-time-unit',
  'x-keap-product-quota-interval',
  'x-keap-product-quota-available',
  'x-keap-product-quota-used',
  'x-keap-product-quota-expiry-time',
  'x-keap-product-throttle-limit',
  'x-keap-product-throttle-time-unit',
  'x-keap-product-throttle-interval',
  'x-keap-product-throttle-available',
  'x-keap-product-throttle-used',
  'x-keap-product-spike-limit',
  'x-keap-tenant-id',
];
const TENANT_THROTTLE_HEADERS = [
  'x-keap-tenant-throttle-limit',
  'x-keap-tenant-throttle-time-unit',
  'x-keap-tenant-throttle-interval',
  'x-keap-tenant-throttle-available',
  'x-keap-tenant-throttle-used',
];

/**
 * The quota headers of an unauthenticated answer: every one, empty, the tenant throttle's `|`
 * when they are pipe-separated (see the notes, "401s come from Apigee"). (choice) The spike
 * limit and the tenant id are empty too.
 */
export function unauthenticatedQuotaHeaders(style: TenantHeaderStyle): string[] {
  const out: string[] = [];
  for (const name of PRODUCT_QUOTA_HEADERS) out.push(name, '');
  for (const name of TENANT_THROTTLE_HEADERS) out.push(name, style === 'pipe' ? '|' : '');
  return out;
}

export interface QuotaResult {
  /** Flat [name, value, name, value, ...] list, ready for res.writeHead. */
  headers: string[];
  violation: QuotaViolation | undefined;
  /** Seconds until the violated window resets (for an optional Retry-After). */
  retryAfterSeconds: number;
  identifier: string;
}

/**
 * Daily quota (resets 00:00 UTC) and per-minute throttle per product identity, plus the tenant's
 * minute|day counters. Limits are only ENFORCED (429 QuotaViolation) once set explicitly via
 * dailyOverride/minuteOverride: by default the headers report Keap's documented limits but
 * nothing is refused, so throughput benchmarks are not cut off at 1,500 calls a minute.
 * The minute window is fixed (aligned to the wall-clock minute), not rolling: simpler, O(1).
 */
export class QuotaTracker {
  dailyOverride: number | null = null;
  minuteOverride: number | null = null;
  /** Spike limit shown in x-keap-product-spike-limit when spike arrest is enforced. */
  spikeOverride = 0;
  /**
   * The product limits reported instead of Keap's published ones (not enforced): a client or
   * key with a larger quota, as one shared app's 500,000 a day.
   */
  reportedLimits: Partial<ProductLimits> = {};
  /** How the tenant's windows are written (see TenantHeaderStyle). */
  tenantHeaders: TenantHeaderStyle = 'pipe';
  private readonly buckets = new Map<string, UsageBucket>();
  private readonly tenantBucket: UsageBucket;

  constructor(
    private readonly tenant: string,
    private readonly tenantLimits: TenantLimits = TENANT_LIMITS,
  ) {
    this.tenantBucket = new UsageBucket(tenant, { day: tenantLimits.day, minute: tenantLimits.minute, spike: 0 });
  }

  reset(): void {
    this.buckets.clear();
    this.tenantBucket.dayWindow = -1;
    this.tenantBucket.minuteWindow = -1;
  }

  bucket(identity: string, kind: CredentialKind, identifier: string): UsageBucket {
    let b = this.buckets.get(identity);
    if (!b) {
      b = new UsageBucket(identifier, kind === 'bearer' ? OAUTH_LIMITS : KEY_LIMITS);
      this.buckets.set(identity, b);
    }
    return b;
  }

  /**
   * Checks the quotas and, when the call is allowed and `count` is true, counts it.
   * `count` is false for calls already refused by spike arrest (they never reach the Quota policy).
   */
  apply(b: UsageBucket, now: number, count: boolean): QuotaResult {
    const dayWindow = Math.floor(now / DAY_MS);
    const minuteWindow = Math.floor(now / MINUTE_MS);
    const t = this.tenantBucket;
    b.roll(dayWindow, minuteWindow);
    t.roll(dayWindow, minuteWindow);
    const dayLimit = this.dailyOverride ?? this.reportedLimits.day ?? b.limits.day;
    const minuteLimit = this.minuteOverride ?? this.reportedLimits.minute ?? b.limits.minute;
    const nextMidnight = (dayWindow + 1) * DAY_MS;
    let violation: QuotaViolation | undefined;
    let retryAfterSeconds = 1;
    if (count) {
      if (this.dailyOverride !== null && b.day >= dayLimit) {
        violation = 'day';
        retryAfterSeconds = Math.max(1, Math.ceil((nextMidnight - now) / 1000));
      } else if (this.minuteOverride !== null && b.minute >= minuteLimit) {
        violation = 'minute';
        retryAfterSeconds = Math.max(1, Math.ceil(((minuteWindow + 1) * MINUTE_MS - now) / 1000));
      } else {
        b.day++;
        b.minute++;
        t.day++;
        t.minute++;
      }
    }
    const spike = this.spikeOverride > 0 ? this.spikeOverride : (this.reportedLimits.spike ?? b.limits.spike);
    const headers = [
      'x-keap-product-quota-limit',
      String(dayLimit),
      'x-keap-product-quota-time-unit',
      'day',
      'x-keap-product-quota-interval',
      '1',
      'x-keap-product-quota-available',
      String(Math.max(0, dayLimit - b.day)),
      'x-keap-product-quota-used',
      String(b.day),
      'x-keap-product-quota-expiry-time',
      String(nextMidnight),
      'x-keap-product-throttle-limit',
      String(minuteLimit),
      'x-keap-product-throttle-time-unit',
      'minute',
      'x-keap-product-throttle-interval',
      '1',
      'x-keap-product-throttle-available',
      String(Math.max(0, minuteLimit - b.minute)),
      'x-keap-product-throttle-used',
      String(b.minute),
      'x-keap-product-spike-limit',
      `${spike}ps`,
      'x-keap-tenant-id',
      this.tenant,
    ];
    const minuteLeft = Math.max(0, this.tenantLimits.minute - t.minute);
    if (this.tenantHeaders === 'scalar') {
      // (choice) One window written alone is the minute's, the first of the two.
      headers.push(
        'x-keap-tenant-throttle-limit',
        String(this.tenantLimits.minute),
        'x-keap-tenant-throttle-time-unit',
        'minute',
        'x-keap-tenant-throttle-interval',
        '1',
        'x-keap-tenant-throttle-available',
        String(minuteLeft),
        'x-keap-tenant-throttle-used',
        String(t.minute),
      );
    } else {
      headers.push(
        'x-keap-tenant-throttle-limit',
        `${this.tenantLimits.minute}|${this.tenantLimits.day}`,
        'x-keap-tenant-throttle-time-unit',
        'minute|day',
        'x-keap-tenant-throttle-interval',
        '1|1',
        'x-keap-tenant-throttle-available',
        `${minuteLeft}|${Math.max(0, this.tenantLimits.day - t.day)}`,
        'x-keap-tenant-throttle-used',
        `${t.minute}|${t.day}`,
      );
    }
    return { headers, violation, retryAfterSeconds, identifier: b.identifier };
  }
}

/**
 * Exact sliding-window limiter: at most `rate` accepted calls in any 1,000 ms window.
 * A ring of the last `rate` accepted timestamps makes each check O(1).
 */
export class SpikeArrest {
  private ring: Float64Array;
  private size = 0;
  private head = 0;
  constructor(readonly rate: number) {
    this.ring = new Float64Array(Math.max(1, rate));
  }
  allow(now: number): boolean {
    if (this.rate <= 0) return true;
    if (this.size < this.rate) {
      this.ring[(this.head + this.size) % this.rate] = now;
      this.size++;
      return true;
    }
    if (now - this.ring[this.head]! < 1000) return false;
    this.ring[this.head] = now;
    this.head = (this.head + 1) % this.rate;
    return true;
  }
}
