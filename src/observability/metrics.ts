// Prometheus metrics for the proxy. Each Metrics owns its Registry (never prom-client's
// global one), so two proxies in one process, or two tests, never see each other's counts.
// The recording methods run per request, so the per-request ones only add to plain numbers
// (prom-client hashes the label set on every observe and inc: about 1% of the proxy's
// throughput); prom-client reads those numbers when /metrics is scraped and formats them.
// Per-account series carry `account` (the account's id: `default` for the one the settings
// configure) beside `tenant` (the Keap tenant behind its credential); they are found by the
// two label values in nested maps, so a per-request call builds no key. Account ids come
// from the configuration alone, so the series are bounded by the accounts configured.
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { QuotaReport, QuotaUnit, QuotaWindow } from '../keap/keap-quota.js';

/** Where a request was answered from: Keap's REST or XML-RPC API, the proxy itself, or its OAuth pages. */
export type Route = 'rest' | 'xmlrpc' | 'local' | 'oauth';

export type RateLimitOutcome =
  /** Keap said 429 and the proxy waited and replayed: the client never saw it. */
  | 'absorbed'
  /** The client got Keap's 429. */
  | 'passed_on'
  /** The tenant's queue was full: 503. */
  | 'rejected_full'
  /** The daily quota is spent: an immediate 429 without asking Keap. */
  | 'quota_spent';

export type TokenRefreshOutcome =
  | 'success'
  | 'failure'
  | 'invalid_grant'
  /** Another process had already stored a new grant, and this one adopted it. */
  | 'reloaded';

export interface QueueDepth {
  account: string;
  tenant: string;
  depth: number;
  /** The pace its pacer keeps now, calls per second (undefined without pacing). */
  pacePerSecond?: number | undefined;
}

export interface MetricsOptions {
  /** Node process metrics (CPU, memory, event loop lag, …); on by default. */
  defaultMetrics?: boolean;
  /** keap-proxy's version, for keap_proxy_build_info; default 'unknown'. */
  version?: string;
}

/** Keap's method names: `Service.method`, letters and digits. */
const METHOD_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}\.[A-Za-z][A-Za-z0-9_]{0,63}$/;
/** Distinct XML-RPC method labels kept; Keap's whole API has about 150 methods. */
export const XMLRPC_METHODS_MAX = 300;

type CounterChild = Counter.Internal;

const ROUTES: readonly Route[] = ['rest', 'xmlrpc', 'local', 'oauth'];
const RATE_LIMIT_OUTCOMES: readonly RateLimitOutcome[] = ['absorbed', 'passed_on', 'rejected_full', 'quota_spent'];
const TOKEN_REFRESH_OUTCOMES: readonly TokenRefreshOutcome[] = ['success', 'failure', 'invalid_grant', 'reloaded'];
const QUOTA_UNITS: readonly QuotaUnit[] = ['second', 'minute', 'hour', 'day'];

// From a 5 ms cached answer to Keap's slowest reports (~30 s).
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30];
// Most requests do not wait at all; a throttled tenant waits up to its minute window.
const QUEUE_WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

type Scope = 'product' | 'tenant';

/** What Keap last said about one tenant's window; copied into the gauges at scrape time. */
interface QuotaState {
  readonly labels: { account: string; tenant: string; scope: Scope; window: QuotaUnit };
  limit?: number;
  available?: number;
  used?: number;
  resetsAtSeconds?: number;
}

type QuotaField = 'limit' | 'available' | 'used' | 'resetsAtSeconds';

/** Per tenant, keyed by these constant strings, so a lookup builds no key. */
const QUOTA_KEYS: Readonly<Record<Scope, Readonly<Record<QuotaUnit, string>>>> = {
  product: { second: 'product:second', minute: 'product:minute', hour: 'product:hour', day: 'product:day' },
  tenant: { second: 'tenant:second', minute: 'tenant:minute', hour: 'tenant:hour', day: 'tenant:day' },
};

export class Metrics {
  readonly registry = new Registry();

  private readonly queueDepth: Gauge<'account' | 'tenant'>;
  private readonly rateLimitedTotal: Counter<'account' | 'tenant' | 'outcome'>;
  private readonly tokenRefreshes: Counter<'outcome'>;
  private readonly xmlrpcCalls: Counter<'method' | 'outcome'>;
  /** methodName label values seen so far (bounded: clients choose them). */
  private readonly xmlrpcMethods = new Set<string>();

  /** Requests answered, by route and then status (a number at the call site: no String() per request). */
  private readonly requestCounts = new Map<Route, Map<number, number>>();
  private readonly upstream: FastHistogram;
  private readonly queueWaitSeconds: FastHistogram;
  /** Account, then tenant: each pair's series, made on its first observation. */
  private readonly queueWaitSeries = new Map<string, Map<string, HistogramSeries>>();
  private readonly rateLimitedChildren = new Map<string, Map<string, Map<RateLimitOutcome, CounterChild>>>();
  private readonly tokenRefreshChildren = new Map<TokenRefreshOutcome, CounterChild>();
  // A response can carry a dozen quota values; setting that many gauges per response costs
  // ~10 µs, so observeQuota only stores numbers and the gauges read them when scraped.
  /** Account, then tenant, then scope and window. */
  private readonly quota = new Map<string, Map<string, Map<string, QuotaState>>>();
  private readonly depthSources = new Set<() => Iterable<QueueDepth>>();
  private readonly logDropSources = new Set<() => number>();
  private bodyBufferSource: (() => { inUse: number; limit: number }) | undefined;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    // Which build answers: a dashboard joins on it, an alert sees a rollout half done.
    new Gauge({
      name: 'keap_proxy_build_info',
      help: "keap-proxy's version and the Node.js version it runs on; always 1.",
      labelNames: ['version', 'node'],
      registers,
    }).set({ version: options.version ?? 'unknown', node: process.version }, 1);
    const requestCounts = this.requestCounts;
    new Counter({
      name: 'keap_proxy_requests_total',
      help: 'Requests answered, by route and the HTTP status the client got.',
      labelNames: ['route', 'status'],
      registers,
      collect() {
        this.reset();
        for (const [route, byStatus] of requestCounts)
          for (const [status, n] of byStatus) this.inc({ route, status: String(status) }, n);
      },
    });
    this.upstream = new FastHistogram(
      'keap_proxy_upstream_duration_seconds',
      'Time from sending a request to Keap to receiving its response head.',
      'route',
      UPSTREAM_BUCKETS,
    );
    this.registry.registerMetric(this.upstream as unknown as Metric);
    const sources = this.depthSources;
    this.queueDepth = new Gauge({
      name: 'keap_proxy_queue_depth',
      help: 'Requests waiting for their turn to go to Keap, per account and tenant.',
      labelNames: ['account', 'tenant'],
      registers,
      // Read at scrape time, so the queues need not report every change.
      collect() {
        this.reset();
        for (const source of sources)
          for (const { account, tenant, depth } of source()) this.inc({ account, tenant }, depth);
      },
    });
    new Gauge({
      name: 'keap_proxy_pace_per_second',
      help: "Calls per second an account's pacer lets go to Keap now: the configured rate x margin, or less while Keap's spike arrests show its real limit is lower.",
      labelNames: ['account', 'tenant'],
      registers,
      collect() {
        this.reset();
        for (const source of sources)
          for (const { account, tenant, pacePerSecond } of source())
            if (pacePerSecond !== undefined) this.set({ account, tenant }, Math.round(pacePerSecond * 100) / 100);
      },
    });
    this.queueWaitSeconds = new FastHistogram(
      'keap_proxy_queue_wait_seconds',
      "Time a request waited in its account's queue before going to Keap, per account and tenant.",
      ['account', 'tenant'],
      QUEUE_WAIT_BUCKETS,
    );
    this.registry.registerMetric(this.queueWaitSeconds as unknown as Metric);
    this.rateLimitedTotal = new Counter({
      name: 'keap_proxy_rate_limited_total',
      help: 'Rate limiting, by what became of the request: absorbed (Keap 429 replayed unseen), passed_on (client got 429), rejected_full (queue full, 503), quota_spent (daily quota spent, immediate 429).',
      labelNames: ['account', 'tenant', 'outcome'],
      registers,
    });
    this.tokenRefreshes = new Counter({
      name: 'keap_proxy_token_refreshes_total',
      help: 'OAuth token refreshes, by outcome; reloaded means a grant another process stored was adopted.',
      labelNames: ['outcome'],
      registers,
    });
    this.xmlrpcCalls = new Counter({
      name: 'keap_proxy_xmlrpc_calls_total',
      help: "XML-RPC calls by methodName and outcome: relayed (Keap's answer went to the client), translated (the proxy answered from REST v2), client_closed, or the code of the proxy's own fault. The inventory to migrate before Keap retires XML-RPC.",
      labelNames: ['method', 'outcome'],
      registers,
    });
    const bodyBuffer = (): { inUse: number; limit: number } | undefined => this.bodyBufferSource?.();
    new Gauge({
      name: 'keap_proxy_body_buffer_bytes',
      help: 'Bytes of request bodies held in memory now (kind="in_use") and the most they may hold (kind="limit", BODY_BUFFER_BUDGET_BYTES).',
      labelNames: ['kind'],
      registers,
      collect() {
        const budget = bodyBuffer();
        if (budget === undefined) return;
        this.set({ kind: 'in_use' }, budget.inUse);
        this.set({ kind: 'limit' }, budget.limit);
      },
    });
    const logDrops = this.logDropSources;
    new Counter({
      name: 'keap_proxy_log_lines_dropped_total',
      help: 'Log lines dropped because stdout (or the log file) failed or fell more than 16 MiB behind.',
      registers,
      collect() {
        let n = 0;
        for (const source of logDrops) n += source();
        this.reset();
        this.inc(n);
      },
    });
    const quota = this.quota;
    const quotaGauge = (name: string, help: string, field: QuotaField): void => {
      new Gauge({
        name,
        help,
        labelNames: ['account', 'tenant', 'scope', 'window'],
        registers,
        collect() {
          for (const byTenant of quota.values()) {
            for (const byWindow of byTenant.values()) {
              for (const state of byWindow.values()) {
                const v = state[field];
                if (v !== undefined) this.set(state.labels, v);
              }
            }
          }
        },
      });
    };
    quotaGauge(
      'keap_proxy_keap_quota_limit',
      'The quota limit Keap last reported, per account, tenant, scope (product or tenant) and window.',
      'limit',
    );
    quotaGauge('keap_proxy_keap_quota_available', 'The quota Keap last reported as still available.', 'available');
    quotaGauge('keap_proxy_keap_quota_used', 'The quota Keap last reported as used.', 'used');
    quotaGauge(
      'keap_proxy_keap_quota_resets_at_seconds',
      'When Keap said the quota window resets, as Unix time in seconds.',
      'resetsAtSeconds',
    );

    for (const route of ROUTES) this.requestCounts.set(route, new Map());
    // Every outcome is exported from the start (at 0), so rate() and alerts see the first one.
    for (const outcome of TOKEN_REFRESH_OUTCOMES) {
      const child = this.tokenRefreshes.labels(outcome);
      child.inc(0);
      this.tokenRefreshChildren.set(outcome, child);
    }

    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** A request was answered; `status` is what the client got. */
  requestDone(route: Route, status: number): void {
    const byStatus = this.requestCounts.get(route);
    if (byStatus !== undefined) byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  }

  /** Keap's response head arrived `seconds` after the request was sent. */
  upstreamDone(route: Route, seconds: number): void {
    this.upstream.observe(route, seconds);
  }

  /** A request of `account` (its id), whose credential is `tenant`'s, left the queue after waiting `seconds`. */
  queueWait(account: string, tenant: string, seconds: number): void {
    const series = this.queueWaitSeries.get(account)?.get(tenant) ?? this.newQueueWaitSeries(account, tenant);
    this.queueWaitSeconds.record(series, seconds);
  }

  private newQueueWaitSeries(account: string, tenant: string): HistogramSeries {
    let byTenant = this.queueWaitSeries.get(account);
    if (byTenant === undefined) {
      byTenant = new Map();
      this.queueWaitSeries.set(account, byTenant);
    }
    const series = this.queueWaitSeconds.series({ account, tenant });
    byTenant.set(tenant, series);
    return series;
  }

  /**
   * Registers where queue depths are read at scrape time; a tenant no source lists any more
   * disappears from the metric, and depths several sources give one tenant add up.
   * Returns a function that unregisters the source.
   */
  onQueueDepth(source: () => Iterable<QueueDepth>): () => void {
    this.depthSources.add(source);
    return () => {
      this.depthSources.delete(source);
    };
  }

  /** Registers the body buffer budget, read at scrape time. */
  onBodyBuffer(source: () => { inUse: number; limit: number }): void {
    this.bodyBufferSource = source;
  }

  /** Registers a count of dropped log lines, read at scrape time. */
  onLogDrops(source: () => number): void {
    this.logDropSources.add(source);
  }

  rateLimited(account: string, tenant: string, outcome: RateLimitOutcome): void {
    let byTenant = this.rateLimitedChildren.get(account);
    if (byTenant === undefined) {
      byTenant = new Map();
      this.rateLimitedChildren.set(account, byTenant);
    }
    let byOutcome = byTenant.get(tenant);
    if (byOutcome === undefined) {
      byOutcome = new Map();
      // A tenant's outcomes start at 0 together, so a ratio between them is defined from the start.
      for (const o of RATE_LIMIT_OUTCOMES) {
        const child = this.rateLimitedTotal.labels(account, tenant, o);
        child.inc(0);
        byOutcome.set(o, child);
      }
      byTenant.set(tenant, byOutcome);
    }
    byOutcome.get(outcome)?.inc();
  }

  /**
   * Counts an XML-RPC call. Clients choose method names: one that is not `Service.method` is
   * counted as `invalid`, and past XMLRPC_METHODS_MAX distinct names the rest as `other`, so
   * no client can grow the metrics without bound.
   */
  xmlrpcCall(method: string | undefined, outcome: string): void {
    let label = method === undefined ? 'unread' : METHOD_NAME.test(method) ? method : 'invalid';
    if (!this.xmlrpcMethods.has(label)) {
      if (this.xmlrpcMethods.size >= XMLRPC_METHODS_MAX) label = 'other';
      else this.xmlrpcMethods.add(label);
    }
    this.xmlrpcCalls.labels(label, outcome).inc();
  }

  tokenRefresh(outcome: TokenRefreshOutcome): void {
    this.tokenRefreshChildren.get(outcome)?.inc();
  }

  /**
   * Records the quota Keap reported on a response to `account` (its id) for `tenant`. Values
   * Keap left out keep their last reported value: these gauges say what Keap said last, not
   * what it says now.
   */
  observeQuota(account: string, tenant: string, report: QuotaReport): void {
    let byTenant = this.quota.get(account);
    if (byTenant === undefined) {
      byTenant = new Map();
      this.quota.set(account, byTenant);
    }
    let byWindow = byTenant.get(tenant);
    if (byWindow === undefined) {
      byWindow = new Map();
      byTenant.set(tenant, byWindow);
    }
    for (const unit of QUOTA_UNITS) {
      const p = report.product[unit];
      if (p !== undefined) recordWindow(quotaState(byWindow, account, tenant, 'product', unit), p);
      const t = report.tenant[unit];
      if (t !== undefined) recordWindow(quotaState(byWindow, account, tenant, 'tenant', unit), t);
    }
    // The spike arrest is a per-second product limit; Keap reports no usage for it.
    const spike = report.product.spikePerSecond;
    if (spike !== undefined) quotaState(byWindow, account, tenant, 'product', 'second').limit = spike;
  }

  /** The text for a `/metrics` response. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

function quotaState(
  byWindow: Map<string, QuotaState>,
  account: string,
  tenant: string,
  scope: Scope,
  window: QuotaUnit,
): QuotaState {
  const key = QUOTA_KEYS[scope][window];
  let state = byWindow.get(key);
  if (state === undefined) {
    state = { labels: { account, tenant, scope, window } };
    byWindow.set(key, state);
  }
  return state;
}

function recordWindow(state: QuotaState, w: QuotaWindow): void {
  if (w.limit !== undefined) state.limit = w.limit;
  if (w.available !== undefined) state.available = w.available;
  if (w.used !== undefined) state.used = w.used;
  if (w.resetsAt !== undefined) state.resetsAtSeconds = w.resetsAt / 1000;
}

/** One sample as the Registry formats it (prom-client's typings call `type` an enum; at run time it is this string). */
interface Sample {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/** One label set's counts: per bucket (not cumulative), then +Inf, plus sum and count. */
export interface HistogramSeries {
  readonly labels: Readonly<Record<string, string>>;
  readonly buckets: Float64Array;
  sum: number;
  count: number;
  /** Exported: false after a reset() until its next observation. */
  listed: boolean;
}

/**
 * A histogram whose observe() is an array update, registered with the Registry as a metric
 * of its own: the Registry asks get() for the values when scraped, in the shape prom-client's
 * own Histogram gives (cumulative `_bucket` series with `le` first, then the labels, then
 * `_sum` and `_count`), and formats them as it formats every other metric. With one label,
 * observe() finds the series by its value; with several, the caller keeps each label set's
 * series (series()) and records into it (record()), so no key is built per observation.
 */
export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** In the order they were first observed: the order prom-client exports them in. */
  private readonly listed: HistogramSeries[] = [];
  private readonly byValue = new Map<string, HistogramSeries>();
  private readonly labelNames: readonly string[];

  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: string | readonly string[],
    private readonly upperBounds: readonly number[],
  ) {
    this.labelNames = typeof labelNames === 'string' ? [labelNames] : labelNames;
  }

  /** Observes `value` for the series whose (first and only) label has this value. */
  observe(labelValue: string, value: number): void {
    let s = this.byValue.get(labelValue);
    if (s === undefined) {
      s = this.series({ [this.labelNames[0] as string]: labelValue });
      this.byValue.set(labelValue, s);
    }
    this.record(s, value);
  }

  /** A series for these labels (every label name given), to be kept and recorded into; exported once it has a value. */
  series(labels: Readonly<Record<string, string>>): HistogramSeries {
    for (const name of this.labelNames)
      if (typeof labels[name] !== 'string') throw new Error(`${this.name}: label ${name} is missing`);
    return {
      labels: { ...labels },
      buckets: new Float64Array(this.upperBounds.length + 1),
      sum: 0,
      count: 0,
      listed: false,
    };
  }

  record(s: HistogramSeries, value: number): void {
    if (!Number.isFinite(value)) return;
    if (!s.listed) {
      s.listed = true;
      this.listed.push(s);
    }
    const bounds = this.upperBounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    s.buckets[i] = (s.buckets[i] as number) + 1;
    s.sum += value;
    s.count += 1;
  }

  get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Sample[] }> {
    const values: Sample[] = [];
    for (const s of this.listed) {
      let cumulative = 0;
      for (let i = 0; i <= this.upperBounds.length; i++) {
        cumulative += s.buckets[i] as number;
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { le: i < this.upperBounds.length ? (this.upperBounds[i] as number) : '+Inf', ...s.labels },
          value: cumulative,
        });
      }
      values.push({ metricName: `${this.name}_sum`, labels: { ...s.labels }, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: { ...s.labels }, value: s.count });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  /** Drops every series from the exposition, as prom-client's reset() does; one kept by a caller is zeroed and comes back on its next observation. */
  reset(): void {
    for (const s of this.listed) {
      s.buckets.fill(0);
      s.sum = 0;
      s.count = 0;
      s.listed = false;
    }
    this.listed.length = 0;
  }
}
